"""The one core: a received message in, a decision out.

Every way in (the poller, the Lambda adapter, the sync connection) calls `Runner.process` (or
`begin` and `finish` around its own call of `handle()`) and only applies what it returns
(sqsjobs.settling). Tries, backoff, retry_until, permanent errors, bad messages, long-delay hops
and "did this run at all" are decided here and nowhere else; features plug in as hooks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import exception_counts, policy
from ..connections.base import Connection, ReceivedMessage
from ..context import Services
from ..decisions import Ack, Decision, Defer, Fail, Postpone, Release
from ..errors import (
    BadMessageError,
    ConfigurationError,
    JobFailedError,
    JobTimeoutError,
    MaxAttemptsExceededError,
    PermanentError,
    RetryUntilPassedError,
)
from ..events import JobEvent
from ..job_class import Job, JobContext, set_context
from ..payloads import carried
from ..settling import SkipLedger
from ..timing import parse_iso, parse_iso_or
from . import entering
from .decoding import DecodeCache, build_job, decode_received, open_sealed
from .entering import Call
from .hook import Asking, Delivery, Hook, implementing
from .quiet import Loud, ended_quietly, quiet_about, refuse_if_quiet
from .triaging import after_triage, triage_rule

log = logging.getLogger("sqsjobs.runner")

#: Wraps one run of `handle()`; the poller uses it to enforce `timeout`.
Guard = Callable[[Job], contextlib.AbstractContextManager[None]]

#: How long to wait before trying again when a store, S3 or SQS error kept a message from starting or settling.
RETRY_DELAY_S = 30


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through object.__setattr__, per job
class Run:
    """A job that should run now, as `Runner.begin` hands it to whoever calls `handle()`."""

    job: Job
    message: ReceivedMessage
    connection: Connection
    delivery: Delivery


class Runner:
    """Decides what happens to one message. Stateless between messages; safe across threads."""

    def __init__(self, app: Services, hooks: Sequence[Hook] = (), skips: SkipLedger | None = None) -> None:
        self.app = app
        self.hooks = tuple(hooks)
        # Each point calls only the hooks that implement it: a base no-op per hook and point costs.
        self._on_received = implementing(self.hooks, "on_received")
        self._before_run = implementing(self.hooks, "before_run")
        self._on_start = implementing(self.hooks, "on_start")
        self._before_dlq = implementing(self.hooks, "before_dlq")
        self._on_decided = implementing(self.hooks, "on_decided")
        self._asking = Asking(self.hooks)
        self.skips = skips or SkipLedger(lambda: app.store)
        self._decoded = DecodeCache(lambda message: decode_received(message, app))

    # -- what ways in call --------------------------------------------------------------
    def process(
        self,
        message: ReceivedMessage,
        via: Connection | None = None,
        guard: Guard | None = None,
        call: Call | None = None,
    ) -> Decision:
        """Run the job a message carries (when it should run) and decide its fate.

        `via` is the connection the message came from (DLQ writes and delay hops go there);
        `guard` wraps `handle()` so a way in can enforce the job's timeout; `call` runs `handle()`
        itself (the process executor), inside the job's middleware.
        """
        step = self.begin(message, via)
        if not isinstance(step, Run):
            return step
        started = time.perf_counter()
        try:
            if guard is None:  # the Lambda adapter's: no null context entered and left per job
                entering.run_handle(step.job, call, True, step.delivery.context)
            else:
                with guard(step.job):
                    entering.run_handle(step.job, call, True, step.delivery.context)
        except Exception as exc:
            return self.finish(step, exc, time.perf_counter() - started)
        return self.finish(step, None, time.perf_counter() - started)

    @staticmethod
    def run_handle(job: Job, call: Call | None = None, traced: bool = True, context: JobContext | None = None) -> None:
        """`handle()` through the job's middleware, inside the run's span (sqsjobs.tracing); an `async def
        handle` runs on a private loop. `traced=False`: the caller holds the span. `context`: else `job._ctx`."""
        entering.run_handle(job, call, traced, context)

    def timeout_for(self, message: ReceivedMessage) -> float:
        """Seconds the message's job may run (0 for one that will not run); the decode is kept for `process`."""
        return self._decoded.timeout_for(message, self.app.registry, self.app.settings.timeout)

    def forget(self, message: ReceivedMessage) -> None:
        """Drop what `timeout_for` kept for a message that is handed back instead of processed."""
        self._decoded.forget(message)

    def begin(self, message: ReceivedMessage, via: Connection | None = None) -> Run | Decision:
        """Everything before `handle()`: a Run when the job should run now, else the decision. Never
        raises: a store or SQS error on the way (a claim, a lock, an "ended" mark) means "later"."""
        delivery = Delivery(message, via or self.app.connection)
        try:
            step = self._begin(delivery)
        except Exception as exc:
            log.exception("could not start message %s; it is tried again later", message.message_id)
            return Release(RETRY_DELAY_S, f"could not start: {type(exc).__name__}: {exc}"[:300])
        if isinstance(step, Run):
            return step
        return self._decided(delivery, step, None)

    def begin_quiet(self, message: ReceivedMessage, via: Connection | None = None) -> Run | None:
        """`begin` for a job to run now whose way there calls nothing (runner.quiet); None when it would:
        nothing was done, and `begin` does it all. The asyncio worker begins jobs on its loop with this."""
        if message.payload_error:
            return None
        delivery = Delivery(message, via or self.app.connection, quiet=True)
        try:
            step = self._begin(delivery)
        except Exception:  # `Loud`, or an error `begin` will meet again and report
            return None
        finally:
            delivery.quiet = False
        return step if isinstance(step, Run) else None

    def finish_quiet(self, run: Run, runtime: float) -> Decision | None:
        """`finish` for a quiet job that returned without releasing or failing itself: its Ack, decided
        without a call. None otherwise: nothing was done, and `finish` does it."""
        return self.finish(run, None, runtime) if ended_quietly(run.delivery) else None

    def finish(self, run: Run, error: Exception | None, runtime: float) -> Decision:
        """Everything after `handle()` returned (error None) or raised `error`. Never raises."""
        try:
            decision = self._judge(run.delivery, error, runtime)
        except Exception as exc:
            log.exception("could not settle message %s; it is tried again later", run.message.message_id)
            decision, error = Release(RETRY_DELAY_S, f"could not settle: {type(exc).__name__}: {exc}"[:300]), exc
        return self._decided(run.delivery, decision, error)

    # -- before the run -----------------------------------------------------------------
    def _begin(self, d: Delivery) -> Run | Decision:
        message, now = d.message, self.app.clock()
        early = policy.not_before(message.attributes, now)
        if early > 0:
            return Postpone(math.ceil(early), "not due yet")
        if message.payload_retry and message.receive_count < self.app.settings.tries:
            log.warning("%s; message %s is tried again later", message.payload_error, message.message_id)
            return Release(RETRY_DELAY_S, message.payload_error)
        if message.payload_error:  # for good, or a passing fault that did not pass in SQSJOBS_TRIES tries
            return self._reject(d, BadMessageError(message.payload_reason, message.payload_error))
        decoded = self._decoded.get(message)
        if isinstance(decoded, BadMessageError):
            return self._reject(d, decoded)
        d.envelope = decoded
        try:
            cls: type[Job] = self.app.registry.get(decoded.job)
        except BadMessageError as exc:
            return self._reject(d, exc)
        d.job_cls = cls
        d.hooked = self._asking.acts(d)
        if d.quiet and not quiet_about(d):
            raise Loud
        opened = open_sealed(decoded, message, self.app)  # an encrypted job's payload and links, in clear
        if isinstance(opened, Release | BadMessageError):
            return opened if isinstance(opened, Release) else self._reject(d, opened)
        d.envelope = decoded = opened
        d.timeout = policy.timeout(cls.timeout, None, self.app.settings.timeout)
        for hook in self._on_received if d.hooked else ():
            if (decided := hook.on_received(d)) is not None:
                return decided

        if decoded.available_at is not None:
            remaining = parse_iso(decoded.available_at) - now
            if remaining > 0:  # never early, not even by a second: a last short hop is cheaper than a broken promise
                return self._defer(d, remaining)

        job = build_job(cls, decoded, self.app.clock)
        if isinstance(job, BadMessageError):
            return self._reject(d, job)
        d.job = job
        d.attempts = policy.attempt(message.receive_count, message.attributes, self.skips.count(message))
        d.context = ctx = JobContext(decoded.id, d.attempts, message.queue, decoded, app=self.app)
        set_context(job, ctx)
        for hook in self._before_run if d.hooked else ():
            if (decided := hook.before_run(d)) is not None:
                return decided

        tries = policy.tries(cls.tries, self.app.settings.tries)
        if d.attempts > tries:
            exhausted = MaxAttemptsExceededError(
                f"{cls.job_name} has run {d.attempts - 1} times and allows {tries} tries; "
                "the last run never decided (crash, kill or timeout), so it is not run again"
            )
            return self._fail(d, exhausted, "tries_exhausted", 0.0)
        if decoded.retry_until is not None and parse_iso(decoded.retry_until) < now:
            expired = RetryUntilPassedError(f"{cls.job_name} passed its retry_until ({decoded.retry_until})")
            return self._fail(d, expired, "retry_until", 0.0)
        for hook in self._on_start if d.hooked else ():
            if (decided := hook.on_start(d)) is not None:
                return decided
        ctx.wait_s = max(0.0, now - parse_iso_or(decoded.available_at or decoded.dispatched_at, now))
        if (events := self.app.events).wants("processing"):  # not through _emit: one call less per job
            events.emit(d.event("processing"))
        return Run(job, message, d.connection, d)

    # -- after the run ------------------------------------------------------------------
    def _judge(self, d: Delivery, error: Exception | None, runtime: float) -> Decision:
        job, context = d.job, d.context
        assert job is not None and context is not None
        d.ran = context.handled
        if error is not None:
            return self._after_exception(d, error, runtime)
        if context.fail_reason is not None:
            return self._fail(d, JobFailedError(context.fail_reason), "failed_by_job", runtime, raised=True)
        if context.released:
            if not d.ran:  # a middleware held it back (a rate limit, an overlap lock): no try spent
                # Never "visible again now": a lock still held would turn that into a hot loop of copies.
                given = context.release_delay
                delay = max(1, given if given is not None else job.backoff_for(d.attempts))
                self._note(d, "released", runtime_s=runtime, delay=delay)
                return Postpone(delay, "held back before it ran")
            delay = context.release_delay if context.release_delay is not None else job.backoff_for(d.attempts)
            self._note(d, "released", runtime_s=runtime, delay=delay)
            return Release(delay, "released by the job")
        self._note(d, "processed", runtime_s=runtime)
        return Ack()

    def _after_exception(self, d: Delivery, exc: Exception, runtime: float) -> Decision:
        job, cls = d.job, d.job_cls
        assert job is not None and cls is not None
        now = self.app.clock()
        envelope = d.envelope
        if isinstance(exc, PermanentError) or (cls.fail_on and isinstance(exc, cls.fail_on)):
            kind = "permanent"
        elif isinstance(exc, JobTimeoutError) and cls.fail_on_timeout:
            kind = "timeout"
        elif d.attempts >= policy.tries(cls.tries, self.app.settings.tries):
            kind = "tries_exhausted"
        elif cls.max_exceptions is not None and exception_counts.count(self.app.store, job.job_id or "") >= (
            cls.max_exceptions
        ):
            kind = "max_exceptions"
        elif envelope is not None and envelope.retry_until and parse_iso(envelope.retry_until) < now:
            kind = "retry_until"
        else:
            delay = job.backoff_for(d.attempts)
            self._note(d, "released", runtime_s=runtime, error=exc, delay=delay)
            return Release(delay, f"{type(exc).__name__}: {exc}")
        # The process executor's own ConfigurationError (its processes cannot run the job) is sqsjobs', not the job's.
        return self._fail(d, exc, kind, runtime, raised=not isinstance(exc, ConfigurationError))

    # -- the paths out ------------------------------------------------------------------
    def _fail(self, d: Delivery, exc: BaseException, kind: str, runtime: float, raised: bool = False) -> Decision:
        """To the DLQ with its reason (unless triage discards it); `failed()` runs once the copy is written.
        `raised`: the job's code raised `exc` (triage rules match it by type, not only by reason)."""
        refuse_if_quiet(d)
        rule = triage_rule(self.app, d, kind, exc, raised)
        if (rule is None or rule.action != "discard") and (held := self._write_dlq(d, exc, kind)) is not None:
            return held
        d.call_failed(exc)
        self._note(d, "failed", runtime_s=runtime, error=exc)
        return Fail(after_triage(self.app, d, rule, kind, exc), type(exc).__name__, exc)

    def _reject(self, d: Delivery, exc: BadMessageError) -> Decision:
        """A message that cannot become a job: to the DLQ with its reason, never run, never retried
        (unless a triage rule discards that reason)."""
        refuse_if_quiet(d)
        rule = triage_rule(self.app, d, exc.kind, exc)
        if (rule is None or rule.action != "discard") and (held := self._write_dlq(d, exc, exc.kind)) is not None:
            return held
        envelope, message = d.envelope, d.message
        self.app.events.emit(
            JobEvent(
                "rejected",
                envelope.id if envelope else message.message_id,
                self.app.registry.known_name(envelope.job) if envelope else "unknown",
                message.queue,
                message.receive_count,
                error_type=exc.kind,
                error=str(exc),
            )
        )
        return Fail(after_triage(self.app, d, rule, exc.kind, exc), type(exc).__name__, exc)

    def _write_dlq(self, d: Delivery, exc: BaseException, kind: str) -> Release | None:
        for hook in self._before_dlq if d.hooked else ():
            if (held := hook.before_dlq(d, kind, exc)) is not None:
                return held
        if not d.write_dlq(kind, exc, self.app.clock(), self.app.signing_key):
            return Release(RETRY_DELAY_S, "the DLQ could not be written")
        return None

    def _defer(self, d: Delivery, remaining: float) -> Decision:
        """The next hop of a long delay: re-send the same body, then the source is deleted."""
        refuse_if_quiet(d)
        message, envelope = d.message, d.envelope
        assert envelope is not None
        hop = min(math.ceil(remaining), self.app.settings.max_delay_hop)
        try:
            again = carried(message)
            again.delay_seconds = hop
            d.connection.send(message.queue, again)
        except Exception:
            log.exception("could not re-send the next delay hop of %s; keeping the message", envelope.id)
            return Postpone(hop, "delay hop could not be sent")  # it has not run: no try spent
        self.app.events.emit(
            JobEvent("deferred", envelope.id, envelope.job, message.queue, message.receive_count, delay=hop)
        )
        return Defer(hop)

    def give_up(
        self, message: ReceivedMessage, kind: str, error: BaseException, via: Connection | None = None
    ) -> Decision:
        """A job this way in can never run (its timeout does not fit the Lambda function): to the DLQ with
        `kind` and `failed()` once, rather than handed back for free again and again. Never raises."""
        d = Delivery(message, via or self.app.connection)
        try:
            decoded = self._decoded.get(message)
            if isinstance(decoded, BadMessageError):
                return self._decided(d, self._reject(d, decoded), None)
            d.envelope, d.job_cls = decoded, self.app.registry.get(decoded.job)
            if isinstance(opened := open_sealed(decoded, message, self.app), Release | BadMessageError):
                return opened if isinstance(opened, Release) else self._decided(d, self._reject(d, opened), None)
            d.envelope = opened
            job = build_job(d.job_cls, opened, self.app.clock)
            if isinstance(job, BadMessageError):
                return self._decided(d, self._reject(d, job), None)
            d.job, d.attempts = job, policy.attempt(message.receive_count, message.attributes)
            job._ctx = d.context = JobContext(decoded.id, d.attempts, message.queue, opened, app=self.app)
            return self._decided(d, self._fail(d, error, kind, 0.0), None)
        except Exception as exc:
            log.exception("could not give up message %s; it is tried again later", message.message_id)
            return Release(RETRY_DELAY_S, f"could not give up: {type(exc).__name__}: {exc}"[:300])

    def _decided(self, d: Delivery, decision: Decision, error: BaseException | None) -> Decision:
        """Let every hook free or record what it took; the first Release one asks for keeps the message.

        The job's event (processed, released, failed) is emitted only for the decision that stands, so
        a message kept for its bookkeeping is counted once, by the delivery that finishes it.
        """
        if isinstance(decision, Postpone) and d.message.group_id is not None and d.job_cls is not None:
            # On FIFO a postponement keeps its place and so still counts toward the redrive policy: the
            # receive before SQS would move it without a reason, give it up here with one.
            limit = max(self.app.settings.max_receive_count, policy.tries(d.job_cls.tries, self.app.settings.tries) + 1)
            if d.message.receive_count >= limit:
                held_back = MaxAttemptsExceededError(
                    f"{d.job_cls.job_name} was held back {d.message.receive_count} times on a FIFO queue "
                    f"({decision.reason}) and its redrive policy allows {limit} receives; raise "
                    "SQSJOBS_MAX_RECEIVE_COUNT (maxReceiveCount) for queues whose jobs wait this long"
                )
                decision = self._fail(d, held_back, "held_back", 0.0)
        final = decision
        for hook in self._on_decided if d.hooked else ():
            try:
                held = hook.on_decided(d, decision, error)
            except Exception as exc:
                log.exception(
                    "%s could not settle message %s; it is tried again later", hook.name, d.message.message_id
                )
                held = Release(RETRY_DELAY_S, f"could not settle: {type(exc).__name__}: {exc}"[:300])
            if held is not None and final is decision:
                final = held
        if final is decision:
            noted = d.notes.get("event")
            if noted is not None:
                self._emit(noted[0], d, **noted[1])
            elif isinstance(decision, Ack) and d.job is not None:
                self._emit("processed", d)  # a duplicate whose effect was done before
        return final

    @staticmethod
    def _note(d: Delivery, kind: str, **fields: object) -> None:
        d.notes["event"] = (kind, fields)

    def _emit(self, kind: str, d: Delivery, **fields: Any) -> None:
        events = self.app.events
        if events.wants(kind):  # an event nobody takes is never built
            events.emit(d.event(kind, **fields))

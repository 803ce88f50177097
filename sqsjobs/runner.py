"""The one core: a received message in, a decision out.

Every way in (the poller, the Lambda adapter, the sync connection) calls
`Runner.process` and only applies what it returns. Tries, backoff, retry_until,
permanent errors, bad messages and long-delay hops are decided here and nowhere
else (design §3 and §7); `sqsjobs.outcomes` writes what a decision leaves behind
(the DLQ copy, chain and batch bookkeeping) before the message is deleted.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from . import coordination, workflow
from .connections.base import Connection, ReceivedMessage
from .decisions import Ack, Decision, Defer, Fail, Release
from .envelope import Envelope, decode
from .errors import (
    BadMessageError,
    JobFailedError,
    JobTimeoutError,
    MaxAttemptsExceededError,
    PermanentError,
    RetryUntilPassedError,
)
from .events import JobEvent
from .job import Job, JobContext
from .middleware import run_through
from .outcomes import Outcomes
from .payloads import carried
from .timing import parse_iso

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("sqsjobs.runner")

#: Wraps one run of `handle()`; the poller uses it to enforce `timeout`.
Guard = Callable[[Job], contextlib.AbstractContextManager[None]]

#: How long to wait before trying again when a store or S3 error kept a message from starting or settling.
_RETRY_DELAY_S = 30


@dataclass(frozen=True, slots=True)
class Run:
    """A job that should run now, as `Runner.begin` hands it to whoever calls `handle()`."""

    job: Job
    message: ReceivedMessage
    connection: Connection


class Runner:
    """Decides what happens to one message. Stateless between messages; safe across threads."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.outcomes = Outcomes(app)

    def process(self, message: ReceivedMessage, via: Connection | None = None, guard: Guard | None = None) -> Decision:
        """Run the job a message carries (when it should run) and decide its fate.

        `via` is the connection the message came from (DLQ writes and delay hops go
        there); `guard` wraps `handle()` so a way in can enforce the job's timeout.
        """
        step = self.begin(message, via)
        if not isinstance(step, Run):
            return step
        started = time.perf_counter()
        try:
            with guard(step.job) if guard is not None else contextlib.nullcontext():
                self.run_handle(step.job)
        except Exception as exc:
            return self.finish(step, exc, time.perf_counter() - started)
        return self.finish(step, None, time.perf_counter() - started)

    @staticmethod
    def run_handle(job: Job) -> None:
        """`handle()` through the job's middleware; an `async def handle` runs on a private loop."""

        def innermost() -> None:
            result = job.handle()
            if inspect.isawaitable(result):
                import asyncio  # only async jobs pay for it (Lambda cold starts)

                asyncio.run(_await(result))

        middleware = job.middleware()
        if middleware:
            run_through(middleware, job, innermost)
        else:
            innermost()

    def timeout_for(self, message: ReceivedMessage) -> float:
        """Seconds the message's job may run; 0 for a message that will not run at all."""
        try:
            envelope = decode(message.body, self.app.signing_key)
            cls = self.app.registry.get(envelope.job)
        except BadMessageError:
            return 0.0
        return float(cls.timeout or self.app.settings.timeout)

    def begin(self, message: ReceivedMessage, via: Connection | None = None) -> Run | Decision:
        """Everything before `handle()`: a Run when the job should run now, else the decision.

        Split from `finish` so a way in that runs `handle()` itself (the asyncio worker,
        awaiting it on its loop) still leaves every judgement to the core. Never raises: a
        store or SQS error on the way (a claim, a lock, an "ended" mark) means "later".
        """
        try:
            return self._begin(message, via or self.app.connection)
        except Exception as exc:
            log.exception("could not start message %s; it is tried again later", message.message_id)
            return Release(_RETRY_DELAY_S, f"could not start: {type(exc).__name__}: {exc}"[:300])

    def _begin(self, message: ReceivedMessage, connection: Connection) -> Run | Decision:
        now = self.app.clock()
        envelope: Envelope | None = None
        if message.payload_retry and message.receive_count < self.app.settings.tries:
            log.warning("%s; message %s is tried again later", message.payload_error, message.message_id)
            return Release(_RETRY_DELAY_S, message.payload_error)
        if message.payload_error:  # for good, or a passing fault that did not pass in SQSJOBS_TRIES tries
            missing = BadMessageError(message.payload_reason, message.payload_error)
            return self._reject(message, connection, missing, None, now)
        try:
            envelope = decode(message.body, self.app.signing_key)
            cls = self.app.registry.get(envelope.job)
        except BadMessageError as exc:
            return self._reject(message, connection, exc, envelope, now)

        involved = workflow.involved(envelope)
        if involved:
            # Read on every delivery: a copy of the message (an SQS duplicate, a send retried after its
            # answer was lost, a dispatch-once takeover) arrives with receive count 1 too.
            decided = coordination.ended(self.app, envelope)
            if decided is not None:
                return self.outcomes.settle_again(message, connection, envelope, decided)

        if envelope.available_at is not None:
            remaining = parse_iso(envelope.available_at) - now
            # Never early, not even by a second: a last short hop is cheaper than a broken promise.
            if remaining > 0:
                return self._defer(message, connection, envelope, remaining)

        try:
            job = cls.model_validate(envelope.payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))[:80] or '(payload)'}: {e['msg'][:120]}" for e in exc.errors()[:5]
            )
            bad = BadMessageError("invalid_payload", f"payload does not fit {cls.job_name}: {problems}")
            return self._reject(message, connection, bad, envelope, now)
        except Exception as exc:  # a validator of the job's own that raised something else
            bad = BadMessageError("invalid_payload", f"payload does not fit {cls.job_name}: {type(exc).__name__}")
            return self._reject(message, connection, bad, envelope, now)

        if involved:
            held = self.outcomes.hold_copy(message, envelope, self._timeout(cls))
            if held is not None:
                return held
        attempts = message.receive_count
        tries = cls.tries or self.app.settings.tries
        job._ctx = JobContext(envelope.id, attempts, message.queue, envelope, app=self.app)
        if attempts > tries:
            exhausted = MaxAttemptsExceededError(
                f"{cls.job_name} was received {attempts} times but allows {tries} tries; "
                "the last run never decided (crash, kill or timeout), so it is not run again"
            )
            return self._fail(message, connection, job, exhausted, "tries_exhausted", now, 0.0)
        if envelope.retry_until is not None and parse_iso(envelope.retry_until) < now:
            expired = RetryUntilPassedError(f"{cls.job_name} passed its retry_until ({envelope.retry_until})")
            return self._fail(message, connection, job, expired, "retry_until", now, 0.0)

        key = job.idempotency_key()
        if key is not None:
            job._ctx.idempotency = (key, f"{envelope.id}:{attempts}")
            state = coordination.claim(self.app, job, key, job._ctx.idempotency[1], self._timeout(cls))
            if state == "done":
                # The earlier run completed, so its chain/batch work was done; the marks make
                # doing it again harmless, and it finishes what a crash may have cut short.
                coordination.release_unique(self.app, envelope)
                held = self.outcomes.succeeded(message, connection, envelope)
                if held is not None:
                    return held
                self._emit("processed", job, message)
                return Ack("duplicate")
            if state == "busy":
                # The same effect is being produced right now; look again once that run is over.
                job._ctx.idempotency = None
                return Release(min(60, math.ceil(self._timeout(cls))), "idempotency key in progress")
        if cls.unique_until_processing:
            coordination.release_unique(self.app, envelope)

        start_ref = envelope.available_at or envelope.dispatched_at
        job._ctx.wait_s = max(0.0, now - _ts(start_ref, now))
        self._emit("processing", job, message)
        return Run(job, message, connection)

    def _timeout(self, cls: type[Job]) -> float:
        return float(cls.timeout or self.app.settings.timeout)

    def finish(self, run: Run, error: Exception | None, runtime: float) -> Decision:
        """Everything after `handle()` returned (error None) or raised `error`. Never raises."""
        try:
            return self._finish(run, error, runtime)
        except Exception as exc:
            log.exception("could not settle message %s; it is tried again later", run.message.message_id)
            return Release(_RETRY_DELAY_S, f"could not settle: {type(exc).__name__}: {exc}"[:300])

    def _finish(self, run: Run, error: Exception | None, runtime: float) -> Decision:
        job, message, connection = run.job, run.message, run.connection
        context = job._ctx
        assert context is not None
        if error is not None or context.fail_reason is not None or context.released:
            self._abandon_idempotency(job)
        if error is not None:
            return self._after_exception(message, connection, job, error, runtime)
        if context.fail_reason is not None:
            failed = JobFailedError(context.fail_reason)
            return self._fail(message, connection, job, failed, "failed_by_job", self.app.clock(), runtime)
        if context.released:
            delay = context.release_delay if context.release_delay is not None else job.backoff_for(context.attempts)
            self._emit("released", job, message, runtime_s=runtime, delay=delay)
            return Release(delay, "released by the job")
        # The effect is done: its idempotency key completes whatever the bookkeeping does next
        # (a redelivery then takes the "done" path). The lock goes before the bookkeeping, since
        # the next link of a chain may be an equal unique job.
        if context.idempotency is not None:
            try:
                coordination.complete(self.app, job, context.idempotency[0])
            except Exception:
                # The effect happened: retrying the job would repeat it. Its key stays "in progress"
                # until it expires, so a duplicate arriving meanwhile waits rather than runs.
                log.exception(
                    "%s (%s) succeeded but its idempotency key could not be completed", cls_name(job), job.job_id
                )
        coordination.release_unique(self.app, context.envelope)
        held = self.outcomes.succeeded(message, connection, context.envelope)
        if held is not None:
            return held
        self._emit("processed", job, message, runtime_s=runtime)
        return Ack()

    def _abandon_idempotency(self, job: Job) -> None:
        context = job._ctx
        if context is not None and context.idempotency is not None:
            try:
                coordination.abandon(self.app, job, *context.idempotency)
            except Exception:
                log.exception("could not free the idempotency key of %s; it frees itself when it expires", job.job_id)
            context.idempotency = None

    # -- the paths out -----------------------------------------------------------------
    def _after_exception(
        self, message: ReceivedMessage, connection: Connection, job: Job, exc: Exception, runtime: float
    ) -> Decision:
        cls = type(job)
        attempts = message.receive_count
        now = self.app.clock()
        if isinstance(exc, PermanentError) or (cls.fail_on and isinstance(exc, cls.fail_on)):
            kind = "permanent"
        elif isinstance(exc, JobTimeoutError) and cls.fail_on_timeout:
            kind = "timeout"
        elif attempts >= (cls.tries or self.app.settings.tries):
            kind = "tries_exhausted"
        elif cls.max_exceptions is not None and coordination.count_exception(self.app, job) >= cls.max_exceptions:
            kind = "max_exceptions"
        elif (
            job._ctx
            and job._ctx.envelope
            and job._ctx.envelope.retry_until
            and (parse_iso(job._ctx.envelope.retry_until) < now)
        ):
            kind = "retry_until"
        else:
            delay = job.backoff_for(attempts)
            self._emit("released", job, message, runtime_s=runtime, error=exc, delay=delay)
            return Release(delay, f"{type(exc).__name__}: {exc}")
        return self._fail(message, connection, job, exc, kind, now, runtime)

    def _fail(
        self,
        message: ReceivedMessage,
        connection: Connection,
        job: Job,
        exc: BaseException,
        kind: str,
        now: float,
        runtime: float,
    ) -> Decision:
        cls = type(job)
        envelope = job._ctx.envelope if job._ctx else None
        held = self.outcomes.to_dlq(message, connection, envelope, exc, kind, now, cls.job_name, job.job_id or "")
        if held is not None:
            return held
        try:
            job.failed(exc)
        except Exception:
            log.exception("%s.failed() raised; the job is in the DLQ regardless", cls.__name__)
        self._emit("failed", job, message, runtime_s=runtime, error=exc)
        return Fail(kind, type(exc).__name__, exc)

    def _reject(
        self,
        message: ReceivedMessage,
        connection: Connection,
        exc: BadMessageError,
        envelope: Envelope | None,
        now: float,
    ) -> Decision:
        """A message that cannot become a job: to the DLQ with its reason, never run, never retried."""
        job_name, job_id = (envelope.job, envelope.id) if envelope else ("", "")
        held = self.outcomes.to_dlq(message, connection, envelope, exc, exc.kind, now, job_name, job_id)
        if held is not None:
            return held
        self.app.events.emit(
            JobEvent(
                "rejected",
                job_id or message.message_id,
                job_name or "?",
                message.queue,
                message.receive_count,
                error_type=exc.kind,
                error=str(exc),
            )
        )
        return Fail(exc.kind, type(exc).__name__, exc)

    def _defer(
        self, message: ReceivedMessage, connection: Connection, envelope: Envelope, remaining: float
    ) -> Decision:
        """The next hop of a long delay: re-send the same body, then the source is deleted."""
        hop = min(math.ceil(remaining), self.app.settings.max_delay_hop)
        try:
            again = carried(message)
            again.delay_seconds = hop
            connection.send(message.queue, again)
        except Exception:
            log.exception("could not re-send the next delay hop of %s; keeping the message", envelope.id)
            # Keeping it invisible for the same time is an equally good delay; only the
            # receive count pays for it.
            return Release(hop, "delay hop could not be sent")
        self.app.events.emit(
            JobEvent("deferred", envelope.id, envelope.job, message.queue, message.receive_count, delay=hop)
        )
        return Defer(hop)

    def _emit(
        self,
        kind: str,
        job: Job,
        message: ReceivedMessage,
        *,
        runtime_s: float = 0.0,
        error: BaseException | None = None,
        delay: int = 0,
    ) -> None:
        ctx = job._ctx
        self.app.events.emit(
            JobEvent(
                kind,
                ctx.job_id if ctx else "",
                type(job).job_name,
                message.queue,
                message.receive_count,
                dispatched_at=ctx.envelope.dispatched_at if ctx and ctx.envelope else "",
                wait_s=ctx.wait_s if ctx else 0.0,
                runtime_s=runtime_s,
                error_type=type(error).__name__ if error else "",
                error=str(error) if error else "",
                delay=delay,
            )
        )


def cls_name(job: Job) -> str:
    return type(job).job_name


async def _await(awaitable: object) -> None:
    await awaitable  # type: ignore[misc]


def _ts(text: str, default: float) -> float:
    try:
        return parse_iso(text)
    except ValueError:
        return default

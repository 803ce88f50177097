"""`run_job`: run one job's `handle()` in a test, through the real core, and assert what it asked for.

    result = run_job(ChargeCard(order_id=1), attempt=3)
    result.assert_failed(with_=CardDeclined)
    result.dispatched.assert_dispatched(NotifyCustomer)

Laravel's `withFakeQueueInteractions()` intercepts `release()` and `fail()`; here nothing is
intercepted. The job goes through the same `Runner.begin` / `finish` a worker uses, as a delivery with
the given attempt, so tries, backoff, `fail_on`, `PermanentError`, `release()`, `fail()`, `failed()`,
middleware and the hooks (idempotency keys, unique locks) decide as they would on a queue. There is no
queue: the run happens under `fake()`, so what the job dispatches is recorded (`result.dispatched`),
and the runner's DLQ copy goes nowhere. The instance that runs is the one the runner validates from
the message's payload, as a worker's is: a field excluded from the payload, a serializer's output or
a value that does not survive JSON is seen in `handle()` as a worker would see it, so a test cannot
pass on state production never has. Only the test's private attributes (`PrivateAttr`: a fake client,
a list to record into) are carried over to it, so `handle()` and `failed()` see them.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .. import policy
from ..connections.base import Connection, ReceivedMessage
from ..decisions import Decision, Fail, Postpone, Release
from ..dispatch_plan import build_message
from ..envelope import decode
from ..errors import BadMessageError, ConfigurationError
from ..runner import Runner
from ..runner.core import Run
from .fake import FakeDispatches, fake
from .fake_records import short_payload
from .outcomes import (
    ErrorMatcher,
    Outcome,
    describe,
    error_of,
    expected_error,
    matches,
    outcome_of,
    seconds_of,
    traceback_text,
)

if TYPE_CHECKING:
    from ..job_class import Job
    from ..stores.base import Store

__all__ = ["Executed", "JobRun", "execute", "run_job"]


@dataclass(frozen=True, slots=True)
class Executed:
    """One delivery through the runner: its decision, whether `handle()` was entered, what it raised."""

    decision: Decision
    ran: bool
    error: Exception | None
    #: The job that ran (None when the runner decided before building or running one).
    job: Job | None


def execute(
    runner: Runner, message: ReceivedMessage, via: Connection, job: Job | None = None, middleware: bool = True
) -> Executed:
    """`Runner.process`, keeping what a test needs to see: the runner's `begin`, `handle()` (through the
    job's middleware unless `middleware` is False), the runner's `finish`.

    `job`: the test's instance the message was built from. The runner's own instance (validated from
    the payload, as on a worker) still runs; `job`'s private attributes are carried over to it, and
    `job` gets the delivery's context so `job.attempts` reads the attempt afterwards.
    """
    if _loop_running():
        _refuse_async(runner, message)
    step = runner.begin(message, via)
    if not isinstance(step, Run):
        return Executed(step, False, None, None)
    running = step.delivery.job or step.job
    if job is not None:
        _carry_private(job, running)
        job._ctx = running._ctx
    error: Exception | None = None
    started = time.perf_counter()
    try:
        if middleware:
            Runner.run_handle(running)
        else:
            _handle_only(running)
    except Exception as exc:
        error = exc
    decision = runner.finish(step, error, time.perf_counter() - started)
    return Executed(decision, step.delivery.ran, error, running)


def _carry_private(source: Job, target: Job) -> None:
    """Give the instance that runs the test's private attributes (shared, not copied: a fake client
    stays the test's object). The delivery's context is not one of them (`Job._ctx` is a slot)."""
    private = source.__pydantic_private__
    if private:
        object.__setattr__(target, "__pydantic_private__", {**(target.__pydantic_private__ or {}), **private})


def _handle_only(job: Job) -> None:
    """`handle()` with no middleware around it (what `middleware=False` asks for)."""
    if job._ctx is not None:
        job._ctx.handled = True
    result = job.handle()
    if inspect.isawaitable(result):
        asyncio.run(_await(result))


async def _await(awaitable: Any) -> None:
    await awaitable


def _refuse_async(runner: Runner, message: ReceivedMessage) -> None:
    """Inside a running event loop an `async def handle` cannot get a loop of its own: say so before
    anything is decided, rather than let `asyncio.run`'s refusal pass for the job's own failure."""
    try:
        cls = runner.app.registry.get(decode(message.body).job)
    except BadMessageError:
        return  # the runner rejects it as usual
    if inspect.iscoroutinefunction(cls.handle):
        raise ConfigurationError(
            f"{cls.__name__}.handle is async and this test runs inside an event loop, where the job's own "
            "loop cannot start; call run_job / run_until_empty from a synchronous test function"
        )


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_job(job: Job, *, attempt: int = 1, middleware: bool = True, store: Store | None = None) -> JobRun:
    """Run `job` once, as delivery number `attempt`, through the real runner; returns what came of it.

    Parameters:
        attempt: which attempt this is (1 = the first run; `job.attempts` inside `handle()`). An attempt
            past the job's `tries` is given up without running, as on a queue.
        middleware: run `handle()` through the job's `middleware()` (default). False calls `handle()`
            alone, for a test of the job's own logic whose middleware needs state the test lacks.
        store: coordination state (rate-limit windows, idempotency keys, steps) to share with other
            runs; by default each run has a fresh memory store.

    What the job dispatches is recorded, not sent (`JobRun.dispatched`, a `fake()`'s record). The
    job's exception never propagates: it is the outcome (`assert_retried`, `assert_failed`), and a
    failed assertion prints its traceback. No timeout interrupts `handle()` here.
    """
    if attempt < 1:
        raise ValueError(f"run_job(attempt=...) counts from 1 (the first run), got {attempt}")
    with fake() as dispatched:
        app = dispatched.app
        if store is not None:
            app.store = store
        queue, envelope, message = build_message(app, job, inline=True)
        now = app.clock()
        received = ReceivedMessage(
            queue,
            envelope.id,
            f"run-job-{attempt}",
            message.body,
            attempt,  # a redelivery of the same message: attempts are runs (sqsjobs.policy.attempt)
            now,
            {k: str(v) for k, v in message.attributes.items()},
            now,
            group_id=message.group_id,
        )
        executed = execute(app.runner, received, app.connection, job, middleware)
        tries = policy.tries(type(job).tries, app.settings.tries)
    return JobRun(executed.job or job, attempt, tries, executed.decision, executed.ran, executed.error, dispatched)


@dataclass(frozen=True)
class JobRun:
    """What one `run_job` came to, with assertions that print what happened instead."""

    #: The instance that ran (validated from the payload, carrying the test's private attributes);
    #: the test's own when the runner decided before building one.
    job: Job
    attempt: int
    #: The tries the job has (its own `tries`, else SQSJOBS_TRIES).
    tries: int
    #: The runner's decision (sqsjobs.decisions): what a worker would do with the message.
    decision: Decision
    #: Whether `handle()` was entered (a middleware or a hook may decide before it).
    ran: bool
    #: What `handle()` (or its middleware) raised; None when it returned.
    exception: Exception | None
    #: What the job dispatched (a `fake()` record: `assert_dispatched`, `assert_chained`, ...).
    dispatched: FakeDispatches

    @property
    def outcome(self) -> Outcome:
        """`completed`, `skipped`, `released`, `retried`, `held_back` or `failed`."""
        return outcome_of(self.decision, self.ran, self.exception)

    @property
    def delay(self) -> int | None:
        """Seconds until the message comes back (released, retried, held back); None otherwise."""
        return self.decision.delay if isinstance(self.decision, Release | Postpone) else None

    @property
    def error(self) -> BaseException | None:
        """What `handle()` raised, or why the runner gave the job up (a `fail()` reason, tries used up)."""
        return error_of(self.decision, self.exception)

    @property
    def what_happened(self) -> str:
        """The outcome as a phrase ("raised ValueError: boom on attempt 1 of 3; tried again in 10 s")."""
        return describe(self.decision, self.ran, self.exception, self.attempt, self.tries)

    def __str__(self) -> str:
        return f"{type(self.job).__name__} {short_payload(self.job.model_dump(mode='json'))} {self.what_happened}"

    # -- assertions -----------------------------------------------------------------------------
    def assert_completed(self) -> None:
        """`handle()` ran and returned, and the message is deleted (Laravel's "not released, not failed")."""
        __tracebackhide__ = True
        if self.outcome != "completed":
            self._fail("to complete")

    def assert_released(self, delay: float | timedelta | None = None) -> None:
        """The job called `self.release(...)` (after `delay` seconds, when given). An exception that
        will be retried is `assert_retried`, so a crash never passes for a deliberate release."""
        __tracebackhide__ = True
        self._expect_delay("released", "to be released", delay)

    def assert_retried(self, with_: ErrorMatcher | None = None, delay: float | timedelta | None = None) -> None:
        """`handle()` raised (an exception `with_` describes) and the job is tried again (after `delay`)."""
        __tracebackhide__ = True
        if self.outcome == "retried" and not matches(self.exception, with_):
            self._fail(f"to be retried{expected_error(with_)}")
        self._expect_delay("retried", f"to be retried{expected_error(with_)}", delay)

    def assert_failed(self, with_: ErrorMatcher | None = None) -> None:
        """The job was given up (its DLQ copy written, `failed()` called), for the reason `with_`
        describes: an exception type, an exception, the exact message, or a compiled pattern."""
        __tracebackhide__ = True
        wanted = f"to fail{expected_error(with_)}"
        if not isinstance(self.decision, Fail) or not matches(self.error, with_):
            self._fail(wanted)

    def assert_held_back(self, delay: float | timedelta | None = None) -> None:
        """A middleware (a rate limit, an overlap lock) or a hook put the job back before it ran: no
        try spent."""
        __tracebackhide__ = True
        self._expect_delay("held_back", "to be held back before it ran", delay)

    def assert_skipped(self) -> None:
        """The message was acknowledged without running (`Skip`, a duplicate idempotency key)."""
        __tracebackhide__ = True
        if self.outcome != "skipped":
            self._fail("to be skipped without running")

    def _expect_delay(self, outcome: str, wanted: str, delay: float | timedelta | None) -> None:
        __tracebackhide__ = True
        if delay is not None:
            wanted += f" with a delay of {seconds_of(delay)} s"
        if self.outcome != outcome or (delay is not None and self.delay != seconds_of(delay)):
            self._fail(wanted)

    def _fail(self, wanted: str) -> None:
        __tracebackhide__ = True
        lines = [f"expected {type(self.job).__name__} {wanted}", f"but it {self.what_happened}"]
        trace = traceback_text(self.error)
        if trace:
            lines += ["", trace]
        raise AssertionError("\n".join(lines))

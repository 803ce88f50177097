"""`run_until_empty`: run what a test dispatched, and everything that follows, through the real core.

    app = memory_app()                    # memory connection, memory store, a ManualClock
    with app.activate():
        checkout(order_id=1)              # dispatches a chain, a batch, ...
        drained = run_until_empty()
    drained.assert_completed(SendReceipt)
    drained.assert_nothing_failed()

It is a way in like the poller, on the test's thread: it receives one message at a time from the
memory connection (queues in priority order), runs it through the app's runner with its hooks (so
chains send their next link and `catch`, batches count and send `then`/`catch`/`finally`, unique
locks and idempotency keys work), applies the decision with the app's settler and deletes what
leaves its queue — the same calls a worker makes, minus threads, heartbeats and timeout interrupts.

When nothing is visible but something waits (a delay, a backoff, a rate-limited job held back),
the app's `ManualClock` is moved to the moment the first waiting message becomes visible — not a
second beyond, so a `retry_until` or a rate-limit window sees the time it would on a queue — and
the drain goes on. A long delay takes one hop, not one per 15 minutes: while it drains, the app's
`max_delay_hop` is lifted (the memory queue has no 15-minute limit), so a hop carries the whole
rest of the delay and a job delayed by a year runs after two fast-forwards, not 35,000.
`delays="report"` stops there instead and lists what waits. A run that goes on past `max_jobs`
deliveries (a job that dispatches or releases itself forever), or makes more than `max_jobs` hops,
stops with an AssertionError naming the jobs that ran most.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from .. import policy
from ..app import App, current_app
from ..connections.base import OutgoingMessage, ReceivedMessage
from ..connections.memory import MemoryConnection
from ..envelope import decode
from ..errors import BadMessageError, ConfigurationError
from ..settings import load_settings
from .clock import ManualClock
from .drain_summary import Drained, Record
from .job_run import execute
from .outcomes import outcome_of

__all__ = ["Drained", "ManualClock", "Record", "TrackedMemoryConnection", "memory_app", "run_until_empty"]

#: How far ahead `run_until_empty` looks for a waiting message. With hops of any length a delay may
#: hide a message for years (up to `datetime.max`); one hidden longer is not coming back by itself.
_HORIZON_S = 10_000 * 366 * 86_400
#: The longest hop while a drain runs: the memory connection takes any delay, so one hop is enough.
_DRAIN_HOP_S = 2**62
#: The fast-forward lands within this many seconds after the moment a message becomes visible.
_PRECISION_S = 0.001


class TrackedMemoryConnection(MemoryConnection):
    """The memory connection, knowing every queue it was sent to, so a drain misses none."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.queue_names: list[str] = []

    def send(self, queue: str, message: OutgoingMessage) -> str:
        if queue not in self.queue_names:
            self.queue_names.append(queue)
        return super().send(queue, message)


def memory_app(*, clock: ManualClock | None = None, **settings: Any) -> App:
    """An App for tests that drain: the memory connection (tracking its queues), the memory store and a
    `ManualClock` (`app.clock`). `settings`: Settings fields, as `App(**settings)` takes them."""
    clock = clock or ManualClock()
    loaded = load_settings(**{"store": "memory", **settings})
    connection = TrackedMemoryConnection(
        visibility_timeout=loaded.visibility_timeout, max_receive_count=loaded.max_receive_count, clock=clock
    )
    return App(loaded, connection=connection, clock=clock)


def run_until_empty(
    app: App | None = None,
    *,
    max_jobs: int = 1000,
    delays: Literal["run", "report"] = "run",
    queues: Sequence[str] | None = None,
) -> Drained:
    """Run every message on the app's memory queues, and what those jobs send, until none is left.

    Parameters:
        app: an App on the memory connection (default: the current app). `memory_app()` makes one.
        max_jobs: deliveries after which a drain that is not done raises AssertionError. The hops of
            long delays are counted apart, against the same bound: each delay takes at most one here,
            so only a runaway makes more.
        delays: `run` (default) moves the app's `ManualClock` to each waiting message in turn, so
            delayed and retried jobs run too; `report` stops when nothing is visible now and lists
            what waits in `Drained.waiting`.
        queues: the queues to drain, highest priority first. By default every queue a `memory_app()`
            was sent to; for another memory connection, the app's `queues`, its default queue and
            every registered job's queue.
    """
    app = app or current_app()
    connection = app.connection
    if not isinstance(connection, MemoryConnection):
        raise ConfigurationError(
            f"run_until_empty drains the memory connection and this app's is {connection.name!r}; "
            "build the app with sqsjobs.testing.drain.memory_app() (or App(connection='memory'))"
        )
    if delays not in ("run", "report"):
        raise ValueError(f"run_until_empty(delays=...) is 'run' or 'report', got {delays!r}")
    drained = Drained()
    counted = hops = 0
    # what the jobs dispatch goes to this app, as in a worker's threads
    with app.activate(), _one_hop_delays(app, delays == "run"):
        while True:
            names = _queue_names(app, connection, queues)
            message = _next_message(connection, names)
            if message is None:
                if delays == "run" and _fast_forward(app, connection, names):
                    continue
                break
            if counted >= max_jobs:
                raise AssertionError(drained.runaway(max_jobs))
            record = _run(app, connection, message)
            drained.records.append(record)
            deferred = record.outcome == "deferred"
            counted, hops = counted + (not deferred), hops + deferred
            if hops > max_jobs:
                raise AssertionError(drained.runaway(max_jobs, hops=True))
        drained.waiting = {name: size for name in names if (size := connection.size(name))}
        drained.dead_letters = {name: len(dead) for name in names if (dead := connection.dead_letters(name))}
    return drained


@contextmanager
def _one_hop_delays(app: App, lift: bool) -> Iterator[None]:
    """While the drain runs, a delay hop (and a dispatch's first send) may carry the whole delay: SQS
    caps one at 15 minutes, the memory queue does not, and hops of 15 minutes would make a delay of
    years hundreds of thousands of deliveries. What the job sees (when it runs) is unchanged."""
    if not lift:
        yield
        return
    settings = app.settings
    app.settings = settings.model_copy(update={"max_delay_hop": _DRAIN_HOP_S})
    try:
        yield
    finally:
        app.settings = settings


def _queue_names(app: App, connection: MemoryConnection, queues: Sequence[str] | None) -> list[str]:
    if queues is not None:
        return list(queues)
    if isinstance(connection, TrackedMemoryConnection):
        configured = [q for q in (*app.settings.queues, app.settings.default_queue) if q in connection.queue_names]
        return list(dict.fromkeys([*configured, *connection.queue_names]))
    known = [*app.settings.queues, app.settings.default_queue]
    known += sorted({cls.queue for cls in app.registry if cls.queue})
    return list(dict.fromkeys(known))


def _next_message(connection: MemoryConnection, names: list[str]) -> ReceivedMessage | None:
    """One message from the first queue (in priority order) that has one visible. One at a time, so a
    FIFO group's next message is never received while an earlier one could still come back."""
    for name in names:
        visibility = max(1, connection.queue_info(name).visibility_timeout)
        received = connection.receive(name, 1, 0, visibility_timeout=visibility)
        if received:
            return received[0]
    return None


def _run(app: App, connection: MemoryConnection, message: ReceivedMessage) -> Record:
    """One delivery, as a worker makes it: the runner decides, the settler applies, the source is deleted."""
    executed = execute(app.runner, message, connection)
    if app.settler.apply(message, executed.decision).delete:
        connection.delete(message.queue, [message])
    name, job_id = _names(app, message)
    return Record(
        job_name=name,
        job_id=job_id,
        queue=message.queue,
        attempt=policy.attempt(message.receive_count, message.attributes),
        outcome=outcome_of(executed.decision, executed.ran, executed.error),
        decision=executed.decision,
        ran=executed.ran,
        exception=executed.error,
        job=executed.job,
        at=app.clock(),
        tries=policy.tries(type(executed.job).tries, app.settings.tries) if executed.job is not None else None,
    )


def _names(app: App, message: ReceivedMessage) -> tuple[str, str]:
    """The job name and id a message carries (an unreadable one is named by its message id)."""
    try:
        envelope = decode(message.body)
    except BadMessageError:
        return "unknown", message.message_id
    return app.registry.known_name(envelope.job), envelope.id


def _fast_forward(app: App, connection: MemoryConnection, names: list[str]) -> bool:
    """Move the clock to the moment the first hidden message becomes visible; False when none is hidden.

    Hidden, not merely "not received": on a FIFO queue the messages behind a released one are visible
    yet blocked until it comes back, so the moment that matters is when the hidden count drops.
    """
    hidden = _hidden(connection, names)
    if hidden == 0:
        return False  # nothing will become visible by waiting: what is left (if anything) stays
    clock = app.clock
    if not isinstance(clock, ManualClock):
        waiting = {name: size for name in names if (size := connection.size(name))}
        raise ConfigurationError(
            f"run_until_empty: messages wait on {waiting} (delays, backoffs, held-back jobs) and the app's "
            "clock cannot be moved to them; build the app with sqsjobs.testing.drain.memory_app() or "
            "App(connection='memory', clock=ManualClock()), or pass delays='report' to stop here"
        )
    start = clock.now
    step = 1.0
    while True:  # double the look-ahead until a message shows, then halve the gap down to its moment
        clock.now = start + step
        if _hidden(connection, names) < hidden:
            break
        if step > _HORIZON_S:
            clock.now = start
            return False
        step *= 2
    low, high = start + step / 2 if step > 1 else start, start + step
    while high - low > _PRECISION_S:
        clock.now = (low + high) / 2
        if _hidden(connection, names) < hidden:
            high = clock.now
        else:
            low = clock.now
    clock.now = high
    return True


def _hidden(connection: MemoryConnection, names: list[str]) -> int:
    """Messages not visible now: delayed, released, held back (read only: nothing is received)."""
    return sum(connection.size(name) - connection.counts(name)["ApproximateNumberOfMessages"] for name in names)

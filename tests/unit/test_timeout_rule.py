"""One timeout rule (sqsjobs.policy.timeout): the worker interrupts a job, and the runner and the
middleware expire its claims and locks, after the same number of seconds, whoever set it (the job,
--timeout, SQSJOBS_TIMEOUT). Before, the runner ignored --timeout and WithoutOverlapping used 60."""

from __future__ import annotations

from typing import Any

from sqsjobs import App, Job, WithoutOverlapping
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import FakeClock


class Plain(Job, name="timeout.plain"):
    def handle(self) -> None:
        pass


class Own(Job, name="timeout.own"):
    timeout = 7

    def handle(self) -> None:
        pass


def timeout_for(app: App, job: Job) -> float:
    job.dispatch()
    (message,) = app.connection.receive(app.settings.default_queue, 1, 0)
    return app.runner.timeout_for(message)


def overlap_lock_lifetime(app: App, clock: FakeClock, job: Job) -> float:
    """Seconds the lock WithoutOverlapping takes outlives the moment it is taken (to the second)."""
    seen: list[float] = []

    def inside() -> Any:
        start = clock.now
        while app.store.get(("overlap", f"{type(job).job_name}:k")) is not None:
            clock.now += 1
        seen.append(clock.now - start)
        clock.now = start

    WithoutOverlapping("k").handle(job, inside)
    return seen[0]


def test_the_worker_timeout_is_the_runners_and_the_middlewares_timeout() -> None:
    clock = FakeClock()
    app = App(connection="memory", timeout=60, clock=clock, clock_skew=0)  # one clock: exact expiries
    with app.activate():
        Worker(app, WorkerOptions(queues=["default"], timeout=5))
        assert timeout_for(app, Plain()) == 5
        assert timeout_for(app, Own()) == 7
        assert overlap_lock_lifetime(app, clock, Plain()) == 5 + 60
        assert overlap_lock_lifetime(app, clock, Own()) == 7 + 60

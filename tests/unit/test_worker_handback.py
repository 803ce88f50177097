"""Messages a worker received but never started are handed back without spending a try.

Before, a stop or `--max-jobs` made them visible again, so their receive count grew: a `tries=1`
job prefetched during a graceful deploy went to the DLQ having never run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from sqsjobs import App
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.job_class import Job
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import dead_letters, wait_for, work_for


class OneTry(Job, name="handback.one-try"):
    tries = 1
    ran: ClassVar[list[tuple[int, int]]] = []

    n: int

    def handle(self) -> None:
        OneTry.ran.append((self.n, self.attempts))


class Blocker(Job, name="handback.blocker"):
    """Keeps the only job thread busy while the others wait in the worker's hands."""

    tries = 1
    started: ClassVar[threading.Event] = threading.Event()

    def handle(self) -> None:
        Blocker.started.set()
        work_for(1)


@pytest.fixture(autouse=True)
def _reset() -> None:
    OneTry.ran.clear()
    Blocker.started.clear()


@pytest.fixture(params=["memory", "sqs"])
def app(request: pytest.FixtureRequest) -> Iterator[App]:
    if request.param == "memory":
        memory = App(connection="memory")
        with memory.activate():
            yield memory
    else:
        yield request.getfixturevalue("sqs_app")


def dlq(app: App) -> list[str]:
    connection = app.connection
    if isinstance(connection, MemoryConnection):
        return [m.body for m in connection.dead_letters("default")]
    return [m["Body"] for m in dead_letters(app)]


def drain(app: App) -> int:
    return Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False)


def test_a_one_try_job_prefetched_during_a_graceful_stop_runs_later(app: App) -> None:
    Blocker().dispatch()
    wait_for(lambda: app.connection.counts("default")["ApproximateNumberOfMessages"] == 1)
    OneTry.dispatch_many([OneTry(n=i) for i in range(3)])
    worker = Worker(app, WorkerOptions(sleep=1, concurrency=1, prefetch=3))
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()
    wait_for(Blocker.started.is_set, what="the blocker to start")
    wait_for(lambda: worker.held == 3, what="the worker to hold the three one-try jobs")
    worker.stop("deploy")
    thread.join(15)
    assert not thread.is_alive() and worker.exit_code == 0
    assert OneTry.ran == []

    assert drain(app) == 0
    assert sorted(OneTry.ran) == [(0, 1), (1, 1), (2, 1)]
    assert dlq(app) == []


def test_messages_held_at_max_jobs_are_handed_back_without_spending_a_try(app: App) -> None:
    OneTry.dispatch_many([OneTry(n=i) for i in range(4)])
    options = WorkerOptions(sleep=1, concurrency=1, prefetch=3, max_jobs=1)
    assert Worker(app, options).run(install_signals=False) == 0
    assert len(OneTry.ran) == 1

    assert drain(app) == 0
    assert sorted(n for n, _ in OneTry.ran) == [0, 1, 2, 3]
    assert all(attempt == 1 for _, attempt in OneTry.ran)
    assert dlq(app) == []

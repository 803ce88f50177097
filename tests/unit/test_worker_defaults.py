"""`sqsjobs work` as users type it: every receive asks for SQS's 10, at any concurrency.

Issue 13 measured the CLI's defaults (1 thread, no prefetch) at 1.2 SQS calls and 4.6x raw boto3's CPU
per job; the benchmark's own setting (10 threads) was the only one that looked fast. The default prefetch
now fills receives to 10; held messages stay hidden under the heartbeat and go back unspent on a stop.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import pytest

from sqsjobs import App, Job
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, sqs_requests


class Tick(Job, name="defaults.tick"):
    runs: ClassVar[list[int]] = []
    n: int = 0

    def handle(self) -> None:
        Tick.runs.append(self.n)


@pytest.fixture(autouse=True)
def _reset() -> None:
    Tick.runs = []


@pytest.mark.parametrize(
    ("options", "prefetch"),
    [
        ({}, 9),
        ({"concurrency": 4}, 6),
        ({"concurrency": 10}, 0),
        ({"concurrency": 32}, 0),
        ({"prefetch": 0}, 0),
        ({"concurrency": 2, "prefetch": 3}, 3),
        ({"heartbeat": False}, 0),  # nothing would keep a held message hidden
        ({"queues": ["high", "default"]}, 0),  # strict priority: nothing of a lower queue waits held
        ({"queues": ["high", "default"], "prefetch": 4}, 4),
    ],
)
def test_the_default_prefetch_fills_a_receive(options: dict[str, Any], prefetch: int) -> None:
    assert WorkerOptions(**options).prefetch == prefetch


def test_a_worker_with_defaults_receives_ten_at_a_time(sqs_app: App) -> None:
    receives = sqs_requests("ReceiveMessage")
    Tick.dispatch_many([Tick(n=i) for i in range(30)])
    assert Worker(sqs_app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0
    assert sorted(Tick.runs) == list(range(30))
    asked = [call["MaxNumberOfMessages"] for call in receives]
    assert asked[0] == 10, asked
    # 30 receives of one each before; now full receives plus at most a few topped-up ones and empty polls.
    assert len(receives) <= 8, asked
    assert not any(counts(sqs_app, "default").values())


def test_once_receives_only_the_job_it_runs(sqs_app: App) -> None:
    receives = sqs_requests("ReceiveMessage")
    Tick.dispatch_many([Tick(n=i) for i in range(5)])
    assert Worker(sqs_app, WorkerOptions(sleep=1, once=True)).run(install_signals=False) == 0
    assert len(Tick.runs) == 1
    assert [call["MaxNumberOfMessages"] for call in receives] == [1]
    left = counts(sqs_app, "default")
    assert left["ApproximateNumberOfMessages"] == 4 and left["ApproximateNumberOfMessagesNotVisible"] == 0


def test_max_jobs_receives_no_more_than_it_will_start(sqs_app: App) -> None:
    receives = sqs_requests("ReceiveMessage")
    Tick.dispatch_many([Tick(n=i) for i in range(12)])
    assert Worker(sqs_app, WorkerOptions(sleep=1, max_jobs=3)).run(install_signals=False) == 0
    assert len(Tick.runs) == 3
    assert sum(call["MaxNumberOfMessages"] for call in receives) <= 3
    assert counts(sqs_app, "default")["ApproximateNumberOfMessages"] == 9


class Low(Job, name="defaults.low"):
    order: ClassVar[list[str]] = []
    started: ClassVar[threading.Event] = threading.Event()
    n: int = 0

    def handle(self) -> None:
        Low.order.append(f"low{self.n}")
        Low.started.set()
        time.sleep(0.2)


class High(Job, name="defaults.high"):
    queue = "high"

    def handle(self) -> None:
        Low.order.append("HIGH")


def test_with_several_queues_nothing_is_held_so_priority_stays_strict(sqs_app: App) -> None:
    """A hostile review's catch: ten lower-queue messages held by one receive ran before a newer high one."""
    Low.order, Low.started = [], threading.Event()
    Low.dispatch_many([Low(n=i) for i in range(6)])

    def dispatch_high() -> None:  # once the first lower-queue job runs, five more are waiting
        Low.started.wait(10)
        with sqs_app.activate():
            High().dispatch()

    sender = threading.Thread(target=dispatch_high)
    sender.start()
    options = WorkerOptions(queues=["high", "default"], sleep=1, stop_when_empty=True)
    assert Worker(sqs_app, options).run(install_signals=False) == 0
    sender.join()
    assert "HIGH" in Low.order and Low.order.index("HIGH") <= 2, Low.order


class Parent(Job, name="defaults.parent"):
    def handle(self) -> None:
        Child().dispatch()  # no app named: the one running this job


class Child(Job, name="defaults.child"):
    ran: ClassVar[int] = 0

    def handle(self) -> None:
        Child.ran += 1


@pytest.mark.parametrize("event_loop", [False, True])
def test_a_job_dispatched_from_a_job_goes_through_the_app_running_it(sqs_app: App, event_loop: bool) -> None:
    """A worker built in code (`Worker(app)`, no `sqsjobs.use(app)`): job threads start with no context, so
    `Child().dispatch()` went through the process default app, built from the environment (other queues)."""
    Child.ran = 0
    Parent().dispatch()
    options = WorkerOptions(sleep=1, stop_when_empty=True, event_loop=event_loop)
    assert Worker(sqs_app, options).run(install_signals=False) == 0
    assert Child.ran == 1

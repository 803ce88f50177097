"""The heartbeat keeps a running job's message hidden, never overwrites a decision, and never starves.

The heartbeat has its own thread and its own SQS client (short timeouts), so these tests watch
the calls of every SQS client, not only the shared one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import ClassVar

import pytest

from sqsjobs import App, aws
from sqsjobs.job_class import Job
from sqsjobs.testing import faults as fault_injection
from sqsjobs.testing.faults import FaultPlan
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import dead_letters, queue_url, sqs_requests, visibility_changes, wait_for, work_for


class Slow(Job, name="heartbeat.slow"):
    runs: ClassVar[list[int]] = []
    ended: ClassVar[list[float]] = []

    seconds: float

    def handle(self) -> None:
        Slow.runs.append(self.attempts)
        work_for(self.seconds)
        Slow.ended.append(time.monotonic())


class Quick(Job, name="heartbeat.quick"):
    done: ClassVar[threading.Event] = threading.Event()

    def handle(self) -> None:
        Quick.done.set()


class Held(Job, name="heartbeat.held"):
    """Records each run's try and when it started: held behind a slow job, it must start late, once."""

    runs: ClassVar[list[tuple[int, float]]] = []

    def handle(self) -> None:
        Held.runs.append((self.attempts, time.monotonic()))


class FailsDuringHeartbeat(Job, name="heartbeat.fails-during-heartbeat"):
    """Raises while a heartbeat call for its own message is on the wire (slowed by a fault)."""

    tries = 3
    backoff = 40

    def handle(self) -> None:
        plan = fault_injection.plan()
        wait_for(lambda: plan.count(operation="ChangeMessageVisibilityBatch", kind="slow") >= 1, what="a heartbeat")
        raise RuntimeError("fails while its heartbeat is in flight")


class AsyncEndsDuringHeartbeat(Job, name="heartbeat.async-ends-during-heartbeat"):
    """An `async def` job that returns while a heartbeat call for its own message is on the wire."""

    async def handle(self) -> None:
        plan = fault_injection.plan()
        while plan.count(operation="ChangeMessageVisibilityBatch", kind="slow") < 1:
            await asyncio.sleep(0.02)


class Ticks(Job, name="heartbeat.ticks"):
    """Another coroutine job on the same loop, noting how long each of its short sleeps really took."""

    gaps: ClassVar[list[float]] = []

    async def handle(self) -> None:
        last = time.monotonic()
        for _ in range(200):
            await asyncio.sleep(0.02)
            now = time.monotonic()
            Ticks.gaps.append(now - last)
            last = now


@pytest.fixture(autouse=True)
def _reset() -> None:
    Slow.runs.clear()
    Slow.ended.clear()
    Held.runs.clear()
    Quick.done.clear()


def set_visibility(app: App, seconds: int) -> None:
    url = queue_url(app, "default")
    aws.client("sqs").set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": str(seconds)})


def test_a_job_longer_than_the_visibility_timeout_runs_once(sqs_app: App) -> None:
    set_visibility(sqs_app, 2)
    Slow(seconds=4.5).dispatch()
    with visibility_changes() as changes:
        assert Worker(sqs_app, WorkerOptions(sleep=1, concurrency=2, stop_when_empty=True)).run(False) == 0
    assert Slow.runs == [1]
    assert changes, "the visibility was never extended"
    assert dead_letters(sqs_app) == []


def test_messages_held_behind_a_long_job_stay_hidden_and_run_once_on_their_first_try(sqs_app: App) -> None:
    """At defaults (one thread, prefetch 9) a receive takes the slow job and the three behind it; they wait,
    received but not started, for twice the queue's visibility. Left to SQS they would reappear, be received
    again (by this worker's next receive or another's) and spend a try; the heartbeat keeps them hidden.
    (A visibility of 4 s, not 2: the heartbeat extends with half of it left, and a loaded CI machine needs
    the slack; see test_slow_deletes_do_not_starve_the_heartbeat.)"""
    set_visibility(sqs_app, 4)
    Slow(seconds=9).dispatch()
    Held.dispatch_many([Held() for _ in range(3)])
    with visibility_changes() as changes:
        assert Worker(sqs_app, WorkerOptions(sleep=1, stop_when_empty=True)).run(False) == 0
    assert Slow.runs == [1]
    assert [attempts for attempts, _ in Held.runs] == [1, 1, 1]
    # The premise: received with the slow job (extended while it ran) and started only after it ended.
    assert len({handle for handle, _ in changes}) >= 4, "the held messages were never extended"
    assert all(at >= Slow.ended[0] for _, at in Held.runs), "the held jobs ran before the slow one ended"
    assert dead_letters(sqs_app) == []


def test_slow_deletes_do_not_starve_the_heartbeat(sqs_app: App, faults: FaultPlan) -> None:
    """Deletes and heartbeats shared one thread: a delete slower than half the visibility timeout made
    a long job's message reappear while it ran, and the job ran twice. (A visibility of 4 s, not 2: the
    heartbeat extends with half of it left, and on a loaded CI machine 1 s was not always enough.)"""
    set_visibility(sqs_app, 4)
    # Longer than the whole visibility: a heartbeat stuck behind this delete would come too late.
    faults.add(service="sqs", operation="DeleteMessageBatch", kind="slow", times=1, delay=4.5)
    Quick().dispatch()
    Slow(seconds=6).dispatch()
    assert Worker(sqs_app, WorkerOptions(sleep=1, concurrency=2, stop_when_empty=True)).run(False) == 0
    assert faults.count(operation="DeleteMessageBatch", kind="slow") == 1
    assert Quick.done.is_set()
    assert Slow.runs == [1]


@pytest.mark.parametrize(
    ("kind", "visibility", "seconds"),
    [("500", 4, 6), ("entries", 6, 8)],
    ids=["the-call-fails", "sqs-fails-the-entry"],
)
def test_a_failed_extension_is_tried_again_before_the_message_reappears(
    sqs_app: App, faults: FaultPlan, kind: str, visibility: int, seconds: float
) -> None:
    """The extension fails twice: both tries of the call (HTTP 500), or SQS's answer for the entry
    itself (`SenderFault` false, the call a success). The heartbeat used to wait another half a
    visibility timeout after a failure, by which time the message was visible again and the long job
    ran a second time; it now tries again a second later."""
    set_visibility(sqs_app, visibility)
    faults.add(service="sqs", operation="ChangeMessageVisibilityBatch", kind=kind, times=2)
    Slow(seconds=seconds).dispatch()
    with visibility_changes() as changes:
        assert Worker(sqs_app, WorkerOptions(sleep=1, concurrency=2, stop_when_empty=True)).run(False) == 0
    assert faults.count(operation="ChangeMessageVisibilityBatch", kind=kind) == 2
    assert Slow.runs == [1]
    assert changes, "no extension ever landed"
    assert dead_letters(sqs_app) == []


def test_a_heartbeat_under_way_never_overwrites_a_release(sqs_app: App, faults: FaultPlan) -> None:
    """The job is released (backoff 40 s) while a heartbeat call for its message is on the wire; the
    release must be what SQS holds at the end, not the heartbeat's 2 s."""
    set_visibility(sqs_app, 2)
    faults.add(service="sqs", operation="ChangeMessageVisibilityBatch", kind="slow", times=1, delay=1.5)
    FailsDuringHeartbeat().dispatch()
    with visibility_changes() as changes:
        assert Worker(sqs_app, WorkerOptions(sleep=1, max_jobs=1)).run(install_signals=False) == 0
    receipts = {handle for handle, _ in changes}
    assert len(receipts) == 1, changes
    assert changes[-1][1] == 40, f"the last visibility SQS applied was {changes[-1][1]} s: {changes}"


def test_receives_ask_for_the_visibility_the_worker_read_at_start(sqs_app: App) -> None:
    """Lowering the queue's visibility while a worker runs made a job longer than the new value run
    again (the heartbeat still counted on the old one)."""
    worker = Worker(sqs_app, WorkerOptions(sleep=1, concurrency=2))
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()
    try:
        Quick().dispatch()
        wait_for(Quick.done.is_set, what="the worker to be running")
        polls = sqs_requests("ReceiveMessage")
        set_visibility(sqs_app, 1)
        # A long poll already under way keeps the visibility it started with: wait for a fresh one.
        wait_for(lambda: polls, what="a receive that started after the change")
        Slow(seconds=3).dispatch()
        wait_for(lambda: worker.processed == 2, timeout=20, what="the slow job to finish")
    finally:
        worker.stop("test")
        thread.join(15)
    assert Slow.runs == [1]


def test_an_async_job_ending_while_its_heartbeat_is_on_the_wire_is_settled_and_the_loop_never_waits(
    sqs_app: App, faults: FaultPlan
) -> None:
    """The asyncio worker settles a plain coroutine job on its loop; its message must first leave the
    heartbeat, and a heartbeat call carrying it (slowed to 2 s here) must land before the delete. The loop
    leaves that wait to a pool thread: the other job on it keeps running, and the message is deleted once."""
    set_visibility(sqs_app, 2)
    faults.add(service="sqs", operation="ChangeMessageVisibilityBatch", kind="slow", times=1, delay=2.0)
    Ticks.gaps.clear()
    AsyncEndsDuringHeartbeat().dispatch()
    Ticks().dispatch()
    options = WorkerOptions(sleep=1, event_loop=True, concurrency=2, prefetch=0, max_jobs=2)
    assert Worker(sqs_app, options).run(install_signals=False) == 0
    assert faults.count(operation="ChangeMessageVisibilityBatch", kind="slow") == 1
    assert len(Ticks.gaps) == 200
    assert max(Ticks.gaps) < 1.0, f"the loop stood still for {max(Ticks.gaps):.2f} s"
    assert dead_letters(sqs_app) == []
    counts = sqs_app.connection.counts("default")
    assert counts["ApproximateNumberOfMessages"] + counts["ApproximateNumberOfMessagesNotVisible"] == 0

"""A bulk dispatch holds a few batches of encoded bodies at a time, not all of them (sqsjobs.bulk_plan).

`dispatch_many` of 10,000 jobs of 200 KB once encoded every body before the first send: 2 GB held at once.
It now drafts every job first (what it refuses, it refuses before anything is sent) and encodes, locks and
sends a few batches' worth at a time.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from typing import Any

import pytest

from sqsjobs import App, DispatchError, Job, aws, bulk_plan, dispatch_many, hold_dispatches
from sqsjobs.connections.base import OutgoingMessage
from sqsjobs.provisioning import provision
from sqsjobs.stores.memory import MemoryStore
from tests.helpers import counts, queue_url

BODY = 200_000


class Large(Job, name="bulk.large"):
    n: int
    blob: str

    def handle(self) -> None:
        pass


class LargeUnique(Job, name="bulk.large_unique"):
    unique_for = 3600
    n: int
    blob: str

    def unique_id(self) -> str:
        return str(self.n)

    def handle(self) -> None:
        pass


class Stamped(Job, name="bulk.stamped"):
    queue = "stamped.fifo"
    n: int
    blob: str = ""

    def handle(self) -> None:
        pass


def _live_messages() -> int:
    return sum(1 for item in gc.get_objects() if type(item) is OutgoingMessage)


@pytest.fixture
def app(moto: None, prefix: str) -> Iterator[App]:
    application = App(
        connection="sqs", queue_prefix=prefix, queues=["default", "stamped.fifo"], store="memory", visibility_timeout=30
    )
    provision(application, ["default", "stamped.fifo"], table=False, bucket=False)
    with application.activate():
        yield application


def test_a_bulk_dispatch_of_large_jobs_holds_a_few_batches_of_bodies_not_all(app: App) -> None:
    jobs = [Large(n=n, blob=f"{n:08d}" * (BODY // 8)) for n in range(60)]  # 12 MB of bodies
    live: list[int] = []

    def measure(**_: Any) -> None:
        live.append(_live_messages())

    sqs = aws.client("sqs")
    sqs.meta.events.register("before-call.sqs.SendMessageBatch", measure)
    try:
        results = dispatch_many(jobs)
    finally:
        sqs.meta.events.unregister("before-call.sqs.SendMessageBatch", measure)
    assert [r.queued for r in results] == [True] * 60
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 60
    held_at_most = bulk_plan.HELD_BYTES // BODY + 1 + 5  # a round, its last body, a batch carried over
    assert len(live) == 12, "five 200 KB bodies fill a 1 MiB batch: no short batch between rounds"
    assert max(live) <= held_at_most < 60, f"messages alive at each send: {live}"


def test_a_job_the_dispatch_refuses_stops_it_before_anything_is_sent_or_locked(app: App) -> None:
    """All or nothing for what a dispatch refuses: the FIFO delay of the last job stops the whole call."""
    jobs: list[Job] = [LargeUnique(n=n, blob="x" * BODY) for n in range(30)]
    with pytest.raises(DispatchError, match="FIFO"):
        dispatch_many([*jobs, Stamped(n=1)], delay=5)
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 0
    again = dispatch_many(jobs[:3])  # no lock was left behind
    assert [r.queued for r in again] == [True, True, True]


def test_what_was_taken_but_not_sent_is_given_back_when_a_bulk_dispatch_stops_on_an_error(app: App) -> None:
    """An error that is not an AWS answer (here a botocore hook's; an interrupt) stops the dispatch: the unique locks
    of the jobs taken for a later batch are freed, so dispatching them again is not dropped as a duplicate."""
    jobs = [LargeUnique(n=n, blob="x" * BODY) for n in range(30)]  # 5 a batch: 6 MB, two rounds
    sends: list[int] = []

    def stop_on_the_second(**_: Any) -> None:
        sends.append(1)
        if len(sends) == 2:
            raise RuntimeError("stopped")

    sqs = aws.client("sqs")
    sqs.meta.events.register("before-call.sqs.SendMessageBatch", stop_on_the_second)
    try:
        with pytest.raises(RuntimeError, match="stopped"):
            dispatch_many(jobs)
    finally:
        sqs.meta.events.unregister("before-call.sqs.SendMessageBatch", stop_on_the_second)
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 5  # the first batch
    again = dispatch_many(jobs)
    queued = [r.queued for r in again]
    # The first batch is queued (its locks are held), the second was handed to the failed send (its fate is
    # unknown, so its locks stay until unique_for); every job after it is free to go again.
    assert queued == [False] * 10 + [True] * 20, queued


def _receive_in_order(url: str) -> list[dict[str, Any]]:
    """A FIFO queue's messages in the order SQS gives them: each group's next only once the last is deleted."""
    sqs = aws.client("sqs")
    out: list[dict[str, Any]] = []
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        out.extend(got)
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        )
    return out


def test_jobs_for_two_queues_in_one_call_each_arrive_and_a_fifo_groups_order_holds_across_rounds(app: App) -> None:
    mixed: list[Job] = []
    for n in range(30):
        mixed.append(Large(n=n, blob="x" * BODY) if n % 2 else Stamped(n=n, blob="y" * BODY))
    results = dispatch_many(mixed)
    assert sorted(r.queue for r in results) == ["default"] * 15 + ["stamped.fifo"] * 15
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 15
    fifo = [json.loads(m["Body"])["payload"]["n"] for m in _receive_in_order(queue_url(app, "stamped.fifo"))]
    assert fifo == list(range(0, 30, 2))


def test_a_held_bulk_dispatch_that_stops_midway_gives_back_every_lock_it_took(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a transaction every message is taken at once (sqsjobs.bulk_plan.by_queue); the store failing on
    the fourth lock frees the three taken before it, so the same jobs can be dispatched again."""
    jobs = [LargeUnique(n=n, blob="x") for n in range(4)]
    add = MemoryStore.add
    calls: list[int] = []

    def fourth_fails(store: MemoryStore, *args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("store broke")
        return add(store, *args, **kwargs)

    monkeypatch.setattr(MemoryStore, "add", fourth_fails)
    with pytest.raises(RuntimeError, match="store broke"), hold_dispatches():
        dispatch_many(jobs)
    monkeypatch.setattr(MemoryStore, "add", add)
    assert [r.queued for r in dispatch_many(jobs[:3])] == [True, True, True]
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 3


def test_a_job_whose_text_utf8_cannot_carry_is_named_and_the_others_are_queued(app: App) -> None:
    jobs = [Large(n=n, blob="x" * BODY) for n in range(25)]
    with pytest.raises(DispatchError) as caught:
        dispatch_many([*jobs[:12], Large(n=99, blob="a\ud800"), *jobs[12:]])
    ((_, name, reason),) = caught.value.not_queued
    assert name == "bulk.large" and "not valid Unicode" in reason
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 25

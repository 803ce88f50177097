"""The memory connection keeps the SQS semantics a job can observe, for users' fast tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sqsjobs import App, Job, OutgoingMessage
from sqsjobs.connections.base import Connection
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_visibility_delay_and_receive_counts_behave_like_sqs() -> None:
    clock = Clock()
    queue = MemoryConnection(visibility_timeout=30, max_receive_count=None, clock=clock)
    queue.send("q", OutgoingMessage(body="a", delay_seconds=10))
    assert queue.receive("q", 10, 0) == []
    clock.now += 10
    (first,) = queue.receive("q", 10, 0)
    assert first.receive_count == 1 and queue.receive("q", 10, 0) == []
    clock.now += 30
    (second,) = queue.receive("q", 10, 0)
    assert second.receive_count == 2 and second.message_id == first.message_id
    queue.change_visibility("q", [(second, 0)])
    (third,) = queue.receive("q", 10, 0)
    queue.delete("q", [first])  # a stale receipt handle deletes nothing
    assert queue.size("q") == 1
    queue.delete("q", [third])
    assert queue.size("q") == 0


def test_the_redrive_policy_moves_a_message_received_too_often() -> None:
    clock = Clock()
    queue = MemoryConnection(visibility_timeout=1, max_receive_count=2, clock=clock)
    queue.send("q", OutgoingMessage(body="crashy"))
    for _ in range(2):
        assert queue.receive("q", 1, 0)
        clock.now += 1
    assert queue.receive("q", 1, 0) == []
    assert [m.body for m in queue.dead_letters("q")] == ["crashy"]


@pytest.fixture(params=["memory", "sqs"])
def fifo(request: pytest.FixtureRequest, prefix: str) -> Iterator[Connection]:
    """The same FIFO queue on the memory connection and on SQS (moto), for one script run on both."""
    if request.param == "memory":
        yield MemoryConnection(visibility_timeout=30, max_receive_count=None)
        return
    request.getfixturevalue("moto")
    app = App(connection="sqs", queue_prefix=prefix, visibility_timeout=30)
    provision(app, ["q.fifo"], table=False, bucket=False)
    yield app.connection


def test_fifo_groups_behave_as_on_sqs_several_in_order_per_receive_none_while_one_is_in_flight(
    fifo: Connection,
) -> None:
    for body, group in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a")):
        fifo.send("q.fifo", OutgoingMessage(body=body, group_id=group, deduplication_id=body))
    first = fifo.receive("q.fifo", 2, 0)
    assert [(m.body, m.group_id) for m in first] == [("a1", "a"), ("a2", "a")]
    assert [m.body for m in fifo.receive("q.fifo", 10, 0)] == ["b1"]  # group a is in flight
    fifo.delete("q.fifo", first[:1])
    assert fifo.receive("q.fifo", 10, 0) == []  # a2 is still in flight: a3 may not pass it
    fifo.change_visibility("q.fifo", [(first[1], 0)])
    assert [m.body for m in fifo.receive("q.fifo", 10, 0)] == ["a2", "a3"]


def test_a_receive_hides_messages_for_the_visibility_it_asks_for() -> None:
    clock = Clock()
    queue = MemoryConnection(visibility_timeout=1, max_receive_count=None, clock=clock)
    queue.send("q", OutgoingMessage(body="long job"))
    assert queue.receive("q", 1, 0, visibility_timeout=60)
    clock.now += 30
    assert queue.receive("q", 1, 0) == []
    clock.now += 30
    assert [m.body for m in queue.receive("q", 1, 0)] == ["long job"]


def test_a_worker_runs_jobs_from_the_memory_connection() -> None:
    seen: list[int] = []

    class Counted(Job, name="memory.counted"):
        n: int

        def handle(self) -> None:
            seen.append(self.n)

    app = App(connection="memory")
    with app.activate():
        Counted.dispatch_many([Counted(n=i) for i in range(12)])
    assert Worker(app, WorkerOptions(sleep=1, concurrency=3, stop_when_empty=True)).run(install_signals=False) == 0
    assert sorted(seen) == list(range(12))

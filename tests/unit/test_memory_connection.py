"""The memory connection keeps the SQS semantics a job can observe, for users' fast tests."""

from __future__ import annotations

from sqsjobs import App, Job, OutgoingMessage
from sqsjobs.connections.memory import MemoryConnection
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


def test_fifo_groups_hand_out_one_message_per_group_at_a_time() -> None:
    queue = MemoryConnection(clock=Clock())
    for body, group in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        queue.send("q.fifo", OutgoingMessage(body=body, group_id=group))
    assert sorted(m.body for m in queue.receive("q.fifo", 10, 0)) == ["a1", "b1"]


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

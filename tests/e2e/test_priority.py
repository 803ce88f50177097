"""`--queue high,default` is strict priority order."""

from __future__ import annotations

from tests.e2e.conftest import E2E
from tests.e2e.e2e_jobs import Record


def test_every_high_priority_job_starts_before_any_default_one(e2e: E2E) -> None:
    e2e.setup(queues=("high", "default"))
    default = [e2e.dispatch(Record(tag=f"default{i}", order=True), queue="default") for i in range(4)]
    high = [e2e.dispatch(Record(tag=f"high{i}", order=True), queue="high") for i in range(4)]
    worker = e2e.worker("--queue", "high,default", "--concurrency", "1", "--stop-when-empty")

    assert worker.wait(30) == 0, worker.stderr()
    order = (e2e.dir / "order.log").read_text().split()
    assert len(order) == 8, order
    assert {tag[:4] for tag in order[:4]} == {"high"}, order
    assert sorted(order) == sorted([f"default{i}" for i in range(4)] + [f"high{i}" for i in range(4)])
    for job in default + high:
        assert e2e.events(job.job_id) == [("start", 1), ("end", 1)]
    assert e2e.queue_depth("high") == e2e.queue_depth("default") == 0

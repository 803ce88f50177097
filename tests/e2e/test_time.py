"""Time on a real queue: heartbeats past the visibility timeout, enforced timeouts, long delays in hops."""

from __future__ import annotations

import signal
import time

from tests.e2e.conftest import E2E
from tests.e2e.e2e_jobs import Record, SlowPastTimeout
from tests.helpers import dead_letters, wait_for

DELAY = 4


def test_a_job_longer_than_the_visibility_timeout_runs_exactly_once(e2e: E2E) -> None:
    e2e.setup(visibility=2)
    job = e2e.dispatch(Record(tag="long", sleep=5))
    # A second job thread keeps polling: without the heartbeat it would receive the message
    # again as soon as the 2 s visibility ran out.
    worker = e2e.worker("--stop-when-empty", "--concurrency", "2")

    assert worker.wait(30) == 0, worker.stderr()
    marks = e2e.marks(job.job_id)
    assert [(m.event, m.attempt) for m in marks] == [("start", 1), ("end", 1)]
    assert marks[1].at - marks[0].at >= 5
    assert e2e.queue_depth() == 0
    assert e2e.dlq_depth() == 0


def test_a_job_past_its_timeout_is_interrupted_and_dead_lettered(e2e: E2E) -> None:
    e2e.setup()
    job = e2e.dispatch(SlowPastTimeout())
    started = time.monotonic()
    worker = e2e.worker("--stop-when-empty")

    assert worker.wait(30) == 0, worker.stderr()
    assert time.monotonic() - started < 12, "the job ran on instead of being interrupted after 1 s"
    assert e2e.events(job.job_id) == [("start", 1), ("failed:JobTimeoutError", 1)]
    [letter] = dead_letters(e2e.app)
    assert letter["attrs"]["sqsjobs.error_type"] == "JobTimeoutError"
    assert letter["attrs"]["sqsjobs.reason"] == "tries_exhausted"
    assert letter["attrs"]["sqsjobs.job_id"] == job.job_id
    assert e2e.queue_depth() == 0


def test_a_delay_longer_than_one_hop_travels_in_hops_and_is_never_cut_short(e2e: E2E) -> None:
    e2e.setup(max_delay_hop=1)
    # The worker is already long-polling when the job is dispatched. moto notices a delayed
    # message only once per long poll (1 s here), so the first hop is received 1-2 s after
    # dispatch and each later one about 1 s after it was sent: a 4 s delay therefore always
    # shows at least two hops (a 3 s one would not, depending on the poll's phase).
    worker = e2e.worker(env=e2e.env(SQSJOBS_MAX_DELAY_HOP="1"))
    wait_for(lambda: "worker started" in worker.stderr(), what="the worker to start polling")
    dispatched_at = time.time()
    job = e2e.dispatch(Record(tag="later"), delay=DELAY)

    end = e2e.wait_mark(job.job_id, "end", timeout=20)
    wait_for(lambda: e2e.queue_depth() == 0, what="the message to be deleted")
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0, worker.stderr()

    marks = e2e.marks(job.job_id)
    assert [(m.event, m.attempt) for m in marks] == [("start", 1), ("end", 1)]
    waited = marks[0].at - dispatched_at
    assert waited >= DELAY, f"ran {waited:.2f}s after dispatch, but the delay was {DELAY}s"
    assert end.at >= marks[0].at
    deferred = [r for r in worker.log_records() if r.get("msg") == "job deferred"]
    assert len(deferred) >= 2, worker.stderr()
    assert {r["job_id"] for r in deferred} == {job.job_id}
    assert all(r["delay_s"] == 1 for r in deferred)
    # Every hop is a new message, so each one is received for the first time.
    assert {r["attempt"] for r in deferred} == {1}
    assert e2e.dlq_depth() == 0

"""Real signals to a real worker: SIGTERM drains politely, SIGKILL loses nothing."""

from __future__ import annotations

import json
import signal
from typing import Any

from sqsjobs import aws
from tests.e2e.conftest import E2E
from tests.e2e.e2e_jobs import Record
from tests.helpers import counts, queue_url, wait_for


def test_sigterm_returns_held_messages_at_once_and_finishes_the_running_job(e2e: E2E) -> None:
    app = e2e.setup(visibility=30)
    # Long enough to still be running once the five are received on a loaded 2-core machine (3 s was not).
    slow = e2e.dispatch(Record(tag="slow", sleep=8))
    worker = e2e.worker("--concurrency", "1", "--prefetch", "5")
    e2e.wait_mark(slow.job_id, "start")

    with app.activate():
        quick = Record.dispatch_many([Record(tag=f"quick{i}") for i in range(5)])
    quick_ids = {d.job_id for d in quick}
    # The worker holds all five (prefetch) while the slow job runs.
    wait_for(
        lambda: (
            counts(app, "default")
            == {
                "ApproximateNumberOfMessages": 0,
                "ApproximateNumberOfMessagesNotVisible": 6,
                "ApproximateNumberOfMessagesDelayed": 0,
            }
        ),
        timeout=10,
        what="the worker to hold the slow message and five prefetched ones",
    )
    assert e2e.marks(slow.job_id)[-1].event == "start", "the slow job must still be running at SIGTERM"
    worker.signal(signal.SIGTERM)

    returned: dict[str, Any] = {}

    def receive_returned() -> bool:
        got = aws.client("sqs").receive_message(
            QueueUrl=queue_url(app, "default"), MaxNumberOfMessages=10, VisibilityTimeout=30
        )
        returned.update({json.loads(m["Body"])["id"]: m for m in got.get("Messages", [])})
        return len(returned) >= 5

    # Well inside the 30 s visibility timeout: the worker made them visible again on its way out.
    wait_for(receive_returned, timeout=3, interval=0.1, what="the held messages to be returned")
    assert set(returned) == quick_ids

    assert worker.wait(15) == 0, worker.stderr()
    assert e2e.events(slow.job_id) == [("start", 1), ("end", 1)]
    for job_id in quick_ids:
        assert e2e.marks(job_id) == [], "a held message must not be started after SIGTERM"
    # The slow job's message was deleted; only the five the test now holds remain.
    assert counts(app, "default")["ApproximateNumberOfMessagesNotVisible"] == 5
    assert e2e.queue_depth() == 5


def test_a_job_killed_mid_run_runs_again_after_the_visibility_timeout(e2e: E2E) -> None:
    e2e.setup(visibility=2)
    job = e2e.dispatch(Record(tag="killed", sleep=2))
    first = e2e.worker()
    e2e.wait_mark(job.job_id, "start")
    first.signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    assert e2e.events(job.job_id) == [("start", 1)]

    second = e2e.worker("--stop-when-empty")
    assert second.wait(30) == 0, second.stderr()
    marks = e2e.marks(job.job_id)
    assert [(m.event, m.attempt) for m in marks] == [("start", 1), ("start", 2), ("end", 2)]
    assert e2e.queue_depth() == 0
    assert e2e.dlq_depth() == 0

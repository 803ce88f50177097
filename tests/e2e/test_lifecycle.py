"""A job's life on a real queue: run once, retry in place with backoff, give up into the DLQ."""

from __future__ import annotations

import json
import time

from sqsjobs import aws
from sqsjobs.timing import parse_iso
from tests.e2e.conftest import E2E
from tests.e2e.e2e_jobs import AlwaysFails, FailTimes, Record
from tests.helpers import dead_letters, queue_url, wait_for


def test_a_job_runs_once_and_its_message_is_deleted(e2e: E2E) -> None:
    e2e.setup()
    job = e2e.dispatch(Record(tag="hello"))
    worker = e2e.worker("--stop-when-empty")

    assert worker.wait(30) == 0, worker.stderr()
    assert e2e.events(job.job_id) == [("start", 1), ("end", 1)]
    assert e2e.queue_depth() == 0
    assert e2e.dlq_depth() == 0
    processed = [r for r in worker.log_records() if r.get("msg") == "job processed"]
    assert [(r["job_id"], r["job"], r["attempt"]) for r in processed] == [(job.job_id, "e2e.record", 1)]


def test_backoff_retries_the_same_message_after_the_listed_waits(e2e: E2E) -> None:
    e2e.setup()
    job = e2e.dispatch(FailTimes(failures=2))
    worker = e2e.worker("--stop-when-empty")

    depths: list[int] = []

    def finished() -> bool:
        depths.append(e2e.queue_depth())
        return worker.poll() is not None

    wait_for(finished, timeout=30, interval=0.1, what="the worker to drain the queue")
    assert worker.wait(1) == 0, worker.stderr()

    marks = e2e.marks(job.job_id)
    assert [(m.event, m.attempt) for m in marks] == [
        ("start", 1), ("fail", 1), ("start", 2), ("fail", 2), ("start", 3), ("end", 3),
    ]  # fmt: skip
    starts = [m.at for m in marks if m.event == "start"]
    assert starts[1] - starts[0] >= FailTimes.backoff[0]
    assert starts[2] - starts[1] >= FailTimes.backoff[1]
    # Retries change the visibility of the one message (its receive count is the attempt);
    # nothing is ever re-sent, so the queue never holds a second copy.
    assert max(depths) == 1
    assert e2e.queue_depth() == 0
    assert e2e.dlq_depth() == 0


def test_exhausted_tries_put_the_job_in_the_dlq_with_its_reason(e2e: E2E) -> None:
    e2e.setup()
    before = time.time()
    job = e2e.dispatch(AlwaysFails(tag="x1"))
    worker = e2e.worker("--stop-when-empty")

    assert worker.wait(30) == 0, worker.stderr()
    assert e2e.events(job.job_id) == [("start", 1), ("start", 2), ("failed:RuntimeError", 2)]
    assert e2e.queue_depth() == 0

    [letter] = dead_letters(e2e.app)
    attrs = letter["attrs"]
    assert json.loads(letter["Body"])["id"] == job.job_id
    assert attrs["sqsjobs.reason"] == "tries_exhausted"
    assert attrs["sqsjobs.error_type"] == "RuntimeError"
    assert attrs["sqsjobs.error"] == "boom x1"
    assert attrs["sqsjobs.source_queue"] == "default"
    assert attrs["sqsjobs.attempts"] == "2"
    assert attrs["sqsjobs.job"] == "e2e.always-fails"
    assert attrs["sqsjobs.job_id"] == job.job_id
    assert before <= parse_iso(attrs["sqsjobs.failed_at"]) <= time.time()
    assert "RuntimeError: boom x1" in attrs["sqsjobs.traceback"]
    assert "e2e_jobs.py" in attrs["sqsjobs.traceback"]


def test_a_redelivery_past_its_tries_goes_to_the_dlq_without_running(e2e: E2E) -> None:
    app = e2e.setup()
    job = e2e.dispatch(AlwaysFails(tag="crashed"))
    # Two earlier receives that never decided (a worker that crashed twice).
    sqs = aws.client("sqs")
    for _ in range(AlwaysFails.tries):
        got = sqs.receive_message(QueueUrl=queue_url(app, "default"), VisibilityTimeout=0).get("Messages", [])
        assert len(got) == 1
    worker = e2e.worker("--stop-when-empty")

    assert worker.wait(30) == 0, worker.stderr()
    assert [e for e in e2e.events(job.job_id) if e[0] == "start"] == []
    assert e2e.events(job.job_id) == [("failed:MaxAttemptsExceededError", 3)]
    assert e2e.queue_depth() == 0
    [letter] = dead_letters(app)
    assert json.loads(letter["Body"])["id"] == job.job_id
    assert letter["attrs"]["sqsjobs.reason"] == "tries_exhausted"
    assert letter["attrs"]["sqsjobs.error_type"] == "MaxAttemptsExceededError"
    assert letter["attrs"]["sqsjobs.attempts"] == "3"

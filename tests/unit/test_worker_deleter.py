"""The worker's deleter: finished messages leave in batches of 10, none waits on another queue's traffic,
and a delete that fails is tried again while its message is still hidden."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import ClassVar

import pytest

from sqsjobs import App, Job, aws
from sqsjobs.connections.base import OutgoingMessage, ReceivedMessage
from sqsjobs.testing.faults import FaultPlan
from sqsjobs.worker import Worker, WorkerOptions
from sqsjobs.worker.deleter import Deleter
from tests.helpers import counts, dead_letters, payload_app, queue_url


class Counted(Job, name="deleter.counted"):
    runs: ClassVar[list[int]] = []
    data: str = ""

    def handle(self) -> None:
        Counted.runs.append(self.attempts)


@pytest.fixture(autouse=True)
def _reset() -> None:
    Counted.runs.clear()


@pytest.fixture
def s3_app(moto: None, prefix: str) -> Iterator[App]:
    app = payload_app(prefix)
    with app.activate():
        yield app


def test_a_lone_delete_on_a_quiet_queue_is_not_held_back_by_a_busy_queues_full_batches(memory_app: App) -> None:
    """One deadline was shared by every queue and restarted whenever full batches went out with a
    remainder pending: while another queue kept filling batches, a quiet queue's single finished
    message was never deleted (and, no longer extended, it came back and ran again)."""
    connection = memory_app.connection
    connection.send("quiet", OutgoingMessage(body="{}"))
    (lone,) = connection.receive("quiet", 1, 0, visibility_timeout=60)
    deleter = Deleter(connection, None, flush_s=0.2)
    deleter.add(lone)
    added = time.monotonic()
    serial = 0
    while connection.counts("quiet")["ApproximateNumberOfMessagesNotVisible"] and time.monotonic() - added < 5:
        for _ in range(10):  # a busy queue's next full batch, as finished jobs would add it
            serial += 1
            deleter.add(ReceivedMessage("busy", f"busy-{serial}", f"receipt-{serial}", "{}", 1, 0.0))
        deleter.flush()
    assert connection.counts("quiet")["ApproximateNumberOfMessagesNotVisible"] == 0, "the lone delete never went"


# Five attempts of the call (AWS_MAX_ATTEMPTS' default) fail it; "entries" fails each entry on SQS's side.
@pytest.mark.parametrize(("kind", "times"), [("entries", 2), ("500", 5)], ids=["sqs-fails-the-entry", "the-call-fails"])
def test_a_failed_delete_is_tried_again_and_the_job_runs_once(
    s3_app: App, faults: FaultPlan, kind: str, times: int
) -> None:
    """A delete that failed (the call, after botocore's tries, or SQS's answer for the entry) was
    dropped: the finished message stayed in its queue, unextended, and ran its job again once its
    visibility lapsed. Its S3 body was kept for that rerun, so the bucket kept it too."""
    aws.client("sqs").set_queue_attributes(
        QueueUrl=queue_url(s3_app, "default"), Attributes={"VisibilityTimeout": "20"}
    )
    faults.add(service="sqs", operation="DeleteMessageBatch", kind=kind, times=times)
    Counted(data="x" * 300_000).dispatch()  # over 256 KiB: its body travels through S3
    assert Worker(s3_app, WorkerOptions(sleep=1, stop_when_empty=True)).run(False) == 0
    assert faults.count(operation="DeleteMessageBatch", kind=kind) == times
    assert Counted.runs == [1]
    assert counts(s3_app, "default") == {
        "ApproximateNumberOfMessages": 0,
        "ApproximateNumberOfMessagesNotVisible": 0,
        "ApproximateNumberOfMessagesDelayed": 0,
    }, "the finished message is still in its queue"
    assert aws.client("s3").list_objects_v2(Bucket=s3_app.settings.bucket).get("KeyCount") == 0
    assert dead_letters(s3_app) == []


def test_a_retried_delete_that_lands_forgets_its_tries(sqs_app: App, faults: FaultPlan) -> None:
    """The count of tries is kept per receipt handle while a delete is retried; one whose retry landed
    must leave it, or a long-running worker grows by one entry per retried delete."""
    connection = sqs_app.connection
    connection.send("default", OutgoingMessage(body="{}"))
    (message,) = connection.receive("default", 1, 0, visibility_timeout=60)
    faults.add(service="sqs", operation="DeleteMessageBatch", kind="entries", times=1)
    deleter = Deleter(connection, None, flush_s=0.2)
    deleter.add(message)
    deleter.flush(force=True)
    assert counts(sqs_app, "default")["ApproximateNumberOfMessagesNotVisible"] == 1
    deleter.flush(force=True)
    assert counts(sqs_app, "default")["ApproximateNumberOfMessagesNotVisible"] == 0
    assert deleter._tries == {}

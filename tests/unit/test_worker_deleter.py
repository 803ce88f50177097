"""The worker's deleter: finished messages leave in batches of 10, none waits on another queue's traffic,
and a delete that fails is tried again while its message is still hidden."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from sqsjobs import App, Job, aws
from sqsjobs.connections.base import OutgoingMessage, ReceivedMessage
from sqsjobs.testing.faults import FaultPlan
from sqsjobs.worker import Worker, WorkerOptions
from sqsjobs.worker.deleter import Deleter
from tests.helpers import counts, dead_letters, payload_app, queue_url, sqs_requests


class Counted(Job, name="deleter.counted"):
    runs: ClassVar[list[int]] = []

    def handle(self) -> None:
        Counted.runs.append(self.attempts)


@pytest.fixture(autouse=True)
def _reset() -> None:
    Counted.runs.clear()


@pytest.fixture
def s3_app(moto: None, prefix: str) -> Iterator[App]:
    app = payload_app(prefix, payload_threshold="always")
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


def test_a_delete_sqs_fails_on_its_side_is_tried_again_and_the_job_runs_once(s3_app: App, faults: FaultPlan) -> None:
    """SQS answered the delete with the entry failed on its side (`SenderFault` false). The failure was
    only logged: the finished message stayed in its queue, unextended, and ran its job again once its
    visibility lapsed (twice, here: runs [1, 2, 3]). A body deleted only on a retry stays in the bucket
    for its lifecycle rule: that late, SQS may answer success for a stale receipt handle."""
    aws.client("sqs").set_queue_attributes(
        QueueUrl=queue_url(s3_app, "default"), Attributes={"VisibilityTimeout": "20"}
    )
    faults.add(service="sqs", operation="DeleteMessageBatch", kind="entries", times=2)
    Counted().dispatch()
    assert aws.client("s3").list_objects_v2(Bucket=s3_app.settings.bucket).get("KeyCount") == 1
    assert Worker(s3_app, WorkerOptions(sleep=1, stop_when_empty=True)).run(False) == 0
    assert faults.count(operation="DeleteMessageBatch", kind="entries") == 2
    assert Counted.runs == [1]
    assert counts(s3_app, "default") == {
        "ApproximateNumberOfMessages": 0,
        "ApproximateNumberOfMessagesNotVisible": 0,
        "ApproximateNumberOfMessagesDelayed": 0,
    }, "the finished message is still in its queue"
    assert aws.client("s3").list_objects_v2(Bucket=s3_app.settings.bucket).get("KeyCount") == 1
    assert dead_letters(s3_app) == []


def received(app: App, n: int) -> list[ReceivedMessage]:
    connection = app.connection
    for _ in range(n):
        connection.send("default", OutgoingMessage(body="{}"))
    got: list[ReceivedMessage] = []
    while len(got) < n:
        got += connection.receive("default", min(10, n - len(got)), 0, visibility_timeout=60)
    return got


def test_a_retry_waits_for_its_time_even_on_a_busy_queue(sqs_app: App, faults: FaultPlan) -> None:
    """Retries rode along with the queue's next batch, so on a queue with traffic a short fault on
    SQS's side used up all four tries within half a second, and the job ran again."""
    now = [1000.0]
    lone, *busy = received(sqs_app, 11)
    faults.add(service="sqs", operation="DeleteMessageBatch", kind="entries", times=1)
    deletes = sqs_requests("DeleteMessageBatch")
    deleter = Deleter(sqs_app.connection, None, flush_s=0.2, clock=lambda: now[0])
    deleter.add(lone)
    deleter.flush(force=True)  # fails on SQS's side: tried again a second later
    for message in busy:
        deleter.add(message)
    deleter.flush()  # a full batch goes at once, without the retry

    def handles(call: dict[str, Any]) -> set[str]:
        return {entry["ReceiptHandle"] for entry in call["Entries"]}

    assert len(deletes) == 2 and lone.receipt_handle not in handles(deletes[1])
    assert counts(sqs_app, "default")["ApproximateNumberOfMessagesNotVisible"] == 1
    now[0] += 1.0
    deleter.flush()
    assert handles(deletes[2]) == {lone.receipt_handle}
    assert counts(sqs_app, "default")["ApproximateNumberOfMessagesNotVisible"] == 0
    assert deleter._retries == {}, "a retry that landed is forgotten"


def test_a_delete_that_keeps_failing_is_tried_four_times_seconds_apart_then_given_up(
    sqs_app: App, faults: FaultPlan, caplog: pytest.LogCaptureFixture
) -> None:
    """`stop` spent every retry at once; it now waits for each one's time (1, 2, 3 s)."""
    (message,) = received(sqs_app, 1)
    faults.add(service="sqs", operation="DeleteMessageBatch", kind="entries", times=10)
    sent: list[float] = []
    aws.client("sqs").meta.events.register(
        "provide-client-params.sqs.DeleteMessageBatch", lambda **_: sent.append(time.monotonic())
    )
    deleter = Deleter(sqs_app.connection, None, flush_s=0.2)
    deleter.add(message)
    with caplog.at_level(logging.ERROR, logger="sqsjobs.worker"):
        deleter.stop()
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert len(sent) == 4 and all(gap >= want - 0.05 for gap, want in zip(gaps, (1, 2, 3), strict=True)), gaps
    assert counts(sqs_app, "default")["ApproximateNumberOfMessagesNotVisible"] == 1
    assert [r.getMessage()[:23] for r in caplog.records if r.levelno >= logging.ERROR] == ["gave up deleting 1 fini"]
    assert deleter._retries == {}

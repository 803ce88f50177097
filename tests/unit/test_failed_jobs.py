"""The DLQ as the failed-jobs store: list, show, retry, forget, flush — and the CLI on top."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from sqsjobs import App, Job, aws
from sqsjobs.cli import cli
from sqsjobs.connections.base import ReceivedMessage
from sqsjobs.failed_jobs import FailedJobs
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, dead_letters, dlq_url, drain, queue_url


def s3_requests(action: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    aws.client("s3").meta.events.register(f"provide-client-params.s3.{action}", lambda params, **_: seen.append(params))
    return seen


class Broken(Job, name="failed.broken"):
    tries = 1
    fixed: ClassVar[bool] = False
    runs: ClassVar[list[tuple[str, int]]] = []
    order: int

    def handle(self) -> None:
        Broken.runs.append((self.job_id or "", self.attempts))
        if not Broken.fixed:
            raise RuntimeError(f"order {self.order} broke")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Broken.fixed = False
    Broken.runs.clear()


def work(app: App) -> None:
    assert Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0


def fail_three(app: App) -> list[str]:
    ids = [Broken(order=i).dispatch().job_id for i in range(3)]
    work(app)
    return ids


def test_list_shows_every_failed_job_with_its_reason_and_leaves_them_in_place(sqs_app: App) -> None:
    ids = fail_three(sqs_app)
    store = FailedJobs(sqs_app)
    listed = store.list()
    assert sorted(j.id for j in listed) == sorted(ids)
    assert {(j.job, j.queue, j.reason, j.attempts) for j in listed} == {
        ("failed.broken", "default", "tries_exhausted", 1)
    }
    assert "broke" in listed[0].error
    assert len(store.list()) == 3, "listing must not consume the DLQ"


def test_retry_sends_the_job_back_with_the_same_id_and_attempts_reset(sqs_app: App) -> None:
    ids = fail_three(sqs_app)
    Broken.fixed = True
    Broken.runs.clear()
    retried = FailedJobs(sqs_app).retry([ids[1]])
    assert [j.id for j in retried] == [ids[1]]
    work(sqs_app)
    assert Broken.runs == [(ids[1], 1)]
    assert sorted(j.id for j in FailedJobs(sqs_app).list()) == sorted([ids[0], ids[2]])


def test_retry_all_and_forget_and_flush(sqs_app: App) -> None:
    ids = fail_three(sqs_app)
    store = FailedJobs(sqs_app)
    assert store.forget(ids[0]) is True
    assert store.forget("no-such-id") is False
    assert sorted(j.id for j in store.list()) == sorted(ids[1:])
    assert len(store.retry(queue="default")) == 2
    assert store.list() == []
    assert counts(sqs_app, "default")["ApproximateNumberOfMessages"] == 2
    work(sqs_app)
    assert store.flush() == 2
    assert store.list() == []


def test_a_message_the_redrive_policy_moved_is_listed_and_retryable(sqs_app: App) -> None:
    """A crash loop puts a message in the DLQ with no reason attributes; the envelope says where it came from."""
    sqs = aws.client("sqs")
    body = Broken(order=9).model_dump()
    envelope = {
        "v": 1,
        "id": "moved-1",
        "job": "failed.broken",
        "payload": body,
        "queue": "default",
        "dispatched_at": "2026-01-01T00:00:00Z",
    }
    dlq = sqs.get_queue_url(QueueName=sqs_app.settings.dlq_name(sqs_app.settings.physical_queue_name("default")))
    sqs.send_message(QueueUrl=dlq["QueueUrl"], MessageBody=json.dumps(envelope))
    (job,) = FailedJobs(sqs_app).list()
    assert (job.id, job.job, job.queue, job.reason) == ("moved-1", "failed.broken", "default", "redrive")
    Broken.fixed = True
    FailedJobs(sqs_app).retry(["moved-1"])
    work(sqs_app)
    assert Broken.runs == [("moved-1", 1)]


def test_the_cli_lists_shows_retries_forgets_and_flushes(sqs_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", sqs_app.settings.queue_prefix)
    monkeypatch.setenv("SQSJOBS_QUEUES", "default,high")
    ids = fail_three(sqs_app)
    runner = CliRunner()

    listed = runner.invoke(cli, ["failed", "list"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert all(job_id in listed.output for job_id in ids) and "tries_exhausted" in listed.output

    shown = runner.invoke(cli, ["failed", "show", ids[0]], terminal_width=200)
    assert shown.exit_code == 0 and "RuntimeError" in shown.output and "order 0 broke" in shown.output

    assert runner.invoke(cli, ["failed", "show", "nope"]).exit_code == 1
    assert runner.invoke(cli, ["failed", "forget", ids[0]]).exit_code == 0
    retried = runner.invoke(cli, ["failed", "retry", ids[1]])
    assert retried.exit_code == 0 and "Retried 1" in retried.output
    assert runner.invoke(cli, ["failed", "retry", "missing-id"]).exit_code == 1
    flushed = runner.invoke(cli, ["failed", "flush", "--yes"])  # stdin is no terminal here: --yes, or exit 2
    assert flushed.exit_code == 0 and "Deleted 1" in flushed.output
    assert dead_letters(sqs_app) == []
    assert len(drain(queue_url(sqs_app, "default"))) == 1


# -- several DLQ copies of one job ------------------------------------------------------------------


def duplicate_dlq_copies(app: App, extra: int = 1) -> str:
    """One failed job with `extra` more copies of its DLQ message (a worker that died after the DLQ
    write, a DLQ send that timed out after succeeding): same body, same attributes."""
    (job_id,) = [Broken(order=1).dispatch().job_id]
    work(app)
    (letter,) = dead_letters(app)  # hidden for 30 s by this read: send the copies, then make it visible
    sqs = aws.client("sqs")
    url = dlq_url(app, "default")
    for _ in range(extra):
        sqs.send_message(QueueUrl=url, MessageBody=letter["Body"], MessageAttributes=letter["MessageAttributes"])
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=letter["ReceiptHandle"], VisibilityTimeout=0)
    return job_id


def test_copies_of_one_job_are_listed_once_with_their_count(sqs_app: App) -> None:
    job_id = duplicate_dlq_copies(sqs_app, extra=2)
    (job,) = FailedJobs(sqs_app).list()
    assert (job.id, job.copies, job.reason) == (job_id, 3, "tries_exhausted")
    assert FailedJobs(sqs_app).find(job_id) is not None
    assert len(dead_letters(sqs_app)) == 3, "listing leaves every copy in place"


def test_retry_of_a_job_with_copies_sends_it_once_and_removes_every_copy(sqs_app: App) -> None:
    job_id = duplicate_dlq_copies(sqs_app, extra=2)
    Broken.fixed = True
    Broken.runs.clear()
    (retried,) = FailedJobs(sqs_app).retry([job_id])
    assert (retried.id, retried.copies) == (job_id, 3)
    assert dead_letters(sqs_app) == []
    assert counts(sqs_app, "default")["ApproximateNumberOfMessages"] == 1
    work(sqs_app)
    assert Broken.runs == [(job_id, 1)]


def test_forget_and_flush_remove_every_copy(sqs_app: App) -> None:
    job_id = duplicate_dlq_copies(sqs_app)
    assert FailedJobs(sqs_app).forget(job_id) is True
    assert dead_letters(sqs_app) == []
    duplicate_dlq_copies(sqs_app)
    assert FailedJobs(sqs_app).flush() == 1, "one job, however many copies"
    assert dead_letters(sqs_app) == []
    assert counts(sqs_app, "default")["ApproximateNumberOfMessages"] == 0


def test_a_redrive_copy_and_a_reasoned_copy_of_one_job_are_one_failed_job(sqs_app: App) -> None:
    """The redrive copy has no attributes: its envelope id makes it the same job; the reason comes from the other."""
    job_id = duplicate_dlq_copies(sqs_app, extra=0)
    (letter,) = dead_letters(sqs_app)
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=dlq_url(sqs_app, "default"), MessageBody=letter["Body"])  # as a redrive moves it
    sqs.change_message_visibility(
        QueueUrl=dlq_url(sqs_app, "default"), ReceiptHandle=letter["ReceiptHandle"], VisibilityTimeout=0
    )
    (job,) = FailedJobs(sqs_app).list()
    assert (job.id, job.copies, job.reason) == (job_id, 2, "tries_exhausted")


def test_messages_anyone_could_put_in_a_dlq_are_listed_not_fatal(sqs_app: App) -> None:
    sqs = aws.client("sqs")
    url = dlq_url(sqs_app, "default")
    deep = "[" * 100_000  # json.loads raises RecursionError, not ValueError
    sqs.send_message(QueueUrl=url, MessageBody=deep)
    sqs.send_message(
        QueueUrl=url,
        MessageBody="plain",
        MessageAttributes={"sqsjobs.attempts": {"DataType": "String", "StringValue": "many"}},
    )
    listed = FailedJobs(sqs_app).list()
    assert sorted(j.body[:5] for j in listed) == ["[[[[[", "plain"]
    assert {j.attempts for j in listed} == {0}
    assert FailedJobs(sqs_app).flush() == 2


# -- copies sharing one S3 object ------------------------------------------------------------------------


def keys(app: App) -> list[str]:
    listed = aws.client("s3").list_objects_v2(Bucket=app.settings.bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def test_forgetting_copies_that_share_an_object_deletes_it_once_at_the_end(s3_app: App) -> None:
    job_id = duplicate_dlq_copies(s3_app)
    (shared,) = keys(s3_app)
    deletes = s3_requests("DeleteObject")
    assert FailedJobs(s3_app).forget(job_id) is True
    assert dead_letters(s3_app) == []
    assert keys(s3_app) == []
    assert [d["Key"] for d in deletes] == [shared]


def test_retrying_copies_whose_object_cannot_be_read_for_now_keeps_the_object_the_retry_points_at(
    s3_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = duplicate_dlq_copies(s3_app, extra=2)
    (shared,) = keys(s3_app)
    store = FailedJobs(s3_app)
    real_resolve = store.connection.payloads.resolve

    def unreadable(message: ReceivedMessage) -> None:
        real_resolve(message)
        if message.pointer is not None:
            message.body = message.pointer.body
            message.payload_error = "S3 said no, for now"

    monkeypatch.setattr(store.connection.payloads, "resolve", unreadable)
    (retried,) = store.retry([job_id])
    assert retried.copies == 3
    assert dead_letters(s3_app) == []
    assert keys(s3_app) == [shared], "the retried message points at it: it must stay"
    assert counts(s3_app, "default")["ApproximateNumberOfMessages"] == 1

"""The DLQ as the failed-jobs store: list, show, retry, forget, flush — and the CLI on top."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from sqsjobs import App, Job, aws
from sqsjobs.cli import cli
from sqsjobs.failed_jobs import FailedJobs
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, dead_letters, drain, queue_url


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
    flushed = runner.invoke(cli, ["failed", "flush"])
    assert flushed.exit_code == 0 and "Deleted 1" in flushed.output
    assert dead_letters(sqs_app) == []
    assert len(drain(queue_url(sqs_app, "default"))) == 1

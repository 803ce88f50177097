"""The job log (SQSJOBS_JOB_LOG): status by id through a job's life, tags, and cancel before it starts,
against in-process moto (SQS and DynamoDB) through the strict layer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from sqsjobs import App, Job, PermanentError, aws, cancel, dispatch_many, job_status
from sqsjobs.cli import cli
from sqsjobs.events import JobEvent
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts

runner = CliRunner()


class Order(Job, name="joblog.order"):
    ran: ClassVar[list[int]] = []
    order_id: int
    customer: int = 1
    declined: bool = False

    def job_tags(self) -> list[str]:
        return [f"customer:{self.customer}", f"order:{self.order_id}"]

    def handle(self) -> None:
        Order.ran.append(self.order_id)
        if self.declined:
            raise PermanentError("card declined")


@pytest.fixture
def app(moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("SQSJOBS_TABLE", f"{prefix}table")
    monkeypatch.setenv("SQSJOBS_JOB_LOG", "true")
    monkeypatch.setenv("SQSJOBS_WORKER_BEAT", "0")
    application = App(connection="sqs", visibility_timeout=30)
    provision(application, ["default"], table=True, bucket=False)
    Order.ran.clear()
    with application.activate():
        yield application


def work(app: App) -> None:
    Worker(app, WorkerOptions(queues=["default"], sleep=1, stop_when_empty=True)).run(install_signals=False)


def test_a_job_is_queued_then_processed_or_failed_in_the_log(app: App) -> None:
    done = Order(order_id=1).dispatch()
    declined = Order(order_id=2, declined=True).dispatch()
    queued = job_status(done.job_id)
    assert queued is not None and queued.status == "queued" and queued.job == "joblog.order"
    assert queued.tags == ["customer:1", "order:1"] and queued.started_at is None
    work(app)
    finished = job_status(done.job_id)
    assert finished is not None and finished.status == "processed" and finished.attempts == 1
    assert finished.started_at is not None and finished.finished_at is not None
    failed = job_status(declined.job_id)
    assert failed is not None and failed.status == "failed" and "card declined" in failed.error
    assert job_status("no-such-id") is None


def test_a_cancelled_job_is_acknowledged_unrun(app: App) -> None:
    heard: list[JobEvent] = []
    app.events.on("cancelled", "processed")(heard.append)
    kept, dropped = dispatch_many([Order(order_id=3), Order(order_id=4)])
    assert cancel(dropped.job_id) == "cancelled"
    work(app)
    assert Order.ran == [3]
    assert set(counts(app, "default").values()) == {0}  # both messages gone: the cancelled one unrun
    status = job_status(dropped.job_id)
    assert status is not None and status.status == "cancelled"
    assert sorted((e.kind, e.job_id) for e in heard) == sorted(
        [("processed", kept.job_id), ("cancelled", dropped.job_id)]
    )
    assert cancel(kept.job_id) == "ended"


def test_a_job_dispatched_while_the_log_was_off_can_still_be_cancelled(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.settings = app.settings.model_copy(update={"job_log": False})
    unknown = Order(order_id=5).dispatch()
    assert job_status(unknown.job_id) is None
    assert cancel(unknown.job_id) == "cancelled"
    app.settings = app.settings.model_copy(update={"job_log": True})
    work(app)
    assert Order.ran == []


def test_the_cli_shows_a_job_lists_a_tag_and_cancels(app: App) -> None:
    first = Order(order_id=6, customer=42).dispatch()
    second = Order(order_id=7, customer=42).dispatch()
    Order(order_id=8, customer=7).dispatch()
    listed = runner.invoke(cli, ["jobs", "list", "--tag", "customer:42", "--json"])
    assert listed.exit_code == 0, listed.output
    ids = [j["job_id"] for j in json.loads(listed.stdout)["jobs"]]
    assert sorted(ids) == sorted([first.job_id, second.job_id])
    cancelled = runner.invoke(cli, ["jobs", "cancel", second.job_id])
    assert cancelled.exit_code == 0 and "Cancelled" in cancelled.output
    work(app)
    shown = runner.invoke(cli, ["jobs", "show", second.job_id, "--json"])
    assert json.loads(shown.stdout)["status"] == "cancelled"
    again = runner.invoke(cli, ["jobs", "cancel", first.job_id])
    assert again.exit_code == 1 and "already finished" in again.output
    missing = runner.invoke(cli, ["jobs", "show", "nope"])
    assert missing.exit_code == 1 and "No job nope" in missing.output


def test_tags_are_checked_at_dispatch(app: App) -> None:
    class Tagged(Job, name="joblog.tagged"):
        def job_tags(self) -> list[str]:
            return ["has space"]

        def handle(self) -> None:
            return None

    with pytest.raises(ValueError, match="tags must be"):
        Tagged().dispatch()


def test_a_job_log_write_that_fails_never_fails_the_dispatch(
    app: App, faults: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # each failed write fails at once (no backoff to wait out)
    aws.reset_clients()
    faults.add(service="dynamodb", operation="PutItem", kind="500", times=1000)
    sent = dispatch_many([Order(order_id=n) for n in range(25)])
    faults.clear()
    assert len(sent) == 25 and all(d.queued for d in sent)
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 25
    work(app)
    assert sorted(Order.ran) == list(range(25))


def test_a_job_run_before_its_queued_write_keeps_its_status(moto: None, prefix: str) -> None:
    """The sync connection runs a job inside dispatch: the `queued` write comes after, and must not win."""
    application = App(connection="sync", store="memory", job_log=True)
    with application.activate():
        ran = Order(order_id=9).dispatch()
        status = job_status(ran.job_id)
    assert status is not None and status.status == "processed" and status.started_at is not None
    with application.activate():
        assert cancel(ran.job_id) == "ended"

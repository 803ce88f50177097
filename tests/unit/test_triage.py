"""Failure triage in the runner: `discard` keeps a failure out of the DLQ, `alert_new` announces the first
failure of each exception type per job, against in-process moto through the strict layer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from sqsjobs import App, Job, PermanentError, aws
from sqsjobs.cli import cli
from sqsjobs.events import JobEvent
from sqsjobs.provisioning import provision
from sqsjobs.triage import alert_new, discard, retry_later
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, dead_letters, dlq_url, queue_url


class RowGone(PermanentError):
    """The row a job was queued for was deleted since."""


class GatewayDown(PermanentError):
    pass


class Charge(Job, name="triage.charge"):
    triage = [discard(RowGone)]
    failed_with: ClassVar[list[str]] = []
    error: str = "gone"

    def handle(self) -> None:
        if self.error == "gone":
            raise RowGone("order 7 no longer exists")
        raise GatewayDown("the gateway answered 503")

    def failed(self, exc: BaseException) -> None:
        Charge.failed_with.append(type(exc).__name__)


class Plain(Job, name="triage.plain"):
    n: int

    def handle(self) -> None:
        raise GatewayDown("down")


@pytest.fixture
def app(moto: None, prefix: str) -> Iterator[App]:
    """sqs connection, coordination in memory (alert_new remembers there)."""
    application = App(connection="sqs", queue_prefix=prefix, store="memory", visibility_timeout=30)
    provision(application, ["default"], table=False, bucket=False)
    Charge.failed_with.clear()
    with application.activate():
        yield application


def work(app: App) -> None:
    Worker(app, WorkerOptions(queues=["default"], sleep=1, stop_when_empty=True)).run(install_signals=False)


def test_a_discarded_failure_is_not_in_the_dlq_and_failed_still_runs(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqsjobs.runner")
    events: list[JobEvent] = []
    app.events.on("failed")(events.append)
    gone = Charge(error="gone").dispatch()
    down = Charge(error="down").dispatch()
    work(app)
    letters = dead_letters(app)
    assert [letter["MessageAttributes"]["sqsjobs.job_id"]["StringValue"] for letter in letters] == [down.job_id]
    assert sorted(Charge.failed_with) == ["GatewayDown", "RowGone"]
    assert sorted(e.job_id for e in events) == sorted([gone.job_id, down.job_id])
    assert set(counts(app, "default").values()) == {0}
    assert any("discarded by a triage rule" in r.getMessage() and gone.job_id in r.getMessage() for r in caplog.records)


def test_an_app_rule_discards_a_reason_for_every_job(moto: None, prefix: str) -> None:
    application = App(
        connection="sqs",
        queue_prefix=prefix,
        store="memory",
        triage=[discard("invalid_payload")],
        visibility_timeout=30,
    )
    provision(application, ["default"], table=False, bucket=False)
    with application.activate():
        url = queue_url(application, "default")
        good = Plain(n=1).dispatch()
        body = aws.client("sqs").receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"][0]["Body"]
        aws.client("sqs").send_message(QueueUrl=url, MessageBody=body.replace('"n":1', '"n":"not a number"'))
        work(application)
        kept = {letter["MessageAttributes"]["sqsjobs.reason"]["StringValue"] for letter in dead_letters(application)}
    assert kept == {"permanent"}  # the valid job's own failure; the invalid payload was discarded
    assert good.queued


def test_alert_new_announces_each_exception_type_once_per_job(moto: None, prefix: str) -> None:
    application = App(
        connection="sqs", queue_prefix=prefix, store="memory", triage=[alert_new()], visibility_timeout=30
    )
    provision(application, ["default"], table=False, bucket=False)
    new: list[JobEvent] = []
    application.events.on("new_failure")(new.append)
    with application.activate():
        for n in range(3):
            Plain(n=n).dispatch()
        Charge(error="down").dispatch()
        work(application)
        assert sorted((e.job_name, e.error_type) for e in new) == [
            ("triage.charge", "GatewayDown"),
            ("triage.plain", "GatewayDown"),
        ]
        assert len(dead_letters(application)) == 4  # alerting keeps every copy
        Plain(n=9).dispatch()
        work(application)
    assert len(new) == 2  # known by now: no second alert


def test_a_rule_refuses_what_it_cannot_match() -> None:
    with pytest.raises(TypeError, match="exception types and failure reasons"):
        discard(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be negative"):
        retry_later(GatewayDown, after=-1)


def test_recorded_matching_knows_subclasses_by_name() -> None:
    rule = retry_later(PermanentError, after=60)
    assert rule.matches_recorded("permanent", "GatewayDown")
    assert not rule.matches_recorded("permanent", "ValueError")
    assert retry_later("tries_exhausted", after=1).matches_recorded("tries_exhausted", "AnyError")


class Flaky(Job, name="triage.flaky"):
    triage = [retry_later(GatewayDown, after=0)]
    healed: ClassVar[bool] = False
    ran: ClassVar[int] = 0

    def handle(self) -> None:
        Flaky.ran += 1
        if not Flaky.healed:
            raise GatewayDown("still down")


class Later(Job, name="triage.later"):
    triage = [retry_later(GatewayDown, after=3600)]

    def handle(self) -> None:
        raise GatewayDown("down for a while")


def dlq_depth(app: App) -> int:
    """Without receiving (a receive would hide them from the CLI's read)."""
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=dlq_url(app, "default"), AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def test_failed_triage_retries_what_a_retry_later_rule_says_is_due(
    moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("SQSJOBS_STORE", "memory")
    monkeypatch.setenv("SQSJOBS_QUEUES", "default")
    Flaky.healed, Flaky.ran = False, 0
    application = App(connection="sqs", visibility_timeout=30)
    provision(application, ["default"], table=False, bucket=False)
    with application.activate():
        flaky = Flaky().dispatch()
        Later().dispatch()
        Plain(n=1).dispatch()  # no rule: stays for a person
        work(application)
    assert dlq_depth(application) == 3

    runner = CliRunner()
    dry = runner.invoke(cli, ["failed", "triage", "--dry-run"], terminal_width=200)
    assert dry.exit_code == 0, dry.output
    assert "Would retry 1 job(s)" in dry.output and flaky.job_id in dry.output and "1 more wait" in dry.output
    assert dlq_depth(application) == 3  # a dry run sends nothing

    done = runner.invoke(cli, ["failed", "triage"], terminal_width=200)
    assert done.exit_code == 0, done.output
    assert "Retried 1 job(s)" in done.output and flaky.job_id in done.output
    kept = sorted(letter["MessageAttributes"]["sqsjobs.job"]["StringValue"] for letter in dead_letters(application))
    assert kept == ["triage.later", "triage.plain"]
    Flaky.healed = True
    with application.activate():
        work(application)
    assert Flaky.ran == 2  # its first run, and the one triage sent back


def test_a_broad_discard_never_drops_what_sqsjobs_itself_refused(moto: None, prefix: str) -> None:
    """`discard(PermanentError)` is about the job's own errors: a message naming no registered job (a
    producer deployed ahead of the workers) and a tampered body still go to the DLQ."""
    application = App(
        connection="sqs", queue_prefix=prefix, store="memory", triage=[discard(PermanentError)], visibility_timeout=30
    )
    provision(application, ["default"], table=False, bucket=False)
    with application.activate():
        url = queue_url(application, "default")
        Plain(n=1).dispatch()  # raises GatewayDown (a PermanentError of its own): discarded
        body = aws.client("sqs").receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"][0]["Body"]
        aws.client("sqs").send_message(QueueUrl=url, MessageBody=body.replace("triage.plain", "triage.not-yet"))
        aws.client("sqs").send_message(QueueUrl=url, MessageBody="{not json")
        work(application)
        kept = sorted(
            letter["MessageAttributes"]["sqsjobs.reason"]["StringValue"] for letter in dead_letters(application)
        )
    assert kept == ["malformed", "unknown_job"]


def test_retry_later_gives_up_after_its_times(moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("SQSJOBS_QUEUES", "default")
    application = App(connection="sqs", visibility_timeout=30, store="memory")
    provision(application, ["default"], table=False, bucket=False)
    store = application.store
    Flaky.healed, Flaky.ran = False, 0
    with application.activate():
        Flaky().dispatch()
        work(application)
    runner = CliRunner()
    # The CLI builds its own App: share this one's memory store with it, as a table would be shared.
    monkeypatch.setattr(App, "store", property(lambda self: store))
    for round_ in range(3):
        result = runner.invoke(cli, ["failed", "triage"], terminal_width=200)
        assert result.exit_code == 0 and "Retried 1 job(s)" in result.output, (round_, result.output)
        with application.activate():
            work(application)
    last = runner.invoke(cli, ["failed", "triage"], terminal_width=200)
    assert "Retried 0 job(s)" in last.output and "as many times as their rule allows" in last.output
    assert Flaky.ran == 4 and dlq_depth(application) == 1  # its own run and three retries; then left

"""`sqsjobs failed` reads `sqsjobs.*` attributes as data anyone with send rights on a DLQ (or on a queue,
through its redrive) can write: checked, bounded, shown "(unverified)" when they do not check out, never
a crash and never a reason to send a job to a queue it did not come from.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sqsjobs import App, Job, aws
from sqsjobs.cli import cli
from sqsjobs.connections.base import ReceivedMessage
from sqsjobs.failed_jobs import FailedJobs, verify_failed_job
from sqsjobs.failures import _LIMITS, MAX_ATTEMPTS, PREFIX
from sqsjobs.registry import Registry
from sqsjobs.timing import utc_iso
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, dead_letters, dlq_url, drain


class _Runner:
    """typer's CliRunner, with the `sqsjobs` logger put back after each command: the CLI points it at
    the runner's own streams, which are closed once the command returns (a worker run later in the
    same test would log into them)."""

    def invoke(self, *args: Any, **kwargs: Any) -> Any:
        logger = logging.getLogger("sqsjobs")
        saved = (list(logger.handlers), logger.propagate, logger.level)
        try:
            return CliRunner().invoke(*args, **kwargs)
        finally:
            logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


runner = _Runner()


class Fails(Job, name="trust.fails"):
    tries = 1
    fixed: ClassVar[bool] = False
    runs: ClassVar[list[str]] = []
    n: int = 0

    def handle(self) -> None:
        Fails.runs.append(self.job_id or "")
        if not Fails.fixed:
            raise RuntimeError("broken")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Fails.fixed = False
    Fails.runs.clear()


@pytest.fixture
def app(sqs_app: App, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """`sqs_app` (queues default and high, each with its DLQ), with the CLI pointed at it, and a queue
    `outsider` that exists in the account but is no queue of this app."""
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", sqs_app.settings.queue_prefix)
    monkeypatch.setenv("SQSJOBS_QUEUES", "default,high")
    aws.client("sqs").create_queue(QueueName=f"{sqs_app.settings.queue_prefix}outsider")
    yield sqs_app


def outsider_url(app: App) -> str:
    return str(aws.client("sqs").get_queue_url(QueueName=f"{app.settings.queue_prefix}outsider")["QueueUrl"])


def depth(url: str) -> int:
    attrs = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def to_dlq(app: App, body: str, queue: str = "default", **attributes: Any) -> None:
    """A message put straight into `queue`'s DLQ; str attributes are Strings, bytes are Binary."""
    sent: dict[str, Any] = {}
    for name, value in attributes.items():
        if isinstance(value, bytes):
            sent[name] = {"DataType": "Binary", "BinaryValue": value}
        else:
            sent[name] = {"DataType": "String", "StringValue": value}
    aws.client("sqs").send_message(QueueUrl=dlq_url(app, queue), MessageBody=body, MessageAttributes=sent)


def envelope(job_id: str, queue: str = "default", **extra: Any) -> str:
    return json.dumps(
        {
            "v": 1,
            "id": job_id,
            "job": Fails.job_name,
            "payload": {"n": 1},
            "queue": queue,
            "dispatched_at": utc_iso(0),
            **extra,
        }
    )


def work(app: App) -> None:
    assert Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0


def attrs(**values: str) -> dict[str, str]:
    return {PREFIX + name: value for name, value in values.items()}


# -- source_queue ---------------------------------------------------------------------------------------


def test_a_forged_source_queue_on_a_real_failed_job_is_ignored_and_the_job_goes_home(app: App) -> None:
    """The attack: a copy of a failed job whose `sqsjobs.source_queue` says `high` (another queue of the app)."""
    job = Fails().dispatch()
    work(app)
    (letter,) = dead_letters(app)
    forged = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items() if k.startswith(PREFIX)}
    forged[PREFIX + "source_queue"] = "high"
    aws.client("sqs").delete_message(QueueUrl=dlq_url(app, "default"), ReceiptHandle=letter["ReceiptHandle"])
    to_dlq(app, letter["Body"], **forged)

    (listed,) = FailedJobs(app).list()
    assert (listed.id, listed.queue) == (job.job_id, "default")
    assert "queue" not in listed.unverified and "source_queue" in listed.rejected
    shown = runner.invoke(cli, ["failed", "show", job.job_id], terminal_width=200)
    assert shown.exit_code == 0 and "sqsjobs.source_queue" in shown.output

    Fails.fixed = True
    retried = runner.invoke(cli, ["failed", "retry", job.job_id])
    assert retried.exit_code == 0, retried.output
    assert counts(app, "high")["ApproximateNumberOfMessages"] == 0, "never sent where the attribute said"
    work(app)
    assert Fails.runs == [job.job_id, job.job_id]


@pytest.mark.parametrize(
    "body, source",
    [
        ("not an envelope", "outsider"),
        ("not an envelope", "high"),
        ("not an envelope", "x" * 300),
        (envelope("e-1", queue="outsider"), "outsider"),
        (envelope("e-2", queue="outsider"), ""),
    ],
    ids=["junk body, queue of another app", "junk body, another DLQ's queue", "overlong", "envelope agrees", "env"],
)
def test_an_unverifiable_source_queue_keeps_the_job_in_the_dlq_and_retry_says_why(
    app: App, body: str, source: str
) -> None:
    job_id = json.loads(body)["id"] if body.startswith("{") else "forged-1"
    extra = attrs(job_id=job_id, reason="permanent", source_queue=source) if source else attrs(job_id=job_id)
    to_dlq(app, body, **extra)

    retried = runner.invoke(cli, ["failed", "retry", job_id])
    assert depth(outsider_url(app)) == 0
    assert counts(app, "high")["ApproximateNumberOfMessages"] == 0
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 0
    assert retried.exit_code == 1, retried.output
    assert "Not retried" in retried.output and "source queue" in retried.output
    (job,) = FailedJobs(app).list()
    assert job.id == job_id and "queue" in job.unverified, "it stays in the DLQ"

    listed = runner.invoke(cli, ["failed", "list"], terminal_width=250)
    assert listed.exit_code == 0 and "(unverified)" in listed.output

    all_ = runner.invoke(cli, ["failed", "retry", "--all"])
    assert all_.exit_code == 1 and "Not retried" in all_.output
    assert depth(outsider_url(app)) == 0


def test_a_message_naming_no_queue_in_a_dlq_with_one_source_goes_back_to_that_source(app: App) -> None:
    to_dlq(app, "no envelope, no attributes")
    (job,) = FailedJobs(app).list()
    assert (job.queue, job.unverified) == ("default", ())
    assert [j.id for j in FailedJobs(app).retry([job.id])] == [job.id]
    assert [m["Body"] for m in drain(app_url(app))] == ["no envelope, no attributes"]


def app_url(app: App, queue: str = "default") -> str:
    return str(aws.client("sqs").get_queue_url(QueueName=app.settings.physical_queue_name(queue))["QueueUrl"])


def test_a_redriven_message_can_carry_forged_attributes_and_they_are_not_believed(app: App) -> None:
    """docs/failed-jobs.md used to say a redrive copy has no sqsjobs.* attributes: a sender can give it some."""
    sqs = aws.client("sqs")
    sqs.send_message(
        QueueUrl=app_url(app),
        MessageBody="crash loop",
        MessageAttributes={
            f"{PREFIX}{k}": {"DataType": "String", "StringValue": v}
            for k, v in {"source_queue": "outsider", "attempts": "²", "reason": "tries_exhausted"}.items()
        },
    )
    policy = sqs.get_queue_attributes(QueueUrl=app_url(app), AttributeNames=["RedrivePolicy"])["Attributes"]
    # provisioning raises maxReceiveCount above the largest `tries` of every job this process has imported
    for _ in range(int(json.loads(policy["RedrivePolicy"])["maxReceiveCount"]) + 1):  # a consumer that never decides
        for message in sqs.receive_message(QueueUrl=app_url(app), VisibilityTimeout=0).get("Messages", []):
            assert message["Body"] == "crash loop"
    (job,) = FailedJobs(app).list()
    assert job.reason == "tries_exhausted" and job.queue == "outsider"
    assert {"queue", "attempts"} <= set(job.unverified)
    assert FailedJobs(app).retry([job.id]) == []
    assert depth(outsider_url(app)) == 0


# -- never a crash --------------------------------------------------------------------------------------

DEEP = "[" * 100_000
HOSTILE: dict[str, tuple[str, dict[str, Any]]] = {
    "attempts superscript": ("plain", attrs(attempts="²")),
    "attempts arabic digits": ("plain", attrs(attempts="١٢")),
    "attempts negative": ("plain", attrs(attempts="-1")),
    "attempts huge": ("plain", attrs(attempts="9" * 300)),
    "attempts binary": ("plain", {PREFIX + "attempts": b"\xff\xfe"}),
    "source_queue binary": ("plain", {PREFIX + "source_queue": b"\x80\x81 not utf-8"}),
    "failed_at junk": ("plain", attrs(failed_at="yesterday")),
    "failed_at year 0": ("plain", attrs(failed_at="0001-01-01T00:00:00-23:59")),
    "failed_at before year 1 in UTC": ("plain", attrs(failed_at="0001-01-01T00:00:00+23:59")),
    "failed_at after year 9999 in UTC": ("plain", attrs(failed_at="9999-12-31T23:59:59-23:59")),
    "failed_at no zone": ("plain", attrs(failed_at="2026-01-01T00:00:00")),
    "reason markup": ("plain", attrs(reason="[bold red]boom[/] \x9b2J \u202e")),
    "reason huge": ("plain", attrs(reason="r" * 100_000)),
    "error huge": ("plain", attrs(error="e" * 200_000, traceback="t\n" * 100_000)),
    "job huge": ("plain", attrs(job="j" * 100_000, job_id="huge-job")),
    "job_id control characters": ("plain", attrs(job_id="a\x9b31mb\u202e")),
    "job_id huge": ("plain", attrs(job_id="i" * 10_000)),
    "deep json": (DEEP, attrs(attempts="²")),
    "deep object": ('{"a":' * 50_000, {}),
    "deep but parseable": ("[" * 900 + "]" * 900, {}),
    "deep envelope payload": (
        envelope("deep-env", payload={"x": json.loads("[" * 500 + "]" * 500)}),
        attrs(attempts="1"),
    ),
    "escaped surrogates": ('{"id": "\\ud800", "job": "\\udfff", "queue": "\\ud800x"}', {}),
    "envelope with forged everything": (
        envelope("forged-env"),
        attrs(job_id="other", job="nope", source_queue="outsider", attempts="x", reason="?", failed_at="now"),
    ),
    "huge numbers": ('{"id": 1e999999, "job": 123456789012345678901234567890}', {}),
}


@pytest.fixture
def hostile_dlq(app: App) -> App:
    for body, attributes in HOSTILE.values():
        to_dlq(app, body, **attributes)
    return app


def test_list_and_show_never_crash_on_what_a_dlq_holds(hostile_dlq: App) -> None:
    listed = runner.invoke(cli, ["failed", "list"], terminal_width=250)
    assert listed.exception is None, listed.output[-2000:]
    assert listed.exit_code == 0 and "(unverified)" in listed.output
    for verb in (["list", "--json"], ["summary"], ["summary", "--json"]):
        shown = runner.invoke(cli, ["failed", *verb], terminal_width=250)
        assert shown.exception is None and shown.exit_code == 0, (verb, shown.output[-2000:])
    jobs = FailedJobs(hostile_dlq).list()
    assert len(jobs) == len(HOSTILE)
    for job in jobs:
        assert 0 <= job.attempts <= MAX_ATTEMPTS
        assert len(job.reason) <= _LIMITS["reason"] and len(job.error) <= _LIMITS["error"]
        assert len(job.id) <= _LIMITS["job_id"] and len(job.queue) <= _LIMITS["source_queue"]
        for full in ([], ["--full"]):
            shown = runner.invoke(cli, ["failed", "show", job.id, *full], terminal_width=200)
            assert shown.exception is None and shown.exit_code == 0, (job.id, shown.output[-2000:])
            assert "\x9b" not in shown.output and "\u202e" not in shown.output


def test_retry_forget_and_flush_never_crash_on_what_a_dlq_holds(hostile_dlq: App) -> None:
    jobs = FailedJobs(hostile_dlq).list()
    retried = runner.invoke(cli, ["failed", "retry", "--all"])
    assert retried.exception is None or isinstance(retried.exception, SystemExit), retried.output[-2000:]
    assert retried.exit_code == 1 and "Not retried" in retried.output, "the unverifiable ones stay"
    assert depth(outsider_url(hostile_dlq)) == 0
    assert counts(hostile_dlq, "high")["ApproximateNumberOfMessages"] == 0
    left = FailedJobs(hostile_dlq).list()
    assert left and all("queue" in job.unverified for job in left)
    assert len(left) < len(jobs), "the verifiable ones went back to default"

    first, *rest = left
    forgot = runner.invoke(cli, ["failed", "forget", first.id])
    assert forgot.exception is None and forgot.exit_code == 0, forgot.output[-2000:]
    flushed = runner.invoke(cli, ["failed", "flush", "--yes"])
    assert flushed.exception is None and flushed.exit_code == 0, flushed.output[-2000:]
    assert f"Deleted {len(rest)} failed job(s)" in flushed.output
    assert dead_letters(hostile_dlq) == []


# -- the property ---------------------------------------------------------------------------------------

_NAMES = [*_LIMITS, "other"]
_TEXT = st.one_of(
    st.text(max_size=50),
    st.text(alphabet=string.digits + "²³¹١٢٣-+ .e", max_size=12),
    st.sampled_from(["default", "high", "outsider", "", "0", "1", "2026-01-01T00:00:00Z", "redrive"]),
    st.integers(min_value=0, max_value=5000).map(lambda n: "x" * n),
)
_BODIES = st.one_of(
    st.text(max_size=200),
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=3000).map(lambda n: '{"a":' * n),
    st.builds(
        lambda i, j, q: json.dumps({"id": i, "job": j, "queue": q}),
        _TEXT,
        _TEXT,
        _TEXT,
    ),
)
_REGISTRY = Registry()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attributes=st.dictionaries(st.sampled_from(_NAMES).map(lambda n: PREFIX + n), _TEXT, max_size=10),
    body=_BODIES,
    sources=st.sets(st.sampled_from(["default", "high"]), max_size=2).map(frozenset),
)
def test_reading_any_dlq_message_is_bounded_and_believes_only_what_checks_out(
    attributes: dict[str, str], body: str, sources: frozenset[str]
) -> None:
    message = ReceivedMessage("default", "mid-1", "rh", body, 1, 0.0, attributes=attributes)
    job = verify_failed_job(message, sources=sources, registry=_REGISTRY, envelope=None)
    assert 0 <= job.attempts <= MAX_ATTEMPTS
    for name in ("reason", "error", "traceback", "error_type", "job"):
        assert len(getattr(job, name)) <= _LIMITS[name]
    assert len(job.queue) <= _LIMITS["source_queue"] and 0 < len(job.id) <= _LIMITS["job_id"]
    assert job.queue in sources or "queue" in job.unverified, "a queue shown as verified is one of the sources"
    if job.job != "?":
        assert "job" in job.unverified, "no job is registered here"

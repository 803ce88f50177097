"""The daily review: `failed list|summary|retry|flush|prune` with filters, `--json`, batched retries, and
confirmation before deleting -- judged on what DLQ copies prove, never on what a forged attribute claims.

In-process moto through the strict-rules layer; failed jobs come from a worker running jobs that fail, or,
where a test needs many or a crafted time, from messages sent to the DLQ as a redrive or a forger would.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from sqsjobs import App, Job, PermanentError, aws
from sqsjobs.cli import cli
from sqsjobs.cli import failed_review as review_cli
from sqsjobs.dispatch_plan import build_message
from sqsjobs.failed_filters import parse_duration, parse_filter, parse_moment
from sqsjobs.failed_jobs import FailedJobs
from sqsjobs.failures import PREFIX
from sqsjobs.provisioning import provision
from sqsjobs.testing.faults import FaultPlan
from sqsjobs.timing import utc_iso
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, dlq_url, drain, sqs_requests

KEY = "failed-review-" + "k" * 40
DAY = 86400.0


class Broken(Job, name="review.broken"):
    tries = 1
    fixed: ClassVar[bool] = False
    runs: ClassVar[list[str]] = []
    n: int = 0
    data: str = ""

    def handle(self) -> None:
        Broken.runs.append(self.job_id or "")
        if not Broken.fixed:
            raise RuntimeError(f"broken {self.n}")


class Refused(Job, name="review.refused"):
    tries = 3
    runs: ClassVar[list[str]] = []
    n: int = 0

    def handle(self) -> None:
        Refused.runs.append(self.job_id or "")
        raise PermanentError("no such invoice")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Broken.fixed = False
    Broken.runs = []
    Refused.runs = []


def invoke(*args: str, **kwargs: Any) -> Any:
    """The CLI, with the `sqsjobs` logger put back afterwards (the CLI points it at the runner's streams,
    closed once it returns, and a worker run later in the test would log into them)."""
    logger = logging.getLogger("sqsjobs")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    try:
        return CliRunner().invoke(cli, list(args), terminal_width=250, **kwargs)
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


def point_cli(monkeypatch: pytest.MonkeyPatch, app: App, signed: bool = False) -> None:
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", app.settings.queue_prefix)
    monkeypatch.setenv("SQSJOBS_QUEUES", "default,high")
    monkeypatch.setenv("SQSJOBS_APP", __name__)
    if signed:
        monkeypatch.setenv("SQSJOBS_SIGNING_KEY", KEY)
        monkeypatch.setenv("SQSJOBS_SIGNING_MAX_AGE", "300")


@pytest.fixture
def app(sqs_app: App, monkeypatch: pytest.MonkeyPatch) -> App:
    point_cli(monkeypatch, sqs_app)
    return sqs_app


@pytest.fixture
def signed(moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    the_app = App(
        connection="sqs", queue_prefix=prefix, queues=["default", "high"], visibility_timeout=30, signing_key=KEY,
        signing_max_age=300,
    )  # fmt: skip
    provision(the_app, ["default", "high"], table=False, bucket=False)
    point_cli(monkeypatch, the_app, signed=True)
    with the_app.activate():
        yield the_app


def work(app: App) -> None:
    assert Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0


def fail_some(app: App) -> tuple[list[str], str]:
    """Two `review.broken` jobs whose tries ran out and one `review.refused` that failed for good."""
    broken = [Broken(n=i).dispatch().job_id for i in range(2)]
    refused = Refused(n=9).dispatch().job_id
    work(app)
    return [str(i) for i in broken], str(refused)


def json_of(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def in_dlq(app: App, queue: str = "default") -> list[dict[str, Any]]:
    """The DLQ's messages, left visible for the verbs."""
    out = drain(dlq_url(app, queue), visibility=30)
    sqs = aws.client("sqs")
    for message in out:
        sqs.change_message_visibility(
            QueueUrl=dlq_url(app, queue), ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    return out


def resend(app: App, job_id: str, **changes: str) -> None:
    """Replace the DLQ copy of `job_id` by one whose sqsjobs.* attributes differ as `changes` say."""
    sqs = aws.client("sqs")
    url = dlq_url(app, "default")
    for message in drain(url, visibility=30):
        attributes = {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}
        if attributes.get(PREFIX + "job_id") == job_id:
            attributes |= {PREFIX + k: v for k, v in changes.items()}
            sqs.send_message(
                QueueUrl=url,
                MessageBody=message["Body"],
                MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
            )
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        else:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)


def envelope(job_id: str, n: int = 0, data: str = "") -> str:
    """An unsigned `review.broken` envelope, as a redrive moves it to the DLQ (no sqsjobs.* attributes)."""
    return json.dumps(
        {
            "v": 1,
            "id": job_id,
            "job": Broken.job_name,
            "payload": {"n": n, "data": data},
            "queue": "default",
            "dispatched_at": utc_iso(time.time()),
        }
    )


# -- filters and --json ---------------------------------------------------------------------------------


def test_list_filters_by_reason_and_job_and_prints_one_json_document(app: App) -> None:
    broken, refused = fail_some(app)
    listed = json_of(invoke("failed", "list", "--reason", "tries_exhausted", "--json"))
    assert sorted(j["id"] for j in listed["jobs"]) == sorted(broken)
    assert all(
        (j["job"], j["reason"], j["queue"], j["unverified"], j["copies"])
        == ("review.broken", "tries_exhausted", "default", [], 1)
        for j in listed["jobs"]
    )
    assert listed["count"] == 2 and listed["incomplete"] == []

    (only,) = json_of(invoke("failed", "list", "--job", "review.refused", "--json"))["jobs"]
    assert (only["id"], only["reason"], only["error"]) == (refused, "permanent", "no such invoice")
    both = json_of(invoke("failed", "list", "--reason", "permanent,tries_exhausted", "--json"))
    assert sorted(j["id"] for j in both["jobs"]) == sorted([*broken, refused])
    assert json_of(invoke("failed", "list", "--reason", "timeout", "--json"))["jobs"] == []
    assert json_of(invoke("failed", "list", "--older-than", "1h", "--json"))["jobs"] == [], "they failed just now"
    assert len(json_of(invoke("failed", "list", "--since", "1h", "--json"))["jobs"]) == 3

    table = invoke("failed", "list", "--reason", "permanent")
    assert table.exit_code == 0 and refused in table.output and not any(i in table.output for i in broken)


def test_summary_counts_by_queue_job_and_reason(app: App) -> None:
    broken, _ = fail_some(app)
    (letter,) = [m for m in in_dlq(app) if m["MessageAttributes"][PREFIX + "job_id"]["StringValue"] == broken[0]]
    aws.client("sqs").send_message(  # a second DLQ copy of one job (a worker died after the DLQ write)
        QueueUrl=dlq_url(app, "default"), MessageBody=letter["Body"], MessageAttributes=letter["MessageAttributes"]
    )
    summary = json_of(invoke("failed", "summary", "--json"))
    rows = {(g["queue"], g["job"], g["reason"]): (g["jobs"], g["copies"], g["unverified"]) for g in summary["groups"]}
    assert rows == {
        ("default", "review.broken", "tries_exhausted"): (2, 3, []),
        ("default", "review.refused", "permanent"): (1, 1, []),
    }
    assert (summary["jobs"], summary["copies"]) == (3, 4)
    first = summary["groups"][0]
    assert first["oldest"] <= first["newest"] and first["job"] == "review.broken", "most jobs first"
    narrowed = json_of(invoke("failed", "summary", "--job", "review.refused", "--json"))
    assert [(g["job"], g["jobs"]) for g in narrowed["groups"]] == [("review.refused", 1)]

    table = invoke("failed", "summary")
    assert table.exit_code == 0 and "3 failed job(s) in 2 group(s)" in table.output


def test_json_carries_values_as_data_never_markup_or_terminal_escapes(app: App) -> None:
    error = "[bold red]not markup[/] \x9b2J\u202e done"  # CSI (C1) and a bidi override: SQS takes both
    aws.client("sqs").send_message(
        QueueUrl=dlq_url(app, "default"),
        MessageBody=envelope("crafted-1"),
        MessageAttributes={
            PREFIX + "reason": {"DataType": "String", "StringValue": "tries_exhausted"},
            PREFIX + "error": {"DataType": "String", "StringValue": error},
        },
    )
    result = invoke("failed", "list", "--json")
    (job,) = json_of(result)["jobs"]
    assert job["error"] == error, "the value itself, not a cleaned copy"
    assert "\x9b" not in result.stdout and "\u202e" not in result.stdout, "JSON escapes what a terminal would obey"


def test_bad_filter_values_are_usage_errors(app: App) -> None:
    for args in (["--since", "yesterday"], ["--reason", "Tries Exhausted"], ["--since", "1h", "--older-than", "2h"]):
        result = invoke("failed", "list", *args)
        assert result.exit_code == 2, (args, result.output)
    assert invoke("failed", "retry", "some-id", "--reason", "timeout").exit_code == 2, "ids or filters, not both"
    fail_some(app)
    for verb in (["retry"], ["flush", "--yes"]):
        assert invoke("failed", *verb, "--job", "").exit_code == 2, "an empty filter is a slip, never 'all'"
    assert len(in_dlq(app)) == 3


def test_durations_and_times_parse_as_documented() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("2h") == 7200 and parse_duration("1d12h") == 1.5 * DAY
    assert parse_moment("7d", now=10 * DAY) == 3 * DAY
    assert parse_moment("2026-01-31T09:00:00", now=0) == parse_moment("2026-01-31T09:00:00Z", now=0), "no zone: UTC"
    assert parse_moment("2026-01-31T10:00:00+01:00", now=0) == parse_moment("2026-01-31T09:00:00Z", now=0)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_moment("soon", now=0)
    with pytest.raises(ValueError, match="nothing could match"):
        parse_filter(since="1h", older_than="2h", now=DAY)


# -- retry by filter, in batches ------------------------------------------------------------------------


def test_retry_by_job_brings_back_exactly_those_and_they_run(app: App) -> None:
    broken, refused = fail_some(app)
    batches = sqs_requests("SendMessageBatch")
    singles = sqs_requests("SendMessage")
    Broken.fixed = True
    Broken.runs, Refused.runs = [], []
    result = invoke("failed", "retry", "--job", "review.broken")
    assert result.exit_code == 0 and "Retried 2 job(s)." in result.output, result.output
    assert [len(b["Entries"]) for b in batches] == [2] and singles == [], "one SendMessageBatch for both"
    work(app)
    assert sorted(Broken.runs) == sorted(broken) and Refused.runs == []
    assert [j.id for j in FailedJobs(app).list()] == [refused], "the other job stays failed"


def test_bulk_retry_sends_batches_of_ten_within_one_mib(app: App) -> None:
    sqs = aws.client("sqs")
    url = dlq_url(app, "default")
    for start in (0, 10):
        sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": envelope(f"small-{start + i}", i)} for i in range(10)]
        )
    big = "x" * 300_000  # four of these do not fit in one call's 1 MiB
    for i in range(4):
        sqs.send_message(QueueUrl=url, MessageBody=envelope(f"big-{i}", i, big))
    batches = sqs_requests("SendMessageBatch")
    result = invoke("failed", "retry", "--all")
    assert result.exit_code == 0 and "Retried 24 job(s)." in result.output, result.output
    sizes = [sum(len(e["MessageBody"].encode()) for e in b["Entries"]) for b in batches]
    assert all(len(b["Entries"]) <= 10 for b in batches) and max(sizes) <= 1_048_576
    assert sum(len(b["Entries"]) for b in batches) == 24 and len(batches) == 4, [len(b["Entries"]) for b in batches]
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 24 and in_dlq(app) == []


def test_a_batch_sqs_will_not_take_leaves_every_job_in_the_dlq(
    app: App, faults: FaultPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken, _ = fail_some(app)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    aws.reset_clients()
    faults.add(service="sqs", operation="SendMessageBatch", kind="500")
    result = invoke("failed", "retry", "--reason", "tries_exhausted")
    assert result.exit_code == 1 and "Retried 0 job(s)." in result.output, result.output
    assert all(f"Not retried: {job_id}: SQS did not take it" in result.output for job_id in broken)
    assert len(in_dlq(app)) == 3 and counts(app, "default")["ApproximateNumberOfMessages"] == 0


# -- what a forged attribute cannot do -----------------------------------------------------------------------


def test_a_forged_copy_cannot_drag_a_job_into_a_filtered_flush(app: App) -> None:
    """Signing off: a copy of a failed job's body with another reason and a later time speaks for the job in
    `list`, but the worker's own copy disagrees: no filter deletes the job on the forger's word."""
    broken, _ = fail_some(app)
    (letter,) = [m for m in in_dlq(app) if m["MessageAttributes"][PREFIX + "job_id"]["StringValue"] == broken[0]]
    attributes = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
    attributes |= {PREFIX + "reason": "forged_kind", PREFIX + "failed_at": utc_iso(time.time() + DAY)}
    aws.client("sqs").send_message(
        QueueUrl=dlq_url(app, "default"),
        MessageBody=letter["Body"],
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    )
    flushed = invoke("failed", "flush", "--reason", "forged_kind", "--yes")
    assert flushed.exit_code == 0 and "Deleted 0 failed job(s)." in flushed.output, flushed.output
    assert "1 job(s) that match only on values their DLQ copies do not prove" in flushed.output
    assert len(in_dlq(app)) == 4, "both copies of the job stay"
    assert json_of(invoke("failed", "list", "--reason", "forged_kind", "--json"))["jobs"] == []
    (shown,) = json_of(invoke("failed", "list", "--reason", "forged_kind", "--include-unverified", "--json"))["jobs"]
    assert shown["id"] == broken[0] and shown["matched_on_unverified"] and shown["copies"] == 2


def test_a_forged_reason_is_not_selected_by_a_filtered_retry_with_signing_on(signed: App) -> None:
    """An old signed body dropped in the DLQ with `sqsjobs.reason=tries_exhausted`: no worker vouches for it."""
    Broken(n=1).dispatch()
    work(signed)
    a_day_ago = App(signed.settings, connection="sqs", clock=lambda: time.time() - DAY)
    _, old, message = build_message(a_day_ago, Broken(n=666))
    aws.client("sqs").send_message(
        QueueUrl=dlq_url(signed, "default"),
        MessageBody=message.body,
        MessageAttributes={
            PREFIX + k: {"DataType": "String", "StringValue": v}
            for k, v in {"reason": "tries_exhausted", "job_id": old.id, "source_queue": "default"}.items()
        },
    )
    listed = json_of(invoke("failed", "list", "--reason", "tries_exhausted", "--include-unverified", "--json"))
    forged = next(j for j in listed["jobs"] if j["id"] == old.id)
    assert forged["matched_on_unverified"] and "reason" in forged["unverified"]
    Broken.fixed = True
    Broken.runs = []
    result = invoke("failed", "retry", "--reason", "tries_exhausted")
    assert result.exit_code == 0 and "Retried 1 job(s)." in result.output, result.output
    assert "Not retried: 1 job(s) that match only on values" in result.output
    work(signed)
    assert len(Broken.runs) == 1 and old.id not in Broken.runs
    assert [m["MessageAttributes"][PREFIX + "job_id"]["StringValue"] for m in in_dlq(signed)] == [old.id]


# -- prune and confirmation ------------------------------------------------------------------------------


def test_prune_deletes_exactly_the_jobs_older_than_the_cutoff(app: App) -> None:
    broken, refused = fail_some(app)
    resend(app, broken[0], failed_at=utc_iso(time.time() - 10 * DAY))
    resend(app, refused, failed_at=utc_iso(time.time() - 8 * DAY))
    summary = json_of(invoke("failed", "summary", "--older-than", "7d", "--json"))
    assert summary["jobs"] == 2
    pruned = invoke("failed", "prune", "--older-than", "7d", "--yes")
    assert pruned.exit_code == 0 and "Deleted 2 failed job(s)." in pruned.output, pruned.output
    assert [j.id for j in FailedJobs(app).list()] == [broken[1]]
    assert invoke("failed", "prune", "--older-than", "7d", "--yes").output.startswith("Deleted 0")


def test_prune_goes_by_when_sqs_received_a_copy_whose_failure_time_no_worker_vouched_for(signed: App) -> None:
    """Signing on: an old `failed_at` without a worker's tag is a claim; SQS's SentTimestamp (now) decides."""
    Broken(n=1).dispatch()
    Broken(n=2).dispatch()
    work(signed)
    first, _ = [m["MessageAttributes"][PREFIX + "job_id"]["StringValue"] for m in in_dlq(signed)]
    resend(signed, first, failed_at=utc_iso(time.time() - 10 * DAY))  # the tag no longer matches
    pruned = invoke("failed", "prune", "--older-than", "7d", "--yes")
    assert pruned.exit_code == 0 and "Deleted 0 failed job(s)." in pruned.output, pruned.output
    assert len(in_dlq(signed)) == 2
    listed = json_of(invoke("failed", "list", "--older-than", "7d", "--include-unverified", "--json"))
    (claimed,) = listed["jobs"]
    assert claimed["id"] == first and "failed_at" in claimed["unverified"] and claimed["matched_on_unverified"]


def test_flush_without_yes_on_a_stdin_that_is_no_terminal_refuses_and_deletes_nothing(app: App) -> None:
    fail_some(app)
    result = invoke("failed", "flush")
    assert result.exit_code == 2, result.output
    assert "add --yes" in result.stderr and "3 failed job(s) (default: 3)" in result.stderr
    assert len(in_dlq(app)) == 3
    assert invoke("failed", "prune", "--older-than", "0s").exit_code == 2
    assert len(in_dlq(app)) == 3
    assert invoke("failed", "flush", "--reason", "timeout").exit_code == 0, "nothing to delete: nothing to ask"


def test_flush_asks_with_the_count_and_queues_and_a_no_deletes_nothing(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_some(app)
    monkeypatch.setattr(review_cli, "_interactive", lambda: True)
    declined = invoke("failed", "flush", "--job", "review.broken", input="n\n")
    assert declined.exit_code == 1 and "Delete 2 failed job(s) (default: 2) for good?" in declined.output
    assert "Nothing deleted." in declined.output and len(in_dlq(app)) == 3
    accepted = invoke("failed", "flush", "--job", "review.broken", input="y\n")
    assert accepted.exit_code == 0 and "Deleted 2 failed job(s)." in accepted.output, accepted.output
    assert [j.job for j in FailedJobs(app).list()] == ["review.refused"]


def test_a_filtered_verb_on_an_empty_dlq_says_so(app: App) -> None:
    assert "No failed jobs." in invoke("failed", "list").output
    assert json_of(invoke("failed", "summary", "--json")) == {
        "groups": [],
        "jobs": 0,
        "copies": 0,
        "left_unverified": 0,
        "incomplete": [],
    }
    assert invoke("failed", "flush").output.startswith("Deleted 0"), "nothing to delete: nothing to ask"

"""The floors `make bench` reads its targets against: a floor that skipped work would make a target look
within reach when it is not (and one that did needless work, out of reach when it is not), so each one is
checked to do what it claims."""

from __future__ import annotations

import copy
import json
import time
import uuid
from typing import Any, ClassVar

import pytest

from benchmarks.lambda_bench import Context, required_floor_handler
from benchmarks.report import Check
from sqsjobs import App, Job, aws, policy
from sqsjobs.envelope import decode
from sqsjobs.events import JobEvent
from tests.helpers import queue_url
from tests.lambda_events import receive_event


class Entered:
    """A middleware that says when it was entered: the floor must run `handle()` through the job's own."""

    def handle(self, job: Job, next_: Any) -> Any:
        Counted.through.append(job.job_id or "")
        return next_()


class Counted(Job, name="bench_floors.counted"):
    runs: ClassVar[list[tuple[str, int]]] = []
    through: ClassVar[list[str]] = []
    n: int

    def middleware(self) -> list[Any]:
        return [Entered()]

    def handle(self) -> None:
        Counted.runs.append((self.job_id or "", self.attempts))


class Keyed(Counted, name="bench_floors.keyed"):
    """Idempotent: not a plain job, so the floor must not run it (the runner's hooks would act on it)."""

    def idempotency_key(self) -> str | None:
        return f"keyed-{self.n}"


def test_the_required_floor_runs_each_job_with_its_context_and_tells_the_apps_listeners(sqs_app: App) -> None:
    Counted.runs.clear()
    Counted.through.clear()
    heard: list[JobEvent] = []
    sqs_app.events.listen(heard.append, kinds=["processed"])
    sent = [Counted(n=i).dispatch() for i in range(3)]
    first = receive_event(sqs_app, "default")
    again = first["Records"][0]["messageId"]
    sqs = aws.client("sqs")
    sqs.change_message_visibility(
        QueueUrl=queue_url(sqs_app, "default"), ReceiptHandle=first["Records"][0]["receiptHandle"], VisibilityTimeout=0
    )
    event = receive_event(sqs_app, "default")  # the one made visible again: its second receive
    assert [r["messageId"] for r in event["Records"]] == [again]
    event["Records"] += first["Records"][1:]

    response = required_floor_handler(sqs_app)(event, Context())

    assert response == {"batchItemFailures": []}
    ids = {job.job_id or "" for job in sent}
    redelivered = next(e.job_id for e in heard if e.attempt == 2)
    assert sorted(Counted.runs) == sorted((job_id, 2 if job_id == redelivered else 1) for job_id in ids)
    assert sorted(Counted.through) == sorted(ids)
    assert {e.job_id for e in heard} == ids
    assert all(e.job_name == "bench_floors.counted" and e.queue == "default" for e in heard)
    assert all(e.dispatched_at and e.wait_s > 0 for e in heard)


class Releasing(Counted, name="bench_floors.releasing"):
    def handle(self) -> None:
        super().handle()
        self.release(5)


def test_the_required_floor_runs_no_record_that_is_not_due_or_not_plain(sqs_app: App) -> None:
    Counted.runs.clear()
    Counted(n=1).dispatch()
    Keyed(n=2).dispatch()
    event = receive_event(sqs_app, "default")
    plain = next(r for r in event["Records"] if "bench_floors.counted" in r["body"])
    early = copy.deepcopy(plain)
    early["messageId"] = "early"
    early["messageAttributes"] = {
        policy.NOT_BEFORE_ATTRIBUTE: {"stringValue": str(time.time() + 60), "dataType": "String"}
    }
    event["Records"].append(early)

    response = required_floor_handler(sqs_app)(event, Context())

    keyed = next(r["messageId"] for r in event["Records"] if "bench_floors.keyed" in r["body"])
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == sorted([keyed, "early"])
    assert len(Counted.runs) == 1


def test_a_targets_line_says_where_its_floor_was_in_the_same_run() -> None:
    above = Check("lambda_cpu_ratio_per_record", 5.3, 3.0, floor=3.2, floor_name="required floor")
    below = Check("cpu_ratio_vs_boto3_concurrency4", 1.4, 1.3, floor=1.2, floor_name="checked loop on 4 threads")
    assert above.line() == (
        "lambda_cpu_ratio_per_record 5.30 <= 3.00: NOT MET (required floor 3.20, above the target in this run)"
    )
    assert below.line().endswith("NOT MET (checked loop on 4 threads 1.20, at or below the target in this run)")
    # The floor is compared as the value is (unrounded unless `decimals`): the two verdicts never disagree.
    assert Check("x", 1.1049, 1.1, floor=1.1049, floor_name="f").line() == (
        "x 1.10 <= 1.10: NOT MET (f 1.10, above the target in this run)"
    )
    assert Check("x", 0.304, 0.3, decimals=2, floor=0.304, floor_name="f").line() == (
        "x 0.30 <= 0.30: met (f 0.30, at or below the target in this run)"
    )
    assert Check("x", 1.2, 1.1, floor_name="f").line() == "x 1.20 <= 1.10: NOT MET (f not measured)"
    assert Check("x", 0.3, 0.3, op="==", floor=0.4, floor_name="f").line() == "x 0.30 == 0.30: met"
    assert Check("x", 1.0, 1.1).line() == "x 1.00 <= 1.10: met"


def test_every_floor_a_target_is_read_against_is_a_number_the_bench_writes() -> None:
    """A floor key that the bench does not write would leave its target without the floor: read against the
    numbers of the last full run (benchmarks/results/latest.md, "Every number"), so a key renamed on one side
    fails here once the bench has run again."""
    from pathlib import Path

    from benchmarks import summary, systems

    written = Path(summary.__file__).parent / "results" / "latest.md"
    numbers = dict(
        line.split("=", 1) for line in written.read_text().split("## Every number", 1)[1].splitlines() if "=" in line
    )
    out = {key: float(value) for key, value in numbers.items() if value.replace(".", "", 1).isdigit()}
    assert set(summary._FLOOR_NAMES) <= set(out)
    floored = [check for check in summary.checks_of(out, systems.Outcome()) if check.floor is not None]
    assert {check.floor_name for check in floored} == set(summary._FLOOR_NAMES.values())


_SEALED = {"v": 1, "alg": "A256GCM", "key": "a2V5", "iv": "aXY=", "ct": "Y3Q="}
_LINK = {"job": "bench_floors.counted", "payload": {"n": 2}}


class Failing(Counted, name="bench_floors.failing"):
    def handle(self) -> None:
        super().handle()
        self.fail("not this one")


class _Hurried(Context):
    """Less time left than the job's own timeout plus the margin, but more than the timeout alone: the guard
    must count the margin. (Other tests may have registered jobs with longer timeouts: the guard then asks
    for the job's own, as the real one does.)"""

    def __init__(self, app: App) -> None:
        settings = app.settings
        own = policy.timeout(Counted.timeout, None, settings.timeout)
        self.left_ms = int((own + settings.lambda_deadline_margin / 2) * 1000)

    def get_remaining_time_in_millis(self) -> int:
        return self.left_ms


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("sealed", {"encrypted": _SEALED}),  # its payload kept: only the seal can make it fail
        ("available_at", {"available_at": "2020-01-01T00:00:00.000Z"}),
        ("retry_until", {"retry_until": "2999-01-01T00:00:00.000Z"}),
        ("chain", {"chain": {"id": str(uuid.uuid4()), "pos": 0, "next": [_LINK]}}),
        ("batch", {"batch_id": "b-1"}),
        ("unique", {"unique_key": "k-1"}),
        ("schedule", {"schedule": {"name": "nightly", "tick": 1}}),
        ("fifo", {}),
        ("tries", {}),
        ("deadline", {}),
        ("signing", {}),
        ("job_log", {}),
        ("released", {"job": "bench_floors.releasing"}),
        ("failed", {"job": "bench_floors.failing"}),
    ],
)
def test_the_required_floor_leaves_every_other_record_to_the_runner(
    sqs_app: App, monkeypatch: pytest.MonkeyPatch, case: str, change: dict[str, Any]
) -> None:
    """Each case alone makes a plain record something the floor does not run to success: it must fail the
    record (the runner would decide it), never run it as plain. The body still decodes: the check itself
    refused it, not the envelope's validation."""
    import aws_lambda_powertools.utilities.batch as powertools

    contexts: list[Any] = []
    real = powertools.process_partial_response

    def spy(event: Any, record_handler: Any, processor: Any, context: Any = None) -> Any:
        contexts.append(context)
        return real(event, record_handler, processor, context)

    monkeypatch.setattr(powertools, "process_partial_response", spy)
    Counted.runs.clear()
    fine = Counted(n=0).dispatch()  # a plain one beside it: Powertools raises when every record fails
    Counted(n=1).dispatch()
    event = receive_event(sqs_app, "default")
    record = next(r for r in event["Records"] if json.loads(r["body"])["id"] != fine.job_id)
    body = json.loads(record["body"]) | change
    record["body"] = json.dumps(body)
    decode(record["body"])  # the crafted envelope is a valid one
    lambda_context: Context = _Hurried(sqs_app) if case == "deadline" else Context()
    if case == "fifo":
        for each in event["Records"]:
            each["eventSourceARN"] += ".fifo"
    if case == "tries":
        record["attributes"]["ApproximateReceiveCount"] = str(sqs_app.settings.tries + 1)
    if case == "signing":
        monkeypatch.setattr(sqs_app, "signing_key", object())
    if case == "job_log":
        monkeypatch.setattr(sqs_app.settings, "job_log", True)

    handler = required_floor_handler(sqs_app)

    if case in ("fifo", "deadline", "signing", "job_log"):  # the whole invocation is the runner's: no record runs here
        with pytest.raises(powertools.exceptions.BatchProcessingError):  # as Powertools says "all failed"
            handler(event, lambda_context)
        assert Counted.runs == []
    else:
        response = handler(event, lambda_context)
        assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [record["messageId"]]
        ran = [(fine.job_id, 1)] + ([(body["id"], 1)] if case in ("released", "failed") else [])
        assert sorted(Counted.runs) == sorted(ran)
    assert contexts == [None]  # Powertools is never given the context: it would inspect the handler's signature


def test_the_required_floor_says_unknown_payload_keys_as_the_runner_does(
    sqs_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    Counted.runs.clear()
    Counted(n=1).dispatch()
    event = receive_event(sqs_app, "default")
    (record,) = event["Records"]
    body = json.loads(record["body"])
    body["payload"]["from_a_newer_producer"] = 1
    record["body"] = json.dumps(body)

    with caplog.at_level("WARNING"):
        response = required_floor_handler(sqs_app)(event, Context())

    assert response == {"batchItemFailures": []}
    assert Counted.runs == [(body["id"], 1)]
    assert any("bench_floors.counted" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")

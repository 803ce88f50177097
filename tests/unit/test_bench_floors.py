"""The floors `make bench` reads its targets against: a floor that skipped work would make a target look out
of reach when it is not, so each one is checked to do what it claims."""

from __future__ import annotations

import copy
import time
from typing import Any, ClassVar

from benchmarks.lambda_bench import Context, required_floor_handler
from benchmarks.report import Check
from sqsjobs import App, Job, aws, policy
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


def test_the_required_floor_runs_no_record_that_is_not_due_or_not_plain(sqs_app: App) -> None:
    Counted.runs.clear()
    Counted(n=1).dispatch()
    Keyed(n=2).dispatch()
    event = receive_event(sqs_app, "default")
    early = copy.deepcopy(event["Records"][0])
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
    # The floor is rounded as it is printed: 1.1049 reads 1.10, which is not above 1.10.
    assert (
        Check("x", 1.2, 1.1, floor=1.1049, floor_name="f")
        .line()
        .endswith("(f 1.10, at or below the target in this run)")
    )
    assert Check("x", 1.2, 1.1, floor_name="f").line() == "x 1.20 <= 1.10: NOT MET (f not measured)"
    assert Check("x", 0.3, 0.3, op="==", floor=0.4, floor_name="f").line() == "x 0.30 == 0.30: met"
    assert Check("x", 1.0, 1.1).line() == "x 1.00 <= 1.10: met"


def test_every_floor_a_target_is_read_against_is_a_number_the_bench_writes() -> None:
    """A floor key that the bench does not write would leave its target without the floor: read against the
    numbers of the last full run (benchmarks/results/latest.md, "Every number"), so a key renamed on one side
    fails here once the bench has run again."""
    from pathlib import Path

    from benchmarks import run

    written = Path(run.__file__).parent / "results" / "latest.md"
    numbers = dict(
        line.split("=", 1) for line in written.read_text().split("## Every number", 1)[1].splitlines() if "=" in line
    )
    out = {key: float(value) for key, value in numbers.items() if value.replace(".", "", 1).isdigit()}
    assert set(run._FLOOR_NAMES) <= set(out)
    floored = [check for check in run._checks(out, run.Outcome()) if check.floor is not None]
    assert sorted(check.floor_name for check in floored) == sorted(run._FLOOR_NAMES.values())

"""The floors `make bench` reads its targets against: a floor that skipped work would make a target look out
of reach when it is not, so each one is checked to do what it claims."""

from __future__ import annotations

from typing import ClassVar

from benchmarks.lambda_bench import Context, required_floor_handler
from benchmarks.report import Check
from sqsjobs import App, Job
from sqsjobs.events import JobEvent
from tests.lambda_events import receive_event


class Counted(Job, name="bench_floors.counted"):
    runs: ClassVar[list[tuple[str, int]]] = []
    n: int

    def handle(self) -> None:
        Counted.runs.append((self.job_id or "", self.attempts))


def test_the_required_floor_runs_each_job_with_its_context_and_tells_the_apps_listeners(sqs_app: App) -> None:
    Counted.runs.clear()
    heard: list[JobEvent] = []
    sqs_app.events.listen(heard.append, kinds=["processed"])
    sent = [Counted(n=i).dispatch() for i in range(3)]
    event = receive_event(sqs_app, "default")

    response = required_floor_handler(sqs_app)(event, Context())

    assert response == {"batchItemFailures": []}
    ids = sorted(job.job_id or "" for job in sent)
    assert sorted(Counted.runs) == [(job_id, 1) for job_id in ids]
    assert sorted((e.job_id, e.job_name, e.queue, e.attempt) for e in heard) == [
        (job_id, "bench_floors.counted", "default", 1) for job_id in ids
    ]
    assert all(e.dispatched_at for e in heard)


def test_a_target_below_its_floor_is_said_to_be_out_of_reach() -> None:
    out = Check("lambda_cpu_ratio_per_record", 5.3, 3.0, floor=3.3, floor_name="required floor")
    within = Check("cpu_ratio_vs_boto3_concurrency4", 1.4, 1.3, floor=1.2, floor_name="checked loop on 4 threads")
    assert out.line() == "lambda_cpu_ratio_per_record 5.30 <= 3.00: NOT MET (required floor 3.30: out of reach)"
    assert within.line().endswith("NOT MET (checked loop on 4 threads 1.20: within reach)")
    assert Check("x", 1.0, 1.1).line() == "x 1.00 <= 1.10: met"


def test_every_floor_a_target_is_read_against_is_a_number_the_bench_writes() -> None:
    """A floor key that the bench does not write would leave its target without the floor, silently: read
    against the numbers of the last full run (benchmarks/results/latest.md, "Every number")."""
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

"""Job metrics from the poller (EMF on stdout, or PutMetricData) and the event bus around a worker."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sqsjobs import App, Job, PermanentError, aws, dispatch_many
from sqsjobs.events import JobEvent, QueueEvent
from sqsjobs.metrics import JobMetrics, PutMetricData, Sample
from sqsjobs.registry import default_registry
from sqsjobs.worker import Worker, WorkerOptions


class Counted(Job, name="metrics.counted"):
    n: int = 0

    def handle(self) -> None:
        return None


class Broken(Job, name="metrics.broken"):
    def handle(self) -> None:
        raise PermanentError("no")


def run(app: App) -> Worker:
    worker = Worker(app, WorkerOptions(queues=["default"], sleep=1, stop_when_empty=True))
    worker.run(install_signals=False)
    return worker


def emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_a_worker_writes_exact_counts_per_queue_and_job_as_emf(
    sqs_app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs_app.settings = sqs_app.settings.model_copy(update={"metrics": "emf", "metrics_namespace": "shop"})
    dispatch_many([Counted(n=n) for n in range(3)])
    Broken().dispatch()
    run(sqs_app)
    documents = emf(capsys.readouterr().out)
    jobs = {d["job"]: d for d in documents if "job" in d}
    assert sorted(jobs) == ["metrics.broken", "metrics.counted"]
    assert (jobs["metrics.counted"]["processed"], jobs["metrics.counted"]["failed"]) == (3, 0)
    assert (jobs["metrics.broken"]["processed"], jobs["metrics.broken"]["failed"]) == (0, 1)
    assert len(jobs["metrics.counted"]["runtime"]) == 3 and len(jobs["metrics.counted"]["wait"]) == 3
    for doc in jobs.values():
        directive = doc["_aws"]["CloudWatchMetrics"][0]
        assert directive["Namespace"] == "shop"
        assert directive["Dimensions"] == [["queue"], ["queue", "job"]]
        assert doc["queue"] == "default"
    alive = [d for d in documents if "worker_alive" in d]
    assert alive and all(d["queue"] == "default" and "job" not in d for d in alive)
    assert alive[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["queue"]]


def test_metrics_are_off_by_default(sqs_app: App, capsys: pytest.CaptureFixture[str]) -> None:
    Counted().dispatch()
    run(sqs_app)
    assert emf(capsys.readouterr().out) == []
    assert sqs_app.metrics is None


def test_cloudwatch_mode_sends_the_counts_with_put_metric_data(sqs_app: App) -> None:
    sqs_app.settings = sqs_app.settings.model_copy(update={"metrics": "cloudwatch", "metrics_namespace": "shop"})
    dispatch_many([Counted(n=n) for n in range(2)])
    run(sqs_app)
    cloudwatch = aws.client("cloudwatch")
    stats = cloudwatch.get_metric_statistics(
        Namespace="shop",
        MetricName="processed",
        Dimensions=[{"Name": "queue", "Value": "default"}, {"Name": "job", "Value": "metrics.counted"}],
        StartTime=0,
        EndTime=4_000_000_000,
        Period=60,
        Statistics=["Sum"],
    )
    assert sum(p["Sum"] for p in stats["Datapoints"]) == 2
    names = {m["MetricName"] for m in cloudwatch.list_metrics(Namespace="shop")["Metrics"]}
    assert {"processed", "failed", "released", "runtime", "wait", "worker_alive"} <= names


def test_put_metric_data_batches_stay_inside_the_limits_aws_enforces(moto: None) -> None:
    """1,500 job names in one flush: more than one PutMetricData call may take (the strict layer refuses > 1,000)."""
    metrics = JobMetrics(default_registry, "wide", PutMetricData(aws.client("cloudwatch")))
    for n in range(1500):
        metrics.count("handed_back", f"q{n}", "metrics.counted")
    assert metrics.flush() == 1500
    listed = aws.client("cloudwatch").get_paginator("list_metrics").paginate(Namespace="wide", MetricName="handed_back")
    queues = {d["Value"] for page in listed for m in page["Metrics"] for d in m["Dimensions"] if d["Name"] == "queue"}
    assert len(queues) == 1500


def test_the_strict_layer_refuses_what_put_metric_data_refuses(moto: None) -> None:
    cloudwatch = aws.client("cloudwatch")
    with pytest.raises(ClientError, match="InvalidParameterValue"):
        cloudwatch.put_metric_data(
            Namespace="x", MetricData=[{"MetricName": f"m{i}", "Value": 1.0} for i in range(1001)]
        )
    with pytest.raises(ClientError, match="InvalidParameterValue"):
        cloudwatch.put_metric_data(
            Namespace="x",
            MetricData=[{"MetricName": "m", "Values": [float(i) for i in range(151)], "Counts": [1.0] * 151}],
        )


def test_a_sample_keeps_its_size_and_the_largest_value() -> None:
    sample = Sample(rng=random.Random(7))
    for value in range(10_000):
        sample.add(float(value % 5000))
    sample.add(123_456.0)
    for _ in range(1000):
        sample.add(1.0)
    kept = sample.kept()
    assert len(kept) == 99 and max(kept) == 123_456.0 and sample.seen == 11_001


def test_unregistered_names_are_counted_as_unknown() -> None:
    written: list[list[dict[str, Any]]] = []
    metrics = JobMetrics(default_registry, "ns", written.append)
    metrics.listen(JobEvent("rejected", "id", "attacker.made-up", "default", 1))
    metrics.listen(JobEvent("processed", "id", "metrics.counted", "default", 1, runtime_s=0.002))
    metrics.flush()
    docs = written[0]
    assert sorted((d["job"], d["failed"], d["processed"]) for d in docs) == [
        ("metrics.counted", 0, 1),
        ("unknown", 1, 0),
    ]
    assert next(d for d in docs if d["job"] == "unknown").get("runtime") is None  # rejected: never ran


def test_a_failing_writer_never_reaches_the_job(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(docs: list[dict[str, Any]]) -> None:
        raise OSError("broken pipe")

    metrics = JobMetrics(default_registry, "ns", refuse)
    metrics.listen(JobEvent("processed", "id", "metrics.counted", "default", 1))
    assert metrics.flush() == 0
    assert "could not write metrics: OSError: broken pipe" in capsys.readouterr().err


def test_listeners_hear_queued_and_the_worker_start_and_stop(sqs_app: App) -> None:
    heard: list[tuple[str, str]] = []
    stops: list[QueueEvent] = []

    @sqs_app.events.on("queued", "worker_starting", "worker_stopping")
    def note(event: JobEvent | QueueEvent) -> None:
        heard.append((event.kind, event.queue))
        if isinstance(event, QueueEvent) and event.kind == "worker_stopping":
            stops.append(event)

    Counted().dispatch()
    dispatch_many([Counted(n=1), Counted(n=2)])
    run(sqs_app)
    assert heard == [("queued", "default")] * 3 + [("worker_starting", "default"), ("worker_stopping", "default")]
    assert stops[0].detail["processed"] == 3 and stops[0].detail["exit_code"] == 0
    assert stops[0].detail["queues"] == ["default"] and stops[0].detail["pid"] > 0


def test_on_refuses_a_kind_that_does_not_exist(memory_app: App) -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        memory_app.events.on("job_done")


def test_a_failing_listener_is_logged_and_the_job_still_runs(memory_app: App, caplog: pytest.LogCaptureFixture) -> None:
    @memory_app.events.on("processed")
    def broken(event: JobEvent) -> None:
        raise RuntimeError("listener bug")

    memory_app.events.emit(JobEvent("processed", "id", "metrics.counted", "default", 1))  # must not raise
    assert any("listener" in r.getMessage() and r.exc_info for r in caplog.records)

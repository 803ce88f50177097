"""Tracing: a run is a span of the trace that dispatched it (OpenTelemetry SDK recording in memory), and a
job sent inside Lambda carries X-Ray's trace header, against in-process moto through the strict layer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sqsjobs import App, Job, aws, tracing
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import queue_url

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(autouse=True)
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """One SDK provider for the process (OpenTelemetry allows setting it once), spans cleared per test."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    # sqsjobs looks for a provider at most once a second: jobs of other tests in this process may have just
    # looked (and found none); a provider set now must count at once here.
    monkeypatch.setattr(tracing, "_sdk_checked", -1.0)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


class Traced(Job, name="tracing.traced"):
    n: int = 0

    def handle(self) -> None:
        with trace.get_tracer("app").start_as_current_span("charge the card"):
            pass


class Broken(Job, name="tracing.broken"):
    tries = 1

    def handle(self) -> None:
        raise RuntimeError("gateway said no")


class AsyncTraced(Job, name="tracing.async"):
    done: ClassVar[int] = 0

    async def handle(self) -> None:
        with trace.get_tracer("app").start_as_current_span("await the api"):
            AsyncTraced.done += 1


def work(app: App, event_loop: bool = False) -> None:
    options = WorkerOptions(queues=["default"], sleep=1, stop_when_empty=True, event_loop=event_loop)
    Worker(app, options).run(install_signals=False)


def by_name(exporter: InMemorySpanExporter) -> dict[str, Any]:
    return {span.name: span for span in exporter.get_finished_spans()}


@pytest.mark.parametrize("event_loop", [False, True], ids=["threads", "asyncio"])
def test_a_run_is_a_child_of_the_span_that_dispatched_it(
    sqs_app: App, spans: InMemorySpanExporter, event_loop: bool
) -> None:
    job: Job = AsyncTraced() if event_loop else Traced()
    with trace.get_tracer("web").start_as_current_span("POST /orders") as request:
        dispatched = job.dispatch()
    work(sqs_app, event_loop)
    found = by_name(spans)
    name = type(job).job_name
    run = found[f"{name} process"]
    inner = found["await the api" if event_loop else "charge the card"]
    assert run.context.trace_id == request.get_span_context().trace_id
    assert run.parent is not None and run.parent.span_id == request.get_span_context().span_id
    assert inner.parent is not None and inner.parent.span_id == run.context.span_id
    assert run.kind is SpanKind.CONSUMER
    assert run.attributes["messaging.message.id"] == dispatched.job_id
    assert run.attributes["messaging.destination.name"] == "default" and run.attributes["sqsjobs.attempt"] == 1


def test_a_failing_run_is_an_error_span(sqs_app: App, spans: InMemorySpanExporter) -> None:
    Broken().dispatch()
    work(sqs_app)
    run = by_name(spans)["tracing.broken process"]
    assert run.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in run.events)


def test_without_a_span_at_dispatch_nothing_travels_and_the_run_starts_a_trace(
    sqs_app: App, spans: InMemorySpanExporter
) -> None:
    Traced().dispatch()
    body = aws.client("sqs").receive_message(QueueUrl=queue_url(sqs_app, "default"), VisibilityTimeout=0)
    assert "trace" not in json.loads(body["Messages"][0]["Body"])
    work(sqs_app)
    assert by_name(spans)["tracing.traced process"].parent is None


def test_a_forged_trace_is_ignored_and_the_job_runs(sqs_app: App, spans: InMemorySpanExporter) -> None:
    Traced().dispatch()
    sqs = aws.client("sqs")
    url = queue_url(sqs_app, "default")
    message = sqs.receive_message(QueueUrl=url, VisibilityTimeout=30)["Messages"][0]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    forged = {**json.loads(message["Body"]), "trace": "00-not-a-trace-id-" + "x" * 60}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(forged))
    work(sqs_app)
    run = by_name(spans)["tracing.traced process"]
    assert run.parent is None and run.status.status_code is not StatusCode.ERROR


def test_inside_lambda_a_dispatch_carries_the_xray_trace_header(sqs_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    monkeypatch.setenv("_X_AMZN_TRACE_ID", header)
    sqs = aws.client("sqs")
    # moto keeps the system attribute of SendMessage but drops it from SendMessageBatch entries (AWS keeps
    # both): the batch is checked on the request itself, as botocore sends it.
    sent: list[dict[str, Any]] = []

    def note(params: dict[str, Any], **_: Any) -> None:
        sent.extend(params.get("Entries", []))

    sqs.meta.events.register("provide-client-params.sqs.SendMessageBatch", note)
    try:
        Traced().dispatch()
        Traced.dispatch_many([Traced(n=1), Traced(n=2)])
    finally:
        sqs.meta.events.unregister("provide-client-params.sqs.SendMessageBatch", note)
    received = sqs.receive_message(
        QueueUrl=queue_url(sqs_app, "default"), MaxNumberOfMessages=10, MessageSystemAttributeNames=["AWSTraceHeader"]
    )["Messages"]
    assert [m["Attributes"].get("AWSTraceHeader") for m in received].count(header) == 1  # the single send
    assert len(sent) == 2
    assert all(e["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"] == header for e in sent)


def test_a_broken_opentelemetry_setup_leaves_jobs_untraced_not_failed() -> None:
    """OTEL_PROPAGATORS naming a propagator that is not installed makes OpenTelemetry raise at import
    (of its propagators, which sqsjobs imports once the application has imported the trace API)."""
    import os
    import subprocess
    import sys

    code = (
        "import opentelemetry.trace\nfrom sqsjobs import tracing; print(tracing.outgoing()); print(tracing.outgoing())"
    )
    env = {**os.environ, "OTEL_PROPAGATORS": "xray"}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None"]
    assert done.stderr.count("OpenTelemetry could not be loaded") == 1


def _python(code: str) -> list[str]:
    """What `code` prints in a fresh interpreter with no OpenTelemetry configuration of ours."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_without_an_sdk_no_span_machinery_runs() -> None:
    """The API alone (often installed by another library) costs nothing per job: no tracer is asked."""
    code = (
        "import opentelemetry.trace as t\n"
        "def refuse(*a, **k): raise AssertionError('a tracer was asked for')\n"
        "t.get_tracer = refuse\n"
        "from sqsjobs import tracing\n"
        "with tracing.run_span('j', 'q', 'i', 1, None): pass\n"
        "print(tracing.outgoing())\n"
    )
    assert _python(code) == ["None"]


def test_without_opentelemetry_imported_by_the_application_sqsjobs_never_imports_it() -> None:
    """Nobody can have set a tracer provider without importing the trace API (or naming one for it to
    load): a run does not import it (an import is milliseconds of every Lambda cold start), and dispatch
    sends no trace."""
    code = (
        "import sys\n"
        "from sqsjobs import tracing\n"
        "with tracing.run_span('j', 'q', 'i', 1, None): pass\n"
        "print(tracing.outgoing(), 'opentelemetry' in sys.modules)\n"
    )
    assert _python(code) == ["None", "False"]

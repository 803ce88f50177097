"""What a message says about its job never reaches a log line or a metric dimension as such.

An attacker who can send to a queue chooses the `job` of an envelope. Before, an unregistered name
went into the text log unescaped (a newline forged a whole log line) and into the Lambda metrics'
`job` dimension (one new metric per name: the attacker chose how many metrics you pay for).
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from typing import Any

import pytest

from lambda_handlers.observability import HandBacks
from lambda_handlers.sqs import SqsHandler
from sqsjobs import App, Job, aws
from sqsjobs.connections.base import OutgoingMessage
from sqsjobs.logs import TextFormatter
from sqsjobs.metrics import JobMetrics
from sqsjobs.registry import default_registry
from tests.helpers import queue_url
from tests.lambda_events import FakeContext, receive_event

FORGED = "billing.refund\n12:00:00 INFO    job processed job_id=42 job=billing.refund outcome=processed"


class Known(Job, name="names.known"):
    def handle(self) -> None:
        pass


def body(job: str) -> str:
    return json.dumps(
        {
            "v": 1,
            "id": str(uuid.uuid4()),
            "job": job,
            "payload": {},
            "queue": "default",
            "dispatched_at": "2026-01-01T00:00:00Z",
        }
    )


def text_lines(records: list[logging.LogRecord]) -> list[str]:
    return [line for record in records for line in TextFormatter().format(record).split("\n")]


def test_an_unregistered_name_is_logged_as_unknown_on_one_line(
    memory_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqsjobs")
    memory_app.connection.send("default", OutgoingMessage(body=body(FORGED)))
    (message,) = memory_app.connection.receive("default", 10, 0)
    memory_app.runner.process(message)
    records = [r for r in caplog.records if r.name == "sqsjobs.jobs"]
    assert [r.getMessage() for r in records] == ["job rejected"]
    lines = text_lines(records)
    assert len(lines) == 1, lines
    assert " job=unknown " in lines[0] and "billing.refund" not in lines[0].split(" error=")[0]


def test_a_registered_name_is_logged_as_itself(memory_app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sqsjobs")
    Known().dispatch()
    (message,) = memory_app.connection.receive("default", 10, 0)
    memory_app.runner.process(message)
    (line,) = text_lines([r for r in caplog.records if r.name == "sqsjobs.jobs"])
    assert " job=names.known " in line


def _record(msg: str, fields: dict[str, Any], exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = logging.LogRecord("sqsjobs.jobs", logging.WARNING, __file__, 1, msg, (), exc_info)
    record.sqsjobs = fields
    return record


def test_every_text_field_is_escaped_and_a_record_stays_one_line() -> None:
    fields = {"job_id": "a\nb", "job": "names.known", "queue": "default", "error": 'x="1" \x1b[2J\u2028y', "attempt": 1}
    line = TextFormatter().format(_record("job failed\r\n00:00:00 INFO    forged", fields))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert 'job_id="a\\nb"' in line and "job=names.known" in line and "attempt=1" in line
    assert 'error="x=\\"1\\" \\x1b[2J\\u2028y"' in line
    assert "job failed\\r\\n00:00:00 INFO    forged" in line


def test_a_traceback_cannot_pass_for_a_record() -> None:
    try:
        raise ValueError("bad\n12:00:00 INFO    job processed job=billing.refund")
    except ValueError as caught:
        error = caught
    first, *rest = TextFormatter().format(_record("job failed", {"job": "names.known"}, error)).split("\n")
    assert first.endswith("job=names.known") and rest
    assert all(line.startswith("  | ") for line in rest), rest


def _emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_lambda_metrics_name_an_unregistered_job_unknown(
    sqs_app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "sqsjobs-test")
    from lambda_handlers import observability

    observability.install(sqs_app)
    url = queue_url(sqs_app, "default")
    for n in range(3):
        aws.client("sqs").send_message(QueueUrl=url, MessageBody=body(f"attacker.metric-{n}"))
    Known().dispatch()
    SqsHandler(sqs_app)(receive_event(sqs_app, "default"), FakeContext())
    documents = _emf(capsys.readouterr().out)
    dimensions = sorted({d["job"] for d in documents})
    assert dimensions == ["names.known", "unknown"], dimensions


def test_lambda_hand_backs_name_an_unregistered_job_unknown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "sqsjobs-test")
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    caplog.set_level(logging.INFO, logger="sqsjobs.lambda")
    metrics = JobMetrics(default_registry, "sqsjobs-test")
    hand_backs = HandBacks(metrics=metrics)
    hand_backs.report("handed_back", logging.WARNING, f"{FORGED} not started: 1.0s left", {"job": FORGED, "queue": "q"})
    hand_backs.report("handed_back", logging.WARNING, "names.known not started", {"job": "names.known", "queue": "q"})
    metrics.flush()
    assert sorted(d["job"] for d in _emf(capsys.readouterr().out)) == ["names.known", "unknown"]
    messages = [r.getMessage() for r in caplog.records if r.name == "sqsjobs.lambda"]
    assert messages[0] == "unknown not started: 1.0s left" and "\n" not in messages[0]
    assert [r.sqsjobs["job"] for r in caplog.records if r.name == "sqsjobs.lambda"] == ["unknown", "names.known"]


def test_the_powertools_log_names_an_unregistered_job_unknown(sqs_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "billing")
    from lambda_handlers import observability

    observability.install(sqs_app)
    # Powertools keeps the handler (and the stream) of the first Logger of a service: read what it writes here.
    out = io.StringIO()
    for handler in logging.getLogger("billing").handlers + logging.getLogger("sqsjobs.lambda").handlers:
        monkeypatch.setattr(handler, "stream", out, raising=False)
    aws.client("sqs").send_message(QueueUrl=queue_url(sqs_app, "default"), MessageBody=body(FORGED))
    SqsHandler(sqs_app)(receive_event(sqs_app, "default"), FakeContext())
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    rejected = [line for line in lines if line.get("message") == "job rejected"]
    assert [line["job"] for line in rejected] == ["unknown"]

"""The Lambda handler refuses a configuration that can never run a job, names jobs that can never start,
and decodes each record once."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, ClassVar

import pytest

import sqsjobs.envelope
from lambda_handlers.sqs import SqsHandler
from sqsjobs import App, Job, aws
from sqsjobs.errors import ConfigurationError
from sqsjobs.policy import NOT_BEFORE_ATTRIBUTE
from tests.helpers import counts, dead_letters, payload_app
from tests.lambda_events import FakeContext, deliver, failed_ids, receive_event


class Plain(Job, name="lambda-config.plain"):
    """No timeout of its own: SQSJOBS_TIMEOUT applies."""

    runs: ClassVar[list[int]] = []

    def handle(self) -> None:
        Plain.runs.append(self.attempts)


class Report(Job, name="lambda-config.report"):
    timeout = 600

    def handle(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _reset() -> None:
    Plain.runs.clear()


def test_a_default_timeout_that_cannot_fit_the_function_is_refused_naming_both_settings(sqs_app: App) -> None:
    """SQSJOBS_TIMEOUT=60 (the default) in a 60 s function: every job without its own timeout would be
    handed back unstarted for ever, silently, until the redrive policy buried it without a reason."""
    Plain().dispatch()
    event = receive_event(sqs_app, "default")
    handler = SqsHandler(sqs_app)
    with pytest.raises(ConfigurationError) as refused:
        handler(event, FakeContext(remaining_s=60))
    text = str(refused.value)
    assert "SQSJOBS_TIMEOUT (60s)" in text and "SQSJOBS_LAMBDA_DEADLINE_MARGIN (2s)" in text
    assert "Raise the function's timeout above 62s, or lower SQSJOBS_TIMEOUT below 58s" in text
    assert Plain.runs == []
    # The container stays refused: the function's timeout cannot change under a running container.
    with pytest.raises(ConfigurationError):
        handler(event, FakeContext(remaining_s=600))
    assert Plain.runs == []


def test_a_default_timeout_that_fits_runs(sqs_app: App) -> None:
    Plain().dispatch()
    response = deliver(SqsHandler(sqs_app), sqs_app, "default", receive_event(sqs_app, "default"), FakeContext(63))
    assert failed_ids(response) == [] and Plain.runs == [1]


def test_jobs_whose_own_timeout_cannot_fit_are_named_once(
    sqs_app: App, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqs_app.settings, "timeout", 20.0)
    handler = SqsHandler(sqs_app)
    with caplog.at_level(logging.WARNING, logger="sqsjobs.lambda"):
        for _ in range(2):
            Plain().dispatch()
            deliver(handler, sqs_app, "default", receive_event(sqs_app, "default"), FakeContext(remaining_s=300))
    named = [r.getMessage() for r in caplog.records if "lambda-config.report" in r.getMessage()]
    assert len(named) == 1, named
    assert "lambda-config.report (queue default, timeout 600s)" in named[0]
    assert "can never start in this function" in named[0]
    assert Plain.runs == [1, 1]
    assert not any(counts(sqs_app, "default").values())


def test_each_record_is_decoded_once(sqs_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline guard asks for the job's timeout before the core runs it: one decode serves both."""
    real = sqsjobs.envelope.decode
    calls: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append("decode")
        return real(*args, **kwargs)

    # Wherever the real function was imported by name, the counting one stands in for it.
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("sqsjobs") and getattr(module, "decode", None) is real:
            monkeypatch.setattr(module, "decode", counting)
    Plain().dispatch()
    response = deliver(SqsHandler(sqs_app), sqs_app, "default", receive_event(sqs_app, "default"), FakeContext())
    assert failed_ids(response) == [] and Plain.runs == [1]
    assert calls == ["decode"]


def _guarded_run(app: App, event: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], int]:
    """One event in a 63 s function, which fits Plain (SQSJOBS_TIMEOUT 60 + the 2 s margin) but not Report's
    600: the deadline guard decodes every record for its own timeout first. The response, and how many
    records the guard decoded."""
    asked: list[str] = []
    timeout_for = app.runner.timeout_for

    def asking(message: Any) -> float:
        asked.append(message.message_id)
        return timeout_for(message)

    monkeypatch.setattr(app.runner, "timeout_for", asking)
    return deliver(SqsHandler(app), app, "default", event, FakeContext(63)), len(asked)


def test_a_record_decoded_for_its_timeout_that_does_not_run_leaves_no_decode_behind(
    sqs_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline guard keeps each decode for the record's run. A run that ends before reading it (here:
    not due yet) must not leave it held for the container's life: up to 10,000 envelopes, payloads and all."""
    Plain().dispatch()
    event = receive_event(sqs_app, "default")
    event["Records"][0]["messageAttributes"][NOT_BEFORE_ATTRIBUTE] = {"stringValue": str(time.time() + 120)}
    response, decoded = _guarded_run(sqs_app, event, monkeypatch)
    assert failed_ids(response) == [] and Plain.runs == []  # given back as a copy that waits its turn
    assert decoded == 1  # the guard decoded it and kept the decode ...
    assert not sqs_app.runner._decoded._kept  # ... which is gone with the record


def test_a_record_whose_body_is_gone_from_s3_leaves_no_decode_behind(
    moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, for a run that ends on an offloaded body it could not read: to the DLQ, nothing kept."""
    app = payload_app(prefix, payload_threshold="always")
    with app.activate():
        Plain().dispatch()
        s3 = aws.client("s3")
        (stored,) = s3.list_objects_v2(Bucket=app.settings.bucket)["Contents"]
        s3.delete_object(Bucket=app.settings.bucket, Key=stored["Key"])
        response, decoded = _guarded_run(app, receive_event(app, "default"), monkeypatch)
        assert failed_ids(response) == [] and Plain.runs == []
        (letter,) = dead_letters(app)
        assert letter["attrs"]["sqsjobs.reason"] == "missing_payload"
        assert decoded == 1 and not app.runner._decoded._kept

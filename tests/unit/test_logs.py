from __future__ import annotations

import io
import json
import logging
import sys
import time

import pytest
import typer

from sqsjobs import App, Job, logs
from sqsjobs.cli.common import reported
from sqsjobs.errors import ConfigurationError
from sqsjobs.logs import JsonFormatter, TextFormatter


class Logged(Job, name="logs.logged"):
    def handle(self) -> None:
        pass


class Broken(Job, name="logs.broken"):
    tries = 1

    def handle(self) -> None:
        raise KeyError("missing")


def test_each_job_writes_one_outcome_line_with_all_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    app = App(connection="sync")
    caplog.set_level(logging.INFO, logger="sqsjobs")
    with app.activate():
        Logged().dispatch()
        Broken().dispatch()
    records = [r for r in caplog.records if r.name == "sqsjobs.jobs"]
    lines = [json.loads(JsonFormatter().format(r)) for r in records]
    assert [line["msg"] for line in lines] == ["job processed", "job failed"]
    done, failed = lines
    assert done["job"] == "logs.logged" and done["attempt"] == 1 and done["outcome"] == "processed"
    assert done["dispatched_at"].endswith("Z") and isinstance(done["wait_ms"], int)
    assert isinstance(done["runtime_ms"], float) and done["job_id"]
    assert failed["outcome"] == "failed" and failed["error"] == "KeyError: 'missing'" and failed["level"] == "warning"
    assert "job=logs.logged" in TextFormatter().format(records[0])


def test_start_lines_appear_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sqsjobs")
    with App(connection="sync").activate():
        Logged().dispatch()
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "sqsjobs.jobs"]
    assert [line["msg"] for line in lines] == ["job started", "job processed"]
    assert lines[0]["job_id"] == lines[1]["job_id"] and "wait_ms" in lines[0]


class _SlowStream(io.StringIO):
    """A stderr that takes its time, as a pipe to a busy log agent may: what is written after the
    verb returned would be missing when the test looks."""

    def write(self, text: str) -> int:
        time.sleep(0.2)
        return super().write(text)


def test_a_cli_verb_writes_its_log_lines_before_its_error_line_and_before_it_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = _SlowStream()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure("text", "INFO")
    with pytest.raises(typer.Exit), reported():
        logging.getLogger("sqsjobs.cli").warning("looked at the queue")
        raise ConfigurationError("SQSJOBS_QUEUES: no such queue")
    written = stream.getvalue()
    assert "looked at the queue" in written and "error: SQSJOBS_QUEUES" in written
    assert written.index("looked at the queue") < written.index("error: SQSJOBS_QUEUES")
    logging.getLogger("sqsjobs.cli").warning("and after")  # the listener still writes for later records
    logs.flush()
    assert "and after" in stream.getvalue()


def test_a_record_written_after_stderr_was_swapped_and_closed_goes_to_the_current_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure("text", "INFO")  # a CLI call under a test runner's capture
    first.close()  # the runner closes that capture when the call returns
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logging.getLogger("sqsjobs.worker").info("worker stopped")  # a thread of that call, still logging
    logs.flush()
    assert "worker stopped" in later.getvalue() and "Logging error" not in later.getvalue()


def test_a_text_line_renders_each_value_the_same_however_often_the_formatter_has_seen_it() -> None:
    """The formatter keeps the rendering of repeating fields (job, queue, outcome); a kept value must
    still be quoted and escaped as the first time, and a flood of new names must not change a line."""

    def line(formatter: TextFormatter, fields: dict[str, object]) -> str:
        record = logging.LogRecord("sqsjobs.jobs", logging.INFO, __file__, 0, "job processed", (), None)
        record.sqsjobs = fields
        return formatter.format(record)[len("12:00:00 INFO    ") :]  # after the time and the level

    hostile = {"job_id": "a b", "job": 'x"y\n', "queue": "q=1", "attempt": 2, "outcome": "done\x1b[2J", "wait_ms": 3}
    expected = " ".join(
        f"{key}={logs.value(hostile[key])}" for key in ("job_id", "job", "queue", "attempt", "wait_ms", "outcome")
    )
    formatter = TextFormatter()
    assert line(formatter, hostile) == line(formatter, hostile) == "job processed " + expected
    assert 'job="x\\"y\\n"' in expected and 'outcome="done\\x1b[2J"' in expected
    for index in range(600):  # more names than it keeps: it starts again, and every line is still right
        assert line(formatter, {"job": f"job.{index}", "queue": "q 1"}) == f'job processed job=job.{index} queue="q 1"'
    assert line(formatter, hostile) == "job processed " + expected

from __future__ import annotations

import enum
import io
import json
import logging
import logging.config
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from sqsjobs import App, Job, logs
from sqsjobs.cli.common import reported
from sqsjobs.errors import ConfigurationError
from sqsjobs.logs import JsonFormatter, TextFormatter
from tests.helpers import wait_for


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


class _CountingStream(io.StringIO):
    """A stderr that keeps its writes (each is a system call on a real, line-buffered one) and can fail
    the next `fail` of them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.fail = 0

    def write(self, text: str) -> int:
        if self.fail:
            self.fail -= 1
            raise OSError("stderr refused the write")
        self.writes.append(text)
        return super().write(text)


def _counted(monkeypatch: pytest.MonkeyPatch) -> _CountingStream:
    """stderr counted (set in the test itself: pytest's capture sets it again after fixtures), and a writer
    thread that gathers for long enough that only `logs.flush()` writes."""
    stream = _CountingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(logs, "_GATHER_S", 30.0)
    logs.configure("text", "INFO")
    return stream


def _lines(stream: _CountingStream, word: str) -> list[str]:
    return [line.rsplit(" ", 1)[1] for line in stream.getvalue().splitlines() if f" {word} " in line]


@pytest.mark.parametrize("lines", [10, 200])
def test_a_burst_is_written_in_as_few_writes_as_keep_lines_whole(monkeypatch: pytest.MonkeyPatch, lines: int) -> None:
    """One write for a burst that fits in PIPE_BUF; beyond it, several, each whole: other processes may
    write to the same stderr pipe, and a longer write can be cut into."""
    counted = _counted(monkeypatch)
    log = logging.getLogger("sqsjobs.worker")
    for index in range(lines):
        log.info("burst %d", index)
    logs.flush()
    assert _lines(counted, "burst") == [str(i) for i in range(lines)]
    assert (len(counted.writes) == 1) == (lines == 10)
    assert all(len(text.encode()) <= logs._PIPE_BUF and text.endswith("\n") for text in counted.writes)


class _Recursive:
    def __str__(self) -> str:
        return str(self)


def test_a_record_that_cannot_be_written_costs_its_own_line_only(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = _counted(monkeypatch)
    log = logging.getLogger("sqsjobs.worker")
    log.info("kept %d", 1)
    log.info("broken %d", "not a number")
    log.info("kept %d", 2)
    log.info("recursing %s", _Recursive())
    log.info("kept %d", 3)
    logs.flush()
    assert _lines(counted, "kept") == ["1", "2", "3"]
    counted.fail = 1  # the burst's joined write fails: each line is tried on its own
    for index in range(4, 7):
        log.info("kept %d", index)
    logs.flush()
    assert _lines(counted, "kept") == ["1", "2", "3", "4", "5", "6"]


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


def test_lines_from_many_threads_all_land_in_each_threads_order_without_a_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer thread is no longer woken per record: it gathers them. None may be lost or reordered
    on the way, and nobody has to flush for them to appear."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure("text", "INFO")
    log = logging.getLogger("sqsjobs.worker")

    def write(thread: int) -> None:
        for index in range(300):
            log.info("line %d-%d", thread, index)

    threads = [threading.Thread(target=write, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def written() -> list[str]:  # only this test's lines: a thread another test left may log too
        return [line for line in stream.getvalue().splitlines() if " line " in line]

    wait_for(lambda: len(written()) >= 1200, timeout=10, what="all 1,200 lines written")
    lines = written()
    assert len(lines) == 1200
    for number in range(4):
        mine = [line.rsplit(" ", 1)[1] for line in lines if f" line {number}-" in line]
        assert mine == [f"{number}-{index}" for index in range(300)]


_LOGS_FROM_A_SIGNAL_HANDLER = """
import io, logging, signal, sys, time
from sqsjobs import logs
sys.stderr = written = io.StringIO()
logs.configure("text", "INFO")
log = logging.getLogger("sqsjobs.worker")
signals = 0
def on_signal(signum, frame):
    global signals
    signals += 1
    log.info("signal %d", signals)  # as the worker's SIGTERM handler logs, between any two bytecodes
signal.signal(signal.SIGALRM, on_signal)
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
lines, start = 0, time.monotonic()
while time.monotonic() - start < 2:
    log.info("main %d", lines)
    lines += 1
signal.setitimer(signal.ITIMER_REAL, 0)
logs.flush()
print(lines + signals, written.getvalue().count("\\n"), signals)
"""


def test_a_signal_handler_that_logs_in_the_middle_of_a_log_call_neither_hangs_nor_loses_a_line() -> None:
    """The writer's first doorbell was a threading.Event: `set()` holds a plain lock, and a SIGTERM
    arriving inside it ran the worker's handler, whose log line waited on that lock for ever."""
    done = subprocess.run(
        [sys.executable, "-c", _LOGS_FROM_A_SIGNAL_HANDLER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    logged, written, signals = (int(x) for x in done.stdout.split())
    assert signals > 100, "the timer should have interrupted the log calls many times"
    assert written == logged


def _line(formatter: TextFormatter, fields: dict[str, object]) -> str:
    record = logging.LogRecord("sqsjobs.jobs", logging.INFO, __file__, 0, "job processed", (), None)
    record.sqsjobs = fields
    return formatter.format(record)[len("12:00:00 INFO    ") :]  # after the time and the level


def _as_before(fields: dict[str, object]) -> str:
    """What a line said before the formatter kept anything: each shown field through `value()`."""
    shown = " ".join(f"{key}={logs.value(fields[key])}" for key in logs._SHOWN if key in fields)
    return "job processed " + shown if fields else "job processed"


_VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["default", "a b", 'x"y', "q=1", "\\n", "\u2028", "done\x1b[2J", "é", ""]),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from([*logs._SHOWN, "message_id"]), _VALUES, max_size=11), max_size=6))
def test_a_text_line_says_what_it_said_before_the_formatter_kept_values(lines: list[dict[str, object]]) -> None:
    """One formatter, many lines: a value it kept from an earlier line renders as `value()` renders it."""
    formatter = TextFormatter()
    for fields in [*lines, *lines]:
        assert _line(formatter, fields) == _as_before(fields)
    assert len(formatter._kept) <= logs._KEPT_MAX


def test_a_text_line_renders_each_value_the_same_however_often_the_formatter_has_seen_it() -> None:
    """The formatter keeps the rendering of repeating fields (job, queue, outcome); a kept value must
    still be quoted and escaped as the first time, and a flood of new names must not change a line."""

    hostile = {"job_id": "a b", "job": 'x"y\n', "queue": "q=1", "attempt": 2, "outcome": "done\x1b[2J", "wait_ms": 3}
    expected = " ".join(
        f"{key}={logs.value(hostile[key])}" for key in ("job_id", "job", "queue", "attempt", "wait_ms", "outcome")
    )
    formatter = TextFormatter()
    assert _line(formatter, hostile) == _line(formatter, hostile) == "job processed " + expected
    assert 'job="x\\"y\\n"' in expected and 'outcome="done\\x1b[2J"' in expected
    for index in range(600):  # more names than it keeps: it starts again, and every line is still right
        assert _line(formatter, {"job": f"job.{index}", "queue": "q 1"}) == f'job processed job=job.{index} queue="q 1"'
    assert _line(formatter, hostile) == "job processed " + expected
    assert len(formatter._kept) <= logs._KEPT_MAX


class _Queue(str, enum.Enum):  # noqa: UP042 (such a member formats as Queue.HIGH; a StrEnum would not)
    HIGH = "high"


class _Forging(str):
    def __str__(self) -> str:
        return "x\n00:00:00 INFO    job processed job=forged"

    def __format__(self, spec: str) -> str:
        return str(self)


def test_a_str_subclass_is_written_as_its_text_never_as_its_own_str() -> None:
    """A user's field may be an Enum member or another str subclass: its text goes through the
    quoting, so its own `__str__` cannot name itself or start a line."""
    line = _line(TextFormatter(), {"job_id": _Forging("abc"), "queue": _Queue.HIGH, "job": _Forging("a b")})
    assert line == 'job processed job_id=abc job="a b" queue=high' and "\n" not in line
    assert logs.value(_Forging("abc")) == "abc" and type(logs.value(_Forging("abc"))) is str


def test_text_formatter_takes_the_arguments_of_logging_formatter() -> None:
    """dictConfig and fileConfig build formatters with logging.Formatter's arguments."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"text": {"()": "sqsjobs.logs.TextFormatter", "fmt": "%(message)s"}},
            "handlers": {"h": {"class": "logging.NullHandler", "formatter": "text"}},
            "loggers": {"logs.test.dictconfig": {"handlers": ["h"]}},
        }
    )
    formatter = logging.getLogger("logs.test.dictconfig").handlers[0].formatter
    assert isinstance(formatter, TextFormatter)
    assert (
        _line(formatter, {"job": "j", "runtime_ms": 12.5, "delay_s": 3})
        == "job processed job=j runtime_ms=12.5 delay_s=3"
    )

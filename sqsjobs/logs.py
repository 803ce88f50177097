"""One structured log line per job start and finish; JSON when SQSJOBS_LOG_FORMAT=json."""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from .events import JobEvent

job_log = logging.getLogger("sqsjobs.jobs")

_FIELDS = ("job_id", "job", "queue", "attempt", "dispatched_at", "wait_ms", "runtime_ms", "outcome", "error")


def log_event(event: JobEvent) -> None:
    """The events listener that writes the job log: one line per job outcome at INFO.

    The outcome line carries everything (dispatched at, wait, runtime, outcome, error);
    the start line is DEBUG, because at INFO it would double the logging cost of a
    short job for little news.
    """
    if event.kind == "processing":
        if job_log.isEnabledFor(logging.DEBUG):
            job_log.debug("job started", extra={"sqsjobs": _fields(event)})
        return
    if not job_log.isEnabledFor(logging.INFO):
        return
    fields = _fields(event)
    fields["outcome"] = event.kind
    fields["runtime_ms"] = round(event.runtime_s * 1000, 1)
    if event.delay:
        fields["delay_s"] = event.delay
    if event.error:
        fields["error"] = f"{event.error_type}: {event.error}"
    level = logging.WARNING if event.kind in ("failed", "rejected") else logging.INFO
    job_log.log(level, "job " + event.kind, extra={"sqsjobs": fields})


def _fields(event: JobEvent) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "job_id": event.job_id,
        "job": event.job_name,
        "queue": event.queue,
        "attempt": event.attempt,
    }
    if event.dispatched_at:
        fields["dispatched_at"] = event.dispatched_at
        fields["wait_ms"] = round(event.wait_s * 1000)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        data.update(getattr(record, "sqsjobs", {}))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.getMessage()}"
        fields = getattr(record, "sqsjobs", None)
        if fields:
            base += " " + " ".join(f"{k}={fields[k]}" for k in (*_FIELDS, "delay_s") if k in fields)
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


class _Enqueue(QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # the listener's handler formats it; our records carry no live objects


_listener: QueueListener | None = None


@atexit.register
def _drain() -> None:
    if _listener is not None:
        _listener.stop()


def configure(log_format: str = "text", level: str = "INFO") -> None:
    """Set up the `sqsjobs` loggers for a process we own (worker, CLI); libraries leave this alone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    # Job threads only enqueue records; one listener thread formats and writes them, so
    # ten job threads never queue up on the stream handler's lock.
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    global _listener
    if _listener is not None:
        _listener.stop()
    _listener = QueueListener(records, handler)
    _listener.start()
    root = logging.getLogger("sqsjobs")
    root.handlers[:] = [_Enqueue(records)]
    root.setLevel(level.upper())
    root.propagate = False

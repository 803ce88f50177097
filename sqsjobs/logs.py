"""One structured log line per job start and finish; JSON when SQSJOBS_LOG_FORMAT=json.

Nothing a message says can forge or split a line: a job is named by its registered name, or
`unknown` when the message names none (`Registry.known_name`), and in the text format every value
and every message is escaped (control characters, line breaks) and quoted when it has spaces, `=` or
quotes, so one record is always one line. JSON lines are escaped by the encoder.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import queue
import re
import select
import sys
import threading
from typing import Any

from .events import JOB_KINDS, JobEvent
from .registry import Registry, default_registry

job_log = logging.getLogger("sqsjobs.jobs")

_FIELDS = ("job_id", "job", "queue", "attempt", "dispatched_at", "wait_ms", "runtime_ms", "outcome", "error")
#: The fields a text line shows, in the order it shows them.
_SHOWN = (*_FIELDS, "delay_s")
#: Fields whose values repeat from line to line (a few job names, queues and outcomes): their rendering is
#: kept, so most lines check only the job id and the time against `_PLAIN`.
_REPEATING = frozenset({"job", "queue", "outcome"})
_KEPT_MAX = 256
_KEPT_LONGEST = 200


#: The job events the job log writes a line for (`processing` only at DEBUG); a dispatch is the producer's.
LOGGED_KINDS = tuple(kind for kind in JOB_KINDS if kind != "queued")


#: The level of each kind's job log line (the rest: INFO).
_LEVELS = {"processing": logging.DEBUG, "failed": logging.WARNING, "rejected": logging.WARNING}


def takes(kind: str) -> bool:
    """Whether a job log line of this kind would be written now (`Events.listen(..., when=takes)`): a
    `processing` line at DEBUG, a failure at WARNING, the rest at INFO."""
    return job_log.isEnabledFor(_LEVELS.get(kind, logging.INFO))


def log_event(event: JobEvent) -> None:
    """The events listener that writes the job log: one line per job outcome at INFO.

    The outcome line carries everything (dispatched at, wait, runtime, outcome, error);
    the start line is DEBUG, because at INFO it would double the logging cost of a
    short job for little news. The job is named as `default_registry` knows it (every
    `Job` class registers there), else `unknown`; `job_log_listener` takes another registry.
    """
    _log_event(event, default_registry)


def job_log_listener(registry: Registry) -> Any:
    """`log_event` for an app with its own registry: names it does not know are logged as `unknown`."""

    def listen(event: JobEvent) -> None:
        _log_event(event, registry)

    return listen


def _log_event(event: JobEvent, registry: Registry) -> None:
    if event.kind == "queued":
        return  # the producer's business: a dispatch is not a line in the job log
    if event.kind == "processing":
        if job_log.isEnabledFor(logging.DEBUG):
            _write(logging.DEBUG, "job started", _fields(event, registry))
        return
    level = _LEVELS.get(event.kind, logging.INFO)
    if not job_log.isEnabledFor(level):  # at WARNING, failures are still said
        return
    fields = _fields(event, registry)
    fields["outcome"] = event.kind
    fields["runtime_ms"] = round(event.runtime_s * 1000, 1)
    if event.delay:
        fields["delay_s"] = event.delay
    if event.error:
        fields["error"] = f"{event.error_type}: {event.error}"
    _write(level, "job " + event.kind, fields)


def _write(level: int, message: str, fields: dict[str, Any]) -> None:
    """The record built directly: `Logger.log` would walk the stack for the caller's file and line on
    every job (a few microseconds), and a job log line's place in our code tells nobody anything."""
    record = job_log.makeRecord(job_log.name, level, __file__, 0, message, (), None, extra={"sqsjobs": fields})
    job_log.handle(record)


def _fields(event: JobEvent, registry: Registry) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "job_id": event.job_id,
        "job": registry.known_name(event.job_name),
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
    """`HH:MM:SS LEVEL message key=value ...`: one record, one line, whatever its text holds.

    The message and every value are escaped (`escape`); a value with a space, `=`, a quote or a
    backslash is quoted (`value`). A traceback follows on lines of its own, each starting with
    `  | `, so no line of it can pass for a record of its own.
    """

    _stamp = (-1, "")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # as logging.Formatter: dictConfig and fileConfig pass its arguments
        #: `value()` of the repeating fields' values seen so far (emptied when it reaches _KEPT_MAX).
        self._kept: dict[str, str] = {}

    def format(self, record: logging.LogRecord) -> str:
        second, clock = self._stamp
        if int(record.created) != second:  # one time string per second, not per line
            clock = self.formatTime(record, "%H:%M:%S")
            self._stamp = (int(record.created), clock)
        base = f"{clock} {record.levelname:<7} {escape(record.getMessage())}"
        fields = getattr(record, "sqsjobs", None)
        if isinstance(fields, dict) and fields:
            base += " " + self._fields(fields)
        if record.exc_info:
            lines = self.formatException(record.exc_info).split("\n")
            base += "".join("\n  | " + escape(line) for line in lines)
        return base

    def _fields(self, fields: dict[str, Any]) -> str:
        """`key=value ...` of the fields a line shows, as `value()` renders each. Most of a job line's
        formatting was `value()` on the same few names; keeping them made the fields ~25% cheaper to
        format and the whole line ~8% (docs/performance.md, "Counted, not timed")."""
        kept = self._kept
        parts = []
        for key in _SHOWN:
            if key not in fields:
                continue
            raw = fields[key]
            kind = type(raw)
            if kind is int or kind is float:
                text = str(raw)  # as `value()` would, without the call
            elif kind is str and key in _REPEATING and len(raw) <= _KEPT_LONGEST:
                text = kept.get(raw)  # type: ignore[assignment]
                if text is None:
                    if len(kept) >= _KEPT_MAX:
                        kept.clear()  # a flood of new names: start again rather than grow
                    text = kept[raw] = value(raw)
            elif kind is str and _PLAIN.fullmatch(raw):
                text = raw
            else:
                text = value(raw)
            parts.append(key + "=" + text)
        return " ".join(parts)


#: C0 and C1 control characters, DEL, and the Unicode line and paragraph separators.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: One plain word: no space, quote, `=` or backslash, and nothing `_UNSAFE` matches.
_PLAIN = re.compile(r"[^\s\"'=\\\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape(text: str) -> str:
    """`text` with every control character and line break written as an escape (`\\n`, `\\x1b`, ...)."""
    return _UNSAFE.sub(_escape_one, text)


def value(raw: object) -> str:
    """A field's value for a text line: bare when it is one plain word, else quoted and escaped."""
    kind = type(raw)
    if kind is int or kind is float:
        return str(raw)  # digits, a sign, a dot, `e`, `inf` or `nan`: always one plain word
    # The text itself, as an exact str: a str subclass's own `__str__` or `__format__` (an Enum member's)
    # must never decide what reaches a line after the check below.
    text = str.__str__(raw) if isinstance(raw, str) else str(raw)
    if type(text) is not str:
        text = str.__str__(text)
    if _PLAIN.fullmatch(text):
        return text
    return '"' + escape(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is at each write, not as it was at `configure()`: a record
    written late (by the writer thread) must not go to a stream that was swapped out and closed
    since (a test runner's capture of one CLI call)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # StreamHandler.__init__ and setStream assign it; the current stderr always wins

    def emit(self, record: logging.LogRecord) -> None:
        self.emit_many([record])

    def emit_many(self, records: list[logging.LogRecord]) -> None:
        """The lines of a burst in as few writes as keep each line whole.

        stderr is line-buffered, so a write per line was a system call per job line. A write to a pipe
        stays in one piece only up to PIPE_BUF bytes, and other processes (the process executor's
        children, a sidecar) may write to the same stderr: lines are joined up to that size, never
        beyond. A record that cannot be formatted, or a write that fails, costs its own line only."""
        lines: list[tuple[logging.LogRecord, str]] = []
        for record in records:
            if record.levelno < self.level or not self.filter(record):
                continue
            try:
                lines.append((record, self.format(record) + self.terminator))
            except Exception:  # its own fault (its message, an argument whose str() fails or recurses)
                self._report(record)
        start, size = 0, 0
        for end, (_, line) in enumerate(lines):
            # Bytes, roughly: exact for ASCII, an upper bound (4 per character) otherwise.
            length = len(line) if line.isascii() else 4 * len(line)
            if size and size + length > _PIPE_BUF:
                self._write(lines[start:end])
                start, size = end, 0
            size += length
        if start < len(lines):
            self._write(lines[start:])

    def _write(self, lines: list[tuple[logging.LogRecord, str]]) -> None:
        try:
            self.stream.write("".join(line for _, line in lines))
            return
        except Exception:
            if len(lines) == 1:
                self._report(lines[0][0])
                return
        for record, line in lines:  # the joined write failed: each line on its own, each failure its own
            try:
                self.stream.write(line)
            except Exception:
                self._report(record)

    def _report(self, record: logging.LogRecord) -> None:
        # logging's own report (with logging.raiseExceptions); one that fails too (it re-raises a
        # RecursionError) must not cost the burst's other lines.
        with contextlib.suppress(Exception):
            self.handleError(record)


#: A pipe keeps a write whole up to this many bytes (POSIX guarantees at least 512; Linux has 4,096).
_PIPE_BUF: int = getattr(select, "PIPE_BUF", 512)

#: How long the writer lets records gather before it writes them, once one is waiting.
_GATHER_S = 0.05


class _Writer(logging.Handler):
    """Job threads only append records; one thread formats and writes them, so ten job threads never
    queue up on the stream's lock, and a slow stderr never holds a job.

    Unlike logging's QueueListener, the writer is not woken for every record: the first record after
    a quiet spell rings the bell, and the writer then lets records gather for `_GATHER_S` before writing
    them all. A wake-up per job line cost more CPU than formatting it (two thread switches on every job).

    `emit` takes no lock: a signal handler logs on the main thread between any two bytecodes, also in
    the middle of another `emit` (the worker's SIGTERM handler does), and a lock held there would never
    be released. A deque append is atomic, and `SimpleQueue.put` is safe to re-enter from a handler."""

    def __init__(self, target: _Stderr) -> None:
        super().__init__()
        self._target = target
        self._records: collections.deque[logging.LogRecord] = collections.deque()
        #: The doorbell: one item wakes the writer. `_rung` (no lock: a race rings twice, never not
        #: at all) keeps a burst of records from ringing once each.
        self._bell: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._rung = False
        self._halt = threading.Event()
        #: One writer at a time (the thread, or `drain` from a CLI verb), so lines keep their order.
        self._writing = threading.Lock()
        self._thread: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)
        if not self._rung:
            try:
                self._rung = True
            finally:  # an exception raised into this thread (a job's timeout) must not leave it rung and silent
                self._bell.put(None)

    def handle(self, record: logging.LogRecord) -> bool:
        # Handler.handle takes the handler's lock around emit; appending to a deque needs none.
        if self.filter(record):
            self.emit(record)
        return True

    def flush(self) -> None:
        self.drain()  # logging.shutdown() and anyone holding the handler get what they expect

    def start(self) -> None:
        self._halt.clear()
        self._thread = threading.Thread(target=self._run, name="sqsjobs-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write every record waiting, and stop the thread."""
        self._halt.set()
        self._bell.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None
        self.drain()

    def _run(self) -> None:
        while not self._halt.is_set():
            self._bell.get()
            self._halt.wait(_GATHER_S)
            # Before the drain: a record appended from here on rings again; one appended before is drained.
            self._rung = False
            try:
                self.drain()
            except Exception:  # the stream failed outside `emit` (its flush): say so, and the thread goes on
                self.handleError(logging.makeLogRecord({"msg": "sqsjobs could not write its log lines"}))

    def drain(self) -> None:
        with self._writing:
            records: list[logging.LogRecord] = []
            while True:
                try:
                    records.append(self._records.popleft())
                except IndexError:
                    break
            if not records:
                return
            self._target.emit_many(records)
            self._target.flush()


_writer: _Writer | None = None


@atexit.register
def _drain() -> None:
    if _writer is not None:
        _writer.stop()


def flush() -> None:
    """Write every record logged so far. A CLI verb calls it before it returns or prints its error
    line, so its log lines land in its own output, in order, and none is written after its stream
    (a test runner's capture) is gone."""
    if _writer is not None:
        _writer.drain()


def configure(log_format: str = "text", level: str = "INFO") -> None:
    """Set up the `sqsjobs` loggers for a process we own (worker, CLI); libraries leave this alone."""
    handler = _Stderr()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    global _writer
    previous, _writer = _writer, _Writer(handler)
    _writer.start()
    root = logging.getLogger("sqsjobs")
    root.handlers[:] = [_writer]
    if previous is not None:
        previous.stop()  # after the swap, so records logged until then are written by one writer or the other
    root.setLevel(level.upper())
    root.propagate = False

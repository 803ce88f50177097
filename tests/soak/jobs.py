"""The jobs the soak's worker subprocesses run (`sqsjobs work --app tests.soak.jobs`).

Every job records what it does outside AWS, so the checks never trust the system under test:
one JSON line per event, appended to `$SOAK_DIR/<pid>.log` (one file per process, one `write`
per line, so a SIGKILL can at worst cut the last line, which the reader skips). Fields:

    ev    start | end | effect | stepped | hook | outcome | faults
    tag   the soak's name for the logical job (unique per job; callbacks: "<owner>:<callback>")
    id    the job id          a   the attempt (receive count)     pid, t   process and time
    mid   (start) the SQS message id      w   (start) the worker: threads | async (`sqsjobs work --async`)
    th    (start of a coroutine job) the thread it started on
    key   idempotency / unique key (idem, unique)    step  step name (effect, stepped)
    kind  (outcome lines) the runner's event: processed, failed, rejected, released, deferred

`outcome` lines come from a listener on the worker's app events (registered by the first job that
runs in a process): the runner emits `processed` / `failed` only after a chain or batch job's run
is written down as decided and its bookkeeping is done, so they bound when a rerun is a bug.
`faults` lines (once a second, when sqsjobs.testing.faults is loaded) hold the process's injected
fault counts so far, by `service:operation:kind`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqsjobs import Job, Limit, PermanentError, RateLimited, rate_limiter
from sqsjobs.events import JobEvent

RATE_LIMIT_PER_SECOND = 25
rate_limiter("soak", Limit.per_second(RATE_LIMIT_PER_SECOND))

_fd: int | None = None
_fd_lock = threading.Lock()
_listening: set[int] = set()


def soak_dir() -> Path:
    return Path(os.environ["SOAK_DIR"])


def write(record: dict[str, Any]) -> None:
    global _fd
    record.setdefault("pid", os.getpid())
    record.setdefault("t", round(time.time(), 6))
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    if _fd is None:
        with _fd_lock:
            if _fd is None:
                _fd = os.open(soak_dir() / f"{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, line)


def _report_faults() -> None:
    """Every second, this process's injected-fault counts so far (the last line before a SIGKILL wins)."""
    faults = sys.modules.get("sqsjobs.testing.faults")
    if faults is None:
        return
    plan = faults.plan()
    last = None
    while True:
        time.sleep(1.0)
        with plan._lock:
            counts = {f"{s}:{o}:{k}": n for (s, o, k), n in plan.injected.items()}
        if counts != last:
            write({"ev": "faults", "counts": counts})
            last = counts


def _on_event(event: JobEvent) -> None:
    if event.kind == "processing":
        return
    write(
        {"ev": "outcome", "kind": event.kind, "id": event.job_id, "job": event.job_name, "a": event.attempt}
        | ({"err": f"{event.error_type}: {event.error}"[:300]} if event.error_type else {})
    )


def _message_id() -> str:
    """The SQS message id of the message this run came from (evidence only: it tells two messages
    from one message delivered twice). Found on the runner's stack; "" when it is not there."""
    frame = sys._getframe(1)
    while frame is not None:
        message = frame.f_locals.get("message")
        if message is not None and hasattr(message, "message_id") and hasattr(message, "receipt_handle"):
            return str(message.message_id)
        frame = frame.f_back  # type: ignore[assignment]
    return ""


class SoakJob(Job, abstract=True):
    """Records start and end; every soak job has a `tag`."""

    tries = 5
    backoff = 1

    tag: str

    def mark(self, ev: str, **extra: Any) -> None:
        write({"ev": ev, "tag": self.tag, "id": self.job_id, "a": self.attempts, **extra})

    def handle(self) -> None:
        self.listen()
        self.mark("start", mid=_message_id(), w=os.environ.get("SOAK_WORKER", ""))
        self.work()
        self.mark("end")

    def work(self) -> None:
        """The job's own work between its start and end markers."""

    def listen(self) -> None:
        app = self._ctx.app if self._ctx is not None else None
        if app is not None and id(app) not in _listening:
            with _fd_lock:
                if id(app) not in _listening:
                    _listening.add(id(app))
                    app.events.listen(_on_event)
                    threading.Thread(target=_report_faults, name="soak-faults", daemon=True).start()

    def failed(self, exc: BaseException) -> None:
        self.mark("hook", err=type(exc).__name__)


class Plain(SoakJob, name="soak.plain"):
    """Does nothing but record; may legitimately run twice after a SIGKILL (delete flush window)."""


class AsyncPlain(SoakJob, name="soak.async-plain"):
    """A plain job with an `async def handle`: run as a task on the loop of a `--async` worker, and on a
    private loop by a thread worker. Its end marker comes after the loop turns once."""

    async def handle(self) -> None:  # type: ignore[override]  # a coroutine job: `sqsjobs work --async` awaits it
        self.listen()
        # The thread says where it ran: on an `--async` worker, its loop's (tests.soak.checks).
        thread = threading.current_thread().name
        self.mark("start", mid=_message_id(), w=os.environ.get("SOAK_WORKER", ""), th=thread)
        await asyncio.sleep(0)
        self.mark("end")


class Unique(SoakJob, name="soak.unique"):
    unique_for = 600

    key: str

    def unique_id(self) -> str:
        return self.key

    def work(self) -> None:
        time.sleep(0.05)  # hold the lock a little while a duplicate is being dispatched


class Idempotent(SoakJob, name="soak.idem"):
    """Three steps, each an effect recorded once; `flaky` raises after step b on attempt 1."""

    tries = 30  # generous: a SIGKILLed run's key is taken over only after its timeout (+ the clock skew)
    timeout = 5

    key: str
    flaky: bool = False

    def idempotency_key(self) -> str:
        return self.key

    def work(self) -> None:
        for step in ("a", "b", "c"):
            self.step(step, lambda step=step: self._effect(step))  # type: ignore[misc]
            self.mark("stepped", key=self.key, step=step)
            if self.flaky and step == "b" and self.attempts == 1:
                raise RuntimeError("designed transient failure after step b")

    def _effect(self, step: str) -> str:
        self.mark("effect", key=self.key, step=step)
        return f"{self.key}:{step}"


class Step(SoakJob, name="soak.step"):
    """A chain link or batch member; `broken` makes it fail for good (PermanentError)."""

    tries = 20  # releases while another run holds a dispatch-once mark count as attempts

    broken: bool = False

    def work(self) -> None:
        if self.broken:
            raise PermanentError(f"designed permanent failure of {self.tag}")


class Callback(SoakJob, name="soak.callback"):
    """A chain's catch or a batch's then/catch/finally; tag is `<owner tag>:<callback>`."""


class Rated(SoakJob, name="soak.rate"):
    tries = 40  # every "limited" release is an attempt

    def middleware(self) -> list[Any]:
        return [RateLimited("soak")]


class Large(SoakJob, name="soak.large"):
    """A body over SQSJOBS_PAYLOAD_THRESHOLD: travels through S3."""

    blob: str

    def work(self) -> None:
        if len(self.blob) < 4096:
            raise PermanentError("the large payload came back short")


class FailByJob(SoakJob, name="soak.fail-by-job"):
    def work(self) -> None:
        self.fail("designed: failed by the job")


class Permanent(SoakJob, name="soak.permanent"):
    def work(self) -> None:
        raise PermanentError("designed permanent error")


class Exhaust(SoakJob, name="soak.exhaust"):
    tries = 2

    def work(self) -> None:
        raise RuntimeError(f"designed failure on attempt {self.attempts}")

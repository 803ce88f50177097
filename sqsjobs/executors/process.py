"""The process executor: `handle()` in a child process that can be killed at the job's timeout.

A thread cannot be killed: a job stuck in C code (an extension holding the GIL, a blocking
syscall) outlives the interrupt the thread worker raises, and the worker must exit to get rid of
it. A process can be killed, so a worker running jobs here survives its worst jobs, as Celery's
prefork workers do. The price is a process boundary: the job travels as its registered name and
JSON payload, its outcome comes back as JSON, and nothing from a child is ever unpickled.

Children are kept and reused (a pool that grows to the number of jobs run at once), so a job
normally costs one JSON round trip over a pipe and a pydantic validation in the child; a child is
only started again after a timeout, a crash, or `max_jobs_per_child` jobs. See docs/executors.md.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from ..errors import ConfigurationError, JobTimeoutError, PermanentError, SqsJobsError
from ..job_class import Job
from . import child as _child

#: The largest answer a child may send; anything longer is not ours (a job writing to the pipe).
_MAX_REPLY_BYTES = 1_048_576
#: How often a waiting parent thread wakes, so an interrupt aimed at it is not held up by the wait.
_WAIT_SLICE_S = 1.0


class ChildJobError(SqsJobsError):
    """What a job raised in its process, as text: the type's name, its message and the child's traceback.

    The exception object itself stays in the child (it may not pickle, and unpickling what a child
    sends would run its code here); `type_name` is what to match on, and the traceback is attached
    as a note so logs and the DLQ copy show where the job broke.
    """

    def __init__(self, type_name: str, message: str, child_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.child_traceback = child_traceback
        if child_traceback:
            self.add_note(f"in the job's process:\n{child_traceback.rstrip()}")


class ChildPermanentError(ChildJobError, PermanentError):
    """A `PermanentError` (or a type in the job's `fail_on`) raised in the job's process: no retries."""


@dataclass(slots=True, eq=False)
class _Child:
    process: BaseProcess
    conn: Connection
    jobs: int = 0


class ProcessExecutor:
    """Runs `handle()` in child processes and kills one whose job passes its timeout.

    Parameters:
        modules: the modules that define (and so register) your jobs, as in SQSJOBS_APP; every
            child imports them at start, and runs only jobs registered by them.
        app_factory: builds the App a child's jobs use (`self.step`, `self.batch`, their own
            dispatches), e.g. `functools.partial(App, settings)`; it must pickle, so a module-level
            function or a partial of one. Without it, jobs see the child's default app (from SQSJOBS_*).
        grace: seconds between SIGTERM (raised in the job as JobTimeoutError, so `finally` blocks
            run) and SIGKILL.
        start_method: "spawn" (default: safe in a threaded worker) or "forkserver" (Unix; starts
            later children faster, the job modules preloaded in the server).
        start_timeout: seconds a new child may take to import the job modules.
        max_jobs_per_child: replace a child after this many jobs (memory a job leaks goes with it).
    """

    def __init__(
        self,
        modules: Sequence[str] = (),
        *,
        app_factory: Callable[[], Any] | None = None,
        grace: float = 2.0,
        start_method: str = "spawn",
        start_timeout: float = 60.0,
        max_jobs_per_child: int | None = None,
    ) -> None:
        self.modules = tuple(m.strip() for m in modules if m.strip())
        self.app_factory = app_factory
        self.grace = grace
        self.start_timeout = start_timeout
        self.max_jobs_per_child = max_jobs_per_child
        self._context: BaseContext = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self._context.set_forkserver_preload(["sqsjobs", *self.modules])
        self._idle: list[_Child] = []
        self._busy: set[int] = set()
        self._children: dict[int, _Child] = {}
        self._lock = threading.Lock()
        self._closed = False
        _live.add(self)

    # -- the one call ----------------------------------------------------------------------
    def run(self, job: Job, timeout: float) -> None:
        """Run `job.handle()` in a child; raise what it raised (mapped), or JobTimeoutError past `timeout`.

        `release()` and `fail()` called in the child are applied to `job` here, so the runner
        decides exactly as if `handle()` had run in this process.

        A `ConfigurationError` (no child could start, or the children do not know the job) means
        `handle()` never ran: the job is left marked as not run, so a release then spends no try.
        """
        name = type(job).job_name
        try:
            child = self._hand_over(_child.encode_request(job))
        except ConfigurationError:
            _not_run(job)
            raise
        if job._ctx is not None:
            job._ctx.handled = True  # from here on a child runs it: a timeout or a crash spends the try
        try:
            answered = self._wait(child, timeout)
        except BaseException:  # an interrupt aimed at this thread: the job must not run on unseen
            self._stop(child)
            raise
        if not answered:
            how = self._stop(child)
            raise JobTimeoutError(f"{name} ran longer than its timeout of {timeout:g}s; its process was {how}")
        try:
            raw = child.conn.recv_bytes(_MAX_REPLY_BYTES)
        except (EOFError, OSError):
            self._stop(child)
            code = child.process.exitcode
            raise ChildJobError(
                "JobProcessDied",
                f"the process running {name} ended before it answered (exit code {code}"
                f"{', killed by a signal' if code is not None and code < 0 else ''}); out of memory?",
            ) from None
        self._put_back(child)
        self._apply(job, raw)

    # -- children ----------------------------------------------------------------------------
    def _hand_over(self, request: bytes) -> _Child:
        """Give the request to an idle child (or a new one); one whose pipe broke while idle is replaced."""
        for _ in range(2):
            child = self._take()
            try:
                child.conn.send_bytes(request)
                return child
            except OSError:
                self._stop(child)
        child = self._start()
        child.conn.send_bytes(request)
        return child

    def _take(self) -> _Child:
        with self._lock:
            if self._closed:
                raise RuntimeError("this ProcessExecutor was closed")
            if self._idle:
                child = self._idle.pop()
                self._busy.add(id(child))
                return child
        return self._start()

    def _start(self) -> _Child:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(  # type: ignore[attr-defined]  # every concrete context has it
            target=_child.main,
            args=(child_end, self.modules, self.app_factory),
            name="sqsjobs-job",
        )
        process.start()
        child_end.close()  # the child holds its end; ours closed, a dead child reads as EOF
        child = _Child(process, parent_end)
        with self._lock:
            self._children[id(child)] = child
            self._busy.add(id(child))
        try:
            if not parent_end.poll(self.start_timeout):
                raise ConfigurationError(
                    f"a job process did not start within {self.start_timeout:g}s (importing {self._named()})"
                )
            ready = _loads(parent_end.recv_bytes(_MAX_REPLY_BYTES))
        except (EOFError, OSError):
            self._stop(child)
            raise ConfigurationError(
                f"a job process ended while starting (exit code {process.exitcode}; importing {self._named()})"
            ) from None
        except BaseException:
            self._stop(child)
            raise
        if ready.get("ready") is not True:
            self._stop(child)
            error = _dict(ready.get("error"))
            raise ConfigurationError(
                f"a job process could not start ({self._named()}): "
                f"{_text(error.get('type'))}: {_text(error.get('message'))}"
            )
        return child

    def _put_back(self, child: _Child) -> None:
        child.jobs += 1
        with self._lock:
            keep = not self._closed and not (self.max_jobs_per_child and child.jobs >= self.max_jobs_per_child)
            if keep:
                self._busy.discard(id(child))
                self._idle.append(child)
        if not keep:
            self._stop(child, gently=True)

    def _stop(self, child: _Child, *, gently: bool = False) -> str:
        """End a child: SIGTERM, then SIGKILL after the grace; `gently` first closes its pipe and waits."""
        with self._lock:
            self._busy.discard(id(child))
            self._children.pop(id(child), None)
            if child in self._idle:
                self._idle.remove(child)
        process = child.process
        how = "already gone"
        if gently:
            child.conn.close()  # an idle child reads EOF and exits on its own
            process.join(self.grace)
        if process.is_alive():
            process.terminate()
            process.join(self.grace)
            how = "stopped with SIGTERM"
            if process.is_alive():
                process.kill()
                process.join(5)
                how = f"killed (SIGKILL, {self.grace:g}s after SIGTERM)"
        child.conn.close()
        return how

    def _wait(self, child: _Child, timeout: float) -> bool:
        """Whether the child answered (or died) before `timeout`; waits in slices so interrupts get through."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return child.conn.poll(0)
            if child.conn.poll(min(left, _WAIT_SLICE_S)):
                return True

    def _named(self) -> str:
        return ", ".join(self.modules) or "no job modules"

    # -- the answer ----------------------------------------------------------------------------
    def _apply(self, job: Job, raw: bytes) -> None:
        """Carry the child's release/fail requests over to `job`, then raise what it raised."""
        reply = _loads(raw)
        ctx = job._ctx
        if ctx is not None:
            if reply.get("released") is True:
                ctx.released = True
                delay = reply.get("release_delay")
                if isinstance(delay, int) and not isinstance(delay, bool):
                    ctx.release_delay = delay
            if isinstance(reply.get("fail_reason"), str):
                ctx.fail_reason = _text(reply["fail_reason"])
        error = reply.get("error")
        if error is None:
            return
        error = _dict(error)
        type_name, message, trace = _text(error.get("type")), _text(error.get("message")), _text(error.get("traceback"))
        kind = error.get("kind")
        if kind == _child.KIND_TIMEOUT:
            raise JobTimeoutError(message)
        if kind == _child.KIND_UNKNOWN_JOB:
            _not_run(job)
            raise ConfigurationError(
                f"the job processes know no job named {type(job).job_name!r}; they import only {self._named()} "
                "(SQSJOBS_APP), so add the module that defines it there"
            )
        if kind == _child.KIND_PERMANENT:
            raise ChildPermanentError(type_name, message, trace)
        raise ChildJobError(type_name, message, trace)

    # -- shutting down -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every child: idle ones exit at once; one still running a job is stopped as at a timeout."""
        with self._lock:
            self._closed = True
            children = list(self._children.values())
        for child in children:
            self._stop(child, gently=id(child) not in self._busy)

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _not_run(job: Job) -> None:
    """`handle()` never started (a caller's `run_handle` marks it as entered before calling us)."""
    if job._ctx is not None:
        job._ctx.handled = False


def _loads(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ChildJobError("BadAnswer", "the job's process answered something that is not ours")
    return data


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return value[: _child.MAX_TEXT] if isinstance(value, str) else ""


#: Executors still open at interpreter exit: their children are stopped before multiprocessing
#: waits for them (it joins non-daemon children, and children are not daemons so jobs may fork).
_live: weakref.WeakSet[ProcessExecutor] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for executor in list(_live):
        executor.close()

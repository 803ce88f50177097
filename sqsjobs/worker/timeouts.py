"""Interrupting a job thread that ran past its timeout, and noticing one that cannot be interrupted.

Python cannot kill a thread. We raise JobTimeoutError inside it
(PyThreadState_SetAsyncExc), which stops pure-Python code at its next bytecode;
code blocked in C (a socket read without a timeout) may not notice, and then
the worker reports it and exits so its supervisor can start a clean process —
the same trade Laravel makes when it kills its worker.

The watchdog has a thread of its own: it must keep looking while every other part of the
worker (the receiver in a long poll, the heartbeat in a slow call, the `--async` event loop
blocked by a coroutine job) is busy. A coroutine job is never interrupted (raising inside the
loop's thread would break every other job on it): at its deadline the watchdog asks its loop to
cancel it (`TimeoutEnforcer.watching`), the one timer all its jobs share; one still running
`grace` seconds later — it blocked the loop, or swallowed the cancellation — is wedged as well.
The watchdog sleeps until the next deadline (or the end of a grace period); a job registered with a
sooner deadline wakes it, and with nothing ahead it looks once a second: a thread waking ten times
a second for nothing costs an idle worker more CPU than its long polls.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .. import policy
from ..connections.base import ReceivedMessage
from ..errors import JobTimeoutError
from ..job_class import Job
from ..runner import Guard

log = logging.getLogger("sqsjobs.worker")

#: Longest the watchdog sleeps with no deadline ahead (a guard; a sooner deadline wakes it).
_IDLE_S = 1.0


@dataclass(slots=True, eq=False)
class RunningJob:
    """A job being run on `thread_id`, with the deadline the watchdog enforces.

    `interruptible` is False for a coroutine job: `cancel` asks its loop to cancel it at the deadline
    (raising inside the loop's thread would break every other job on it); once wedged it is reported.
    """

    thread_id: int
    job_name: str
    timeout: float
    deadline: float
    message: ReceivedMessage | None = None
    interrupted_at: float | None = None
    done: bool = False
    interruptible: bool = True
    reported: bool = False
    cancel: Callable[[], object] | None = None


def job_timeout(job: Job, worker_timeout: float | None, default: float) -> float:
    """The seconds `job` may run in this worker: policy.timeout, the one rule every way in uses."""
    return policy.timeout(type(job).timeout, worker_timeout, default)


class TimeoutEnforcer:
    """Hands out guards for job runs and interrupts the ones past their deadline."""

    def __init__(self, worker_timeout: float | None, default: float) -> None:
        self._worker_timeout = worker_timeout
        self._default = default
        self._lock = threading.Lock()
        #: Keyed by the RunningJob's id: one per job thread, any number on the event loop's thread.
        self._running: dict[int, RunningJob] = {}
        #: When the watchdog wakes by itself; a job registered with an earlier deadline sets `sooner`.
        self._wake_at = 0.0
        self.sooner = threading.Event()

    def timeout_of(self, job: Job) -> float:
        return job_timeout(job, self._worker_timeout, self._default)

    def guard_for(self, message: ReceivedMessage) -> Guard:
        """The runner's guard for one message: its job is interrupted at its timeout, and if it cannot
        be, the watchdog knows which message the stuck thread holds."""

        def guard(job: Job) -> contextlib.AbstractContextManager[None]:
            return self.guard(type(job).job_name, self.timeout_of(job), time.monotonic(), message)

        return guard

    @contextmanager
    def guard(
        self, job_name: str, timeout: float, now: float, message: ReceivedMessage | None = None
    ) -> Iterator[None]:
        running = RunningJob(threading.get_ident(), job_name, timeout, now + timeout, message)
        self._register(running)
        try:
            yield
        except JobTimeoutError:
            raise JobTimeoutError(f"{job_name} ran longer than its timeout of {timeout:g}s") from None
        finally:
            with self._lock:
                running.done = True
                self._running.pop(id(running), None)
                if running.interrupted_at is not None:
                    # An interrupt may still be pending for this thread; cancel it so it
                    # cannot fire in the worker's own code after the job returned.
                    _set_async_exc(running.thread_id, None)

    def watching(
        self, job_name: str, timeout: float, message: ReceivedMessage | None, cancel: Callable[[], object]
    ) -> RunningJob:
        """A coroutine job on the calling (event loop) thread, `cancel`led at its deadline and reported
        once wedged; `unwatch` it when it ends. Not a context manager: this is paid once per job."""
        running = RunningJob(
            threading.get_ident(),
            job_name,
            timeout,
            time.monotonic() + timeout,
            message,
            interruptible=False,
            cancel=cancel,
        )
        self._register(running)
        return running

    def _register(self, running: RunningJob) -> None:
        with self._lock:
            self._running[id(running)] = running
            sooner = running.deadline < self._wake_at
        if sooner:
            self.sooner.set()

    def next_check(self, grace: float, now: float) -> float:
        """When the watchdog must look next (a deadline, or a grace period ending), at most `_IDLE_S`
        from `now`; jobs registered later with an earlier deadline set `sooner`."""
        with self._lock:
            wake_at = now + _IDLE_S
            for running in self._running.values():
                if running.done or running.reported:
                    continue
                due = running.deadline if running.interrupted_at is None else running.interrupted_at + grace
                wake_at = min(wake_at, due)
            self._wake_at = wake_at
            self.sooner.clear()
            return wake_at

    def unwatch(self, running: RunningJob) -> None:
        with self._lock:
            running.done = True
            self._running.pop(id(running), None)

    def running_names(self) -> list[str]:
        """The jobs running now (`sqsjobs workers` shows them)."""
        with self._lock:
            return sorted(r.job_name for r in self._running.values() if not r.done)

    def interrupt_overdue(self, now: float) -> list[RunningJob]:
        """Interrupt every job past its deadline (once); return the ones already interrupted."""
        interrupted = []
        with self._lock:
            for running in self._running.values():
                if running.done or now < running.deadline:
                    continue
                if running.interrupted_at is None:
                    running.interrupted_at = now
                    if running.interruptible:
                        _set_async_exc(running.thread_id, JobTimeoutError)
                    elif running.cancel is not None:
                        _cancel(running)
                else:
                    interrupted.append(running)
        return interrupted


class Watchdog:
    """Interrupts overdue jobs; reports each one still running `grace` seconds later, once."""

    def __init__(self, enforcer: TimeoutEnforcer, grace: float, on_wedged: Callable[[RunningJob], None]) -> None:
        self._enforcer = enforcer
        self._grace = grace
        self._on_wedged = on_wedged
        self._lock = threading.Lock()
        self._wedged_threads: set[int] = set()
        self._wedged_messages: set[str] = set()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqsjobs-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def holds_thread(self, thread: threading.Thread) -> bool:
        """Whether `thread` is stuck in a job that ignored its interrupt (never wait for it); for the
        event loop's thread, whether a coroutine job on it ignored its cancellation."""
        with self._lock:
            return thread.ident in self._wedged_threads

    def holds_message(self, message: ReceivedMessage) -> bool:
        with self._lock:
            return message.receipt_handle in self._wedged_messages

    def check(self) -> None:
        now = time.monotonic()
        for running in self._enforcer.interrupt_overdue(now):
            if running.interrupted_at is None or now - running.interrupted_at < self._grace:
                continue
            with self._lock:
                if running.reported:
                    continue
                running.reported = True
                self._wedged_threads.add(running.thread_id)
                if running.message is not None:
                    self._wedged_messages.add(running.message.receipt_handle)
            self._on_wedged(running)

    def stop(self) -> None:
        self._halt.set()
        self._enforcer.sooner.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._halt.is_set():
            now = time.monotonic()
            wake_at = self._enforcer.next_check(self._grace, now)
            if wake_at > now and not self._halt.is_set():  # `stop` may have rung while next_check cleared
                self._enforcer.sooner.wait(wake_at - now)
            if self._halt.is_set():
                return
            try:
                self.check()
            except Exception:
                log.exception("the timeout watchdog failed; trying again")
                self._halt.wait(0.1)  # not a busy loop while it keeps failing


def _cancel(running: RunningJob) -> None:
    assert running.cancel is not None
    try:
        running.cancel()
    except RuntimeError:  # its loop has closed: nothing left there to cancel
        log.debug("the loop of %s has closed; nothing to cancel", running.job_name)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )

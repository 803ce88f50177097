"""Interrupting a job thread that ran past its timeout.

Python cannot kill a thread. We raise JobTimeoutError inside it
(PyThreadState_SetAsyncExc), which stops pure-Python code at its next bytecode;
code blocked in C (a socket read without a timeout) may not notice, and then
the worker reports it and exits so its supervisor can start a clean process —
the same trade Laravel makes when it kills its worker.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import JobTimeoutError


@dataclass(slots=True)
class RunningJob:
    """A job being run on `thread_id`, with the deadline the housekeeper enforces."""

    thread_id: int
    job_name: str
    timeout: float
    deadline: float
    interrupted_at: float | None = None
    done: bool = False


class TimeoutEnforcer:
    """Hands out guards for job runs and interrupts the ones past their deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, RunningJob] = {}

    @contextmanager
    def guard(self, job_name: str, timeout: float, now: float) -> Iterator[None]:
        running = RunningJob(threading.get_ident(), job_name, timeout, now + timeout)
        with self._lock:
            self._running[running.thread_id] = running
        try:
            yield
        except JobTimeoutError:
            raise JobTimeoutError(f"{job_name} ran longer than its timeout of {timeout:g}s") from None
        finally:
            with self._lock:
                running.done = True
                self._running.pop(running.thread_id, None)
                if running.interrupted_at is not None:
                    # An interrupt may still be pending for this thread; cancel it so it
                    # cannot fire in the worker's own code after the job returned.
                    _set_async_exc(running.thread_id, None)

    def interrupt_overdue(self, now: float) -> list[RunningJob]:
        """Interrupt every job past its deadline (once); return the ones already interrupted."""
        interrupted = []
        with self._lock:
            for running in self._running.values():
                if running.done or now < running.deadline:
                    continue
                if running.interrupted_at is None:
                    running.interrupted_at = now
                    _set_async_exc(running.thread_id, JobTimeoutError)
                else:
                    interrupted.append(running)
        return interrupted


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )

"""A circuit breaker shared by key: after enough exceptions, jobs are held back for a while."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..events import QueueEvent
from ..job_class import Job
from .base import Middleware, Next, app_of, now_of, store_of


class ThrottlesExceptions(Middleware):
    """A circuit shared by key: after `max_attempts` exceptions within `decay` seconds, jobs with
    that key are released (not run) until the decay has passed.

    Parameters:
        max_attempts: exceptions that open the circuit.
        decay: seconds the count lives, and the circuit stays open.
        by: the key (default: the job's name); jobs sharing it share one circuit.
        when: only exceptions for which this returns True count.
        backoff: seconds to release a job that raised while the circuit was still closed.
    """

    def __init__(
        self,
        max_attempts: int = 10,
        decay: int = 600,
        *,
        by: str | None = None,
        when: Callable[[BaseException], bool] | None = None,
        backoff: int = 0,
    ) -> None:
        self.max_attempts = max_attempts
        self.decay = decay
        self.by = by
        self.when = when
        self.backoff = backoff

    def handle(self, job: Job, next: Next) -> Any:
        key = self.by or type(job).job_name
        store = store_of(job)
        opened = store.get(("circuit-open", key))
        if opened is not None:
            # `until` is on the clock of the worker that opened it; the store keeps the item live for the
            # clock skew past it, so wait that long too rather than coming back to find it still open.
            job.release(max(1, math.ceil(float(opened["until"]) + store.skew - now_of(job))))
            return None
        try:
            return next()
        except Exception as exc:
            if self.when is not None and not self.when(exc):
                raise
            count = store.incr(("circuit", key), 1, ttl=self.decay)
            if count is not None and count >= self.max_attempts:
                # Whole seconds: DynamoDB takes no floats (a float here never opened the circuit there).
                until = math.ceil(now_of(job) + self.decay)
                if store.add(("circuit-open", key), {"until": until}, ttl=self.decay):
                    # Only the worker whose write opened it announces it: one event per opening.
                    app_of(job).events.emit(
                        QueueEvent(
                            "circuit_opened",
                            job._ctx.queue if job._ctx is not None else "",
                            {"key": key, "job": type(job).job_name, "exceptions": count, "until": until},
                        )
                    )
            if self.backoff:
                job.release(self.backoff)
                return None
            raise

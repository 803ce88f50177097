"""Acknowledge a job without running it: on a condition, or once its batch is cancelled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..job_class import Job
from .base import Middleware, Next


class Skip(Middleware):
    """Acknowledge the job without running it when a condition holds (`Skip.when(...)`)."""

    def __init__(self, condition: bool | Callable[[Job], bool], run_when: bool = False) -> None:
        self._condition = condition
        self._run_when = run_when

    @classmethod
    def when(cls, condition: bool | Callable[[Job], bool]) -> Skip:
        return cls(condition, run_when=False)

    @classmethod
    def unless(cls, condition: bool | Callable[[Job], bool]) -> Skip:
        return cls(condition, run_when=True)

    def handle(self, job: Job, next: Next) -> Any:
        value = self._condition(job) if callable(self._condition) else self._condition
        if bool(value) == self._run_when:
            return next()
        return None


class SkipIfBatchCancelled(Middleware):
    """Acknowledge a batch's job without running it once the batch is cancelled (one store read).

    A skipped job counts as processed, so a cancelled batch still finishes and its
    `finally` runs; `then` does not (a cancelled batch never succeeds).
    """

    def handle(self, job: Job, next: Next) -> Any:
        found = job.batch
        if found is not None and found.cancelled:
            return None
        return next()

"""Fail a job at once, without retries, on chosen exception types."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import PermanentError
from ..job_class import Job
from .base import Middleware, Next


class FailOnException(Middleware):
    """Fail the job at once (no retries) when it raises one of these exception types."""

    def __init__(self, types: Iterable[type[BaseException]]) -> None:
        self._types = tuple(types)

    def handle(self, job: Job, next: Next) -> Any:
        try:
            return next()
        except self._types as exc:
            raise PermanentError(f"{type(exc).__name__}: {exc}") from exc

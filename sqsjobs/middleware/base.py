"""Job middleware: small objects with one `handle(job, next)`, listed by a job's `middleware()`.

A middleware runs around `handle()`. It can let the job run (`next()`), or not:
release it for later (`job.release(delay)`), fail it (`job.fail(reason)`), or
just return, which acknowledges the message without running the job (a skip).
Custom middleware subclass `Middleware` (or are any object with that `handle`).

The built-ins that share state across workers keep it in the app's store
(DynamoDB in production): `RateLimited`, `WithoutOverlapping`, `ThrottlesExceptions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import context
from ..job_class import Job

#: The rest of the pipeline: the next middleware, or `handle()` itself.
Next = Callable[[], Any]


class Middleware:
    """Base class: the default lets the job run."""

    def handle(self, job: Job, next: Next) -> Any:
        return next()


def run_through(middleware: Iterable[Any], job: Job, innermost: Next) -> Any:
    """Call `innermost` through each middleware in order (the first listed is the outermost)."""
    chain = innermost
    for layer in reversed(list(middleware)):
        chain = _bind(layer, job, chain)
    return chain()


def _bind(layer: Any, job: Job, next_: Next) -> Next:
    return lambda: layer.handle(job, next_)


def app_of(job: Job) -> Any:
    """The app running this job (the worker's, not necessarily the current one)."""
    if job._ctx is not None and job._ctx.app is not None:
        return job._ctx.app
    return context.current()


def store_of(job: Job) -> Any:
    return app_of(job).store


def now_of(job: Job) -> float:
    return float(app_of(job).clock())

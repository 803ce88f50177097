"""Job middleware: small objects with one `handle(job, next)`, listed by a job's `middleware()`.

A middleware runs around `handle()`. It can let the job run (`next()`), or not:
release it for later (`job.release(delay)`), fail it (`job.fail(reason)`), or
just return, which acknowledges the message without running the job (a skip).
Custom middleware subclass `Middleware` (or are any object with that `handle`).

The built-ins that share state across workers keep it in the app's store
(DynamoDB in production): `RateLimited`, `WithoutOverlapping`, `ThrottlesExceptions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, PermanentError

if TYPE_CHECKING:
    from .job import Job

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


def _app(job: Job) -> Any:
    """The app running this job (the worker's, not necessarily the current one)."""
    if job._ctx is not None and job._ctx.app is not None:
        return job._ctx.app
    from .app import current_app

    return current_app()


def _store(job: Job) -> Any:
    return _app(job).store


def _now(job: Job) -> float:
    return float(_app(job).clock())


# -- no storage -----------------------------------------------------------------------------
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


class FailOnException(Middleware):
    """Fail the job at once (no retries) when it raises one of these exception types."""

    def __init__(self, types: Iterable[type[BaseException]]) -> None:
        self._types = tuple(types)

    def handle(self, job: Job, next: Next) -> Any:
        try:
            return next()
        except self._types as exc:
            raise PermanentError(f"{type(exc).__name__}: {exc}") from exc


# -- rate limits --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` jobs per `seconds`, counted separately per `by` key."""

    count: int
    seconds: int
    by: Callable[[Job], str] | None = None

    @classmethod
    def per_second(cls, count: int, by: Callable[[Job], str] | None = None) -> Limit:
        return cls(count, 1, by)

    @classmethod
    def per_minute(cls, count: int, by: Callable[[Job], str] | None = None) -> Limit:
        return cls(count, 60, by)

    @classmethod
    def per_hour(cls, count: int, by: Callable[[Job], str] | None = None) -> Limit:
        return cls(count, 3600, by)


_limiters: dict[str, Limit] = {}


def rate_limiter(name: str, limit: Limit) -> None:
    """Declare a named limiter (Laravel's `RateLimiter::for`) that `RateLimited(name)` uses."""
    _limiters[name] = limit


class RateLimited(Middleware):
    """Run the job only while its limiter's window has room; otherwise release it until the next window.

    Windows are fixed (aligned to the clock), counted with one atomic DynamoDB update per job.
    A limited job is released, not run, and the release counts as an attempt, as in Laravel;
    give rate-limited jobs enough `tries` (or a `retry_until`).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def handle(self, job: Job, next: Next) -> Any:
        limit = _limiters.get(self.name)
        if limit is None:
            raise ConfigurationError(f"no rate limiter named {self.name!r}; declare it with rate_limiter(...)")
        now = _now(job)
        window = math.floor(now / limit.seconds)
        key = limit.by(job) if limit.by else ""
        granted = _store(job).incr(("rate", f"{self.name}:{key}:{window}"), 1, ttl=limit.seconds * 2, limit=limit.count)
        if granted is None:
            job.release(max(1, math.ceil((window + 1) * limit.seconds - now)))
            return None
        return next()


# -- overlap ----------------------------------------------------------------------------------
class WithoutOverlapping(Middleware):
    """Never run two jobs with the same key at the same time, across all workers.

    Parameters:
        key: the lock key (default: the job's name, i.e. one at a time per job class).
        release_after: seconds to wait before trying again when the lock is taken.
        expire_after: the lock's upper bound, so a crashed worker cannot hold it forever
            (default: the job's timeout plus a minute).
        dont_release: drop (acknowledge) an overlapping job instead of retrying it.
        shared: share the lock across job classes (the key alone names it).
    """

    def __init__(
        self,
        key: str = "",
        *,
        release_after: int = 5,
        expire_after: int | None = None,
        dont_release: bool = False,
        shared: bool = False,
    ) -> None:
        self.key = key
        self.release_after = release_after
        self.expire_after = expire_after
        self.dont_release = dont_release
        self.shared = shared

    def handle(self, job: Job, next: Next) -> Any:
        name = self.key if self.shared else f"{type(job).job_name}:{self.key}"
        owner = job.job_id or ""
        ttl = self.expire_after or (float(type(job).timeout or 60) + 60)
        store = _store(job)
        if not store.add(("overlap", name), {"owner": owner}, ttl=ttl):
            if not self.dont_release:
                job.release(self.release_after)
            return None
        try:
            return next()
        finally:
            store.delete(("overlap", name), owner=owner)


# -- circuit breaking ---------------------------------------------------------------------------
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
        store = _store(job)
        opened = store.get(("circuit-open", key))
        if opened is not None:
            job.release(max(1, math.ceil(float(opened["until"]) - _now(job))))
            return None
        try:
            return next()
        except Exception as exc:
            if self.when is not None and not self.when(exc):
                raise
            count = store.incr(("circuit", key), 1, ttl=self.decay)
            if count is not None and count >= self.max_attempts:
                store.add(("circuit-open", key), {"until": _now(job) + self.decay}, ttl=self.decay)
            if self.backoff:
                job.release(self.backoff)
                return None
            raise

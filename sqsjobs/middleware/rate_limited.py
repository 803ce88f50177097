"""Rate limits per named limiter, counted in fixed windows in the store."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from ..job_class import Job
from .base import Middleware, Next, now_of, store_of


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
    Each worker picks its window by its own clock, so workers whose clocks disagree may count the same
    moment in different windows: with clocks up to `clock_skew` apart, at most (2 + ceil(skew / window))
    x `count` jobs start in any window-long stretch of time, against 2 x `count` with perfect clocks
    (docs/coordination.md). Keep clocks synchronised (NTP) for per-second limits.
    A limited job is not run: it comes back when the window opens *without spending a try*
    (unlike Laravel, where each release is an attempt; see docs/attempts.md).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def handle(self, job: Job, next: Next) -> Any:
        limit = _limiters.get(self.name)
        if limit is None:
            raise ConfigurationError(f"no rate limiter named {self.name!r}; declare it with rate_limiter(...)")
        now = now_of(job)
        window = math.floor(now / limit.seconds)
        key = limit.by(job) if limit.by else ""
        granted = store_of(job).incr(
            ("rate", f"{self.name}:{key}:{window}"), 1, ttl=limit.seconds * 2, limit=limit.count
        )
        if granted is None:
            job.release(max(1, math.ceil((window + 1) * limit.seconds - now)))
            return None
        return next()

"""Delay and backoff arithmetic, kept free of I/O so it is exhaustively testable."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

#: SQS limits that shape every delay we send.
MAX_DELAY_SECONDS = 900
MAX_VISIBILITY_SECONDS = 43_200

DelayLike = int | float | timedelta | datetime
BackoffLike = int | float | Sequence[int | float] | Callable[[int], int | float]


def delay_seconds(delay: DelayLike | None, now: float) -> float:
    """Seconds from `now` until the job may run; a past datetime means now."""
    if delay is None:
        return 0.0
    if isinstance(delay, datetime):
        if delay.tzinfo is None:
            raise ValueError("a datetime delay must be timezone-aware (e.g. datetime.now(UTC) + ...)")
        return max(0.0, delay.timestamp() - now)
    if isinstance(delay, timedelta):
        return max(0.0, delay.total_seconds())
    if delay < 0:
        raise ValueError(f"delay must be >= 0 seconds, got {delay}")
    return float(delay)


def backoff_seconds(backoff: BackoffLike, attempt: int, *, jitter: bool = False) -> int:
    """The wait before retry number `attempt` + 1, capped to what SQS visibility allows.

    A list gives the wait per attempt and repeats its last value, as Laravel does.
    Jitter spreads retries of many failing jobs over [wait/2, wait] so they do not
    hit a recovering dependency together.
    """
    if callable(backoff):
        wait = float(backoff(attempt))
    elif isinstance(backoff, int | float):
        wait = float(backoff)
    else:
        items = list(backoff)
        wait = float(items[min(max(attempt, 1), len(items)) - 1]) if items else 0.0
    if jitter and wait > 0:
        wait = random.uniform(wait / 2, wait)
    return clamp_visibility(wait)


def clamp_visibility(seconds: float) -> int:
    return max(0, min(MAX_VISIBILITY_SECONDS, round(seconds)))


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def has_utc(moment: datetime) -> bool:
    """Whether an aware time has a UTC datetime. An offset can move a time in year 1 or 9999 past either end
    of datetime's range (0001-01-01T00:00+23:59): its timestamp still computes, but `utc_iso` and
    `datetime.fromtimestamp` of it raise, so a time a message states is refused where it is read."""
    if moment.year not in (1, 9999):
        return True
    try:
        moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return False
    return True


def parse_iso_or(text: str, default: float) -> float:
    try:
        return parse_iso(text)
    except ValueError:
        return default


def seconds(value: float | timedelta) -> float:
    """A duration option (a number of seconds or a timedelta) in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)

"""`ManualClock`: time that moves only when a test moves it.

Give one to an App (`App(connection="memory", clock=ManualClock())`, or use `memory_app()`) and the
memory connection, the memory store and the runner all read it: delays, visibility timeouts, backoffs,
lock and rate-limit windows and `retry_until` then pass when the test says so, not when the wall
clock does, so `run_until_empty` can run a job delayed by an hour in no time at all.
"""

from __future__ import annotations

import time
from datetime import timedelta


class ManualClock:
    """Seconds since the epoch; starts at the real time (so timestamps look real) unless told otherwise."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float | timedelta) -> float:
        """Move forward by `seconds` (never back: that would break every expiry); returns the new time."""
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        if step < 0:
            raise ValueError(f"a clock moves forward only; advance() got {step} seconds")
        self.now += step
        return self.now

    def __repr__(self) -> str:
        return f"ManualClock({self.now!r})"

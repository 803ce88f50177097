"""The pure rules of a job's life: how many tries it has, which attempt this is, how long it may run.

No I/O and no imports from the rest of sqsjobs' features: the runner, the poller, the Lambda
adapter and `sqsjobs check` all ask these functions, so each rule lives in one place.
"""

from __future__ import annotations

import math

#: A copy re-sent because its job did not run carries the runs its earlier messages used (docs/attempts.md).
RUNS_ATTRIBUTE = "sqsjobs.runs"
#: ... and, when it must wait longer than SQS's 15-minute delay, when it may run (epoch seconds).
NOT_BEFORE_ATTRIBUTE = "sqsjobs.not_before"
#: ... and, with signing, when the first message of this job was sent to SQS (a stamp only a key holder
#: can make), so a copy handed back unstarted keeps the age the max-age check measures (docs/security.md).
FIRST_SENT_ATTRIBUTE = "sqsjobs.first_sent"
#: A carried count above this is not ours (a forged attribute): it is ignored.
_MAX_RUNS = 10_000
#: Seconds a `not_before` may lie ahead; anything later is not ours and is ignored.
_MAX_NOT_BEFORE_S = 14 * 24 * 3600


def tries(job_tries: int | None, default: int) -> int:
    """The tries a job has: its own `tries`, else SQSJOBS_TRIES."""
    return job_tries or default


def timeout(job_timeout: float | None, worker_timeout: float | None, default: float) -> float:
    """THE timeout rule: the job's own `timeout`, else the worker's `--timeout`, else SQSJOBS_TIMEOUT.

    The runner (claims, keys), the poller (interrupting `handle()`), the Lambda adapter (the deadline
    guard) and `WithoutOverlapping` all use this, so a job never has two timeouts.
    """
    return float(job_timeout or worker_timeout or default)


def runs_before(attributes: dict[str, str]) -> int:
    """Runs spent by earlier messages of this job; 0 when the attribute is absent or not ours."""
    raw = attributes.get(RUNS_ATTRIBUTE, "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        return 0
    value = int(raw)
    return value if value <= _MAX_RUNS else 0


def attempt(receive_count: int, attributes: dict[str, str], skipped: int = 0) -> int:
    """Which attempt this delivery is: runs, not receives.

    Every receive of a message is a run or a crash, except those whose job was postponed — on a
    standard queue a postponed message is replaced by a copy carrying the runs so far; on a FIFO
    queue (where a copy would jump its group's order) it keeps its place and the postponement is
    counted in `skipped`.
    """
    return max(1, runs_before(attributes) + receive_count - max(0, skipped))


def runs_so_far(receive_count: int, attributes: dict[str, str], skipped: int = 0) -> int:
    """What a copy of a message that was *not* run on this receive carries: the runs before it."""
    return max(0, runs_before(attributes) + receive_count - 1 - max(0, skipped))


def not_before(attributes: dict[str, str], now: float) -> float:
    """Seconds this delivery is early for (0 when it may run); forged or absurd values count as 0."""
    raw = attributes.get(NOT_BEFORE_ATTRIBUTE)
    if not raw:  # most messages: no ValueError raised and caught per job
        return 0.0
    try:
        when = float(raw)
    except ValueError:
        return 0.0
    if not math.isfinite(when) or when - now > _MAX_NOT_BEFORE_S:
        return 0.0
    return max(0.0, when - now)

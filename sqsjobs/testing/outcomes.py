"""What one delivery of a job came to, in the words tests assert on, and in sentences a failure prints.

`run_job` (one job) and `run_until_empty` (a whole queue) both end a delivery with the runner's
decision; this names it the same way for both, so `completed`, `released` or `failed` mean one thing
in every assertion and every failure message says what happened instead, exception included.
"""

from __future__ import annotations

import re
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Literal, TypeAlias

from ..decisions import Ack, Decision, Defer, Fail, Postpone, Release

Outcome: TypeAlias = Literal["completed", "skipped", "released", "retried", "held_back", "failed", "deferred"]
#: What `with_=` may be: an exception type (or a tuple of them), an exception equal by type and text,
#: the exact message, or a compiled pattern searched in it.
ErrorMatcher: TypeAlias = type[BaseException] | tuple[type[BaseException], ...] | BaseException | str | re.Pattern[str]

#: Where sqsjobs' own modules live: their frames lead a traceback up to the job's code.
_PACKAGE = str(Path(__file__).resolve().parent.parent)
#: Lines of a traceback a failure message shows (the end, where the error was raised).
_TRACEBACK_LINES = 24

_FAIL_KINDS = {
    "permanent": "a permanent error: PermanentError or one of the job's fail_on types",
    "tries_exhausted": "its tries are used up",
    "failed_by_job": "the job called fail()",
    "timeout": "it timed out and fail_on_timeout is set",
    "max_exceptions": "it reached max_exceptions",
    "retry_until": "its retry_until has passed",
    "discarded": "discarded by a triage rule",
    "held_back": "held back more times than its FIFO queue's redrive policy allows",
}
_ACK_REASONS = {
    "done": "a middleware returned without calling next()",
    "duplicate": "a duplicate: its idempotency key or workflow step was done before",
    "cancelled": "cancelled before it started",
}


def outcome_of(decision: Decision, ran: bool, error: BaseException | None) -> Outcome:
    """The word for a decision: did the job run, and what comes of its message."""
    if isinstance(decision, Ack):
        return "completed" if ran else "skipped"
    if isinstance(decision, Release):
        return "retried" if error is not None else "released"
    if isinstance(decision, Postpone):
        return "held_back"
    if isinstance(decision, Fail):
        return "failed"
    if isinstance(decision, Defer):
        return "deferred"
    raise TypeError(f"not a decision: {decision!r}")  # pragma: no cover - Decision is closed


def error_of(decision: Decision, error: BaseException | None) -> BaseException | None:
    """The exception behind a delivery: what `handle()` raised, else why the runner gave it up."""
    if error is not None:
        return error
    return decision.exception if isinstance(decision, Fail) else None


def describe(decision: Decision, ran: bool, error: BaseException | None, attempt: int, tries: int | None) -> str:
    """What the delivery came to and why, as a phrase that follows the job's name ("... raised X")."""
    of_tries = f" of {tries}" if tries else ""
    outcome = outcome_of(decision, ran, error)
    if isinstance(decision, Ack):
        if ran:
            return f"completed on attempt {attempt}{of_tries}"
        return f"was acknowledged without running ({_ACK_REASONS.get(decision.outcome, decision.outcome)})"
    if isinstance(decision, Release):
        if outcome == "retried":
            return f"raised {one_line(error)} on attempt {attempt}{of_tries}; tried again in {decision.delay} s"
        why = (
            "was released by the job"
            if decision.reason == "released by the job"
            else f"was released ({decision.reason})"
        )
        return f"{why} on attempt {attempt}{of_tries}; back in {decision.delay} s"
    if isinstance(decision, Postpone):
        return f"was held back before it ran ({decision.reason}); back in {decision.delay} s without spending a try"
    if isinstance(decision, Fail):
        kind = _FAIL_KINDS.get(decision.reason, decision.reason)
        when = f"on attempt {attempt}{of_tries}" if ran else "without running"
        return f"failed {when} ({kind}): {one_line(decision.exception)}"
    return f"is not due yet: the next hop of its delay comes in {decision.delay} s"


def one_line(error: BaseException | None) -> str:
    if error is None:
        return "nothing"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def matches(error: BaseException | None, expected: ErrorMatcher | None) -> bool:
    """Whether `error` is what `with_=` asked for (anything, when it asked for nothing)."""
    if expected is None:
        return True
    if error is None:
        return False
    if isinstance(expected, type | tuple):
        return isinstance(error, expected)
    if isinstance(expected, BaseException):
        return type(error) is type(expected) and str(error) == str(expected)
    if isinstance(expected, re.Pattern):
        return expected.search(str(error)) is not None
    return str(error) == expected


def expected_error(expected: ErrorMatcher | None) -> str:
    if expected is None:
        return ""
    if isinstance(expected, type):
        return f" with {expected.__name__}"
    if isinstance(expected, tuple):
        return " with " + " or ".join(t.__name__ for t in expected)
    if isinstance(expected, BaseException):
        return f" with {one_line(expected)}"
    if isinstance(expected, re.Pattern):
        return f" with an error matching {expected.pattern!r}"
    return f" with the message {expected!r}"


def seconds_of(delay: float | timedelta) -> int:
    """A delay as the whole seconds a decision carries."""
    return round(delay.total_seconds() if isinstance(delay, timedelta) else delay)


def traceback_text(error: BaseException | None) -> str:
    """The exception's traceback from the first frame outside sqsjobs (the runner's own frames say
    nothing about the job), for a failure message ("" without one)."""
    if error is None or error.__traceback__ is None:
        return ""
    summary = traceback.TracebackException.from_exception(error)
    frames = list(summary.stack)
    first = next((i for i, f in enumerate(frames) if not f.filename.startswith(_PACKAGE)), 0)
    summary.stack = traceback.StackSummary.from_list(frames[first:])
    lines = "".join(summary.format()).rstrip().splitlines()
    if len(lines) > _TRACEBACK_LINES:
        lines = ["  ...", *lines[-_TRACEBACK_LINES:]]
    return "\n".join(lines)

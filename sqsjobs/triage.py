"""Automated triage: what happens to a failure before anyone looks at it.

A rule names failures (exception types, and/or failure reasons such as `tries_exhausted` or
`invalid_payload`) and an action:

- `discard(...)`: the job is not kept in the DLQ (`failed()` still runs, the `failed` event is emitted
  and an INFO line says it was discarded): failures nobody will ever retry, such as a row deleted
  since the job was queued.
- `retry_later(..., after=...)`: the job goes to the DLQ as usual, and `sqsjobs failed triage` (from
  cron, a scheduled task or the scheduler) sends it back once `after` has passed since it failed.
- `alert_new(...)`: the job goes to the DLQ as usual; the first time a job fails with an exception
  type (per job and type, remembered in the table for `remember`), a `new_failure` event is emitted,
  so a listener pages on something new and never on the thousandth copy of something known.

Rules are given per job class (`triage = [...]`, checked first) and per app (`App(triage=[...])`);
the first rule that matches wins. A rule with neither exceptions nor reasons matches every failure
the job's code raised; a failure sqsjobs decides itself (a message that is no job, a crash loop,
`retry_until`) matches only a rule that names its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from .errors import type_name

Action = Literal["discard", "retry_later", "alert_new"]
#: The exceptions sqsjobs raises for failures it decides itself (not the job's code): triaged by reason only.
RUNNER_ERRORS = frozenset(
    {"MaxAttemptsExceededError", "RetryUntilPassedError", "BadMessageError", "ConfigurationError"}
)
#: How long `alert_new` remembers an exception type it has alerted on.
REMEMBER_S = 30 * 86400


@dataclass(frozen=True)
class Rule:
    action: Action
    exceptions: tuple[type[BaseException], ...] = ()
    reasons: tuple[str, ...] = ()
    #: retry_later: seconds after the failure before `sqsjobs failed triage` retries it...
    after: float = 0.0
    #: ... and how many times it does, per job, before leaving it to a person.
    times: int = 3

    def matches(self, reason: str, error: BaseException | None, raised: bool = True) -> bool:
        """`raised`: the job's code raised `error`. A failure sqsjobs decided itself (a message that is no
        job, a crash loop's `tries_exhausted`, `retry_until`) matches only a rule naming its reason: a
        broad `discard(PermanentError)` must never drop a tampered message or an unknown job unseen."""
        if self.reasons and reason not in self.reasons:
            return False
        if not raised:
            return bool(self.reasons)
        if self.exceptions:
            if error is None:
                return False
            # Raised in a child process (the process executor): only its name came back.
            remote = type_name(error)
            return isinstance(error, self.exceptions) or (
                remote != type(error).__name__ and remote in set(_names(self.exceptions))
            )
        return True

    def matches_recorded(self, reason: str, error_type: str) -> bool:
        """The same test on a DLQ copy, which keeps only the exception's class name."""
        if self.reasons and reason not in self.reasons:
            return False
        if error_type in RUNNER_ERRORS:
            return bool(self.reasons)
        if self.exceptions:
            return error_type in set(_names(self.exceptions))
        return True


def _split(on: Iterable[type[BaseException] | str]) -> tuple[tuple[type[BaseException], ...], tuple[str, ...]]:
    exceptions: list[type[BaseException]] = []
    reasons: list[str] = []
    for item in on:
        if isinstance(item, str):
            reasons.append(item)
        elif isinstance(item, type) and issubclass(item, BaseException):
            exceptions.append(item)
        else:
            raise TypeError(f"a triage rule takes exception types and failure reasons (str), not {item!r}")
    return tuple(exceptions), tuple(reasons)


def discard(*on: type[BaseException] | str) -> Rule:
    """Failures of these exception types / reasons are not kept in the DLQ."""
    exceptions, reasons = _split(on)
    return Rule("discard", exceptions, reasons)


def retry_later(*on: type[BaseException] | str, after: float | timedelta, times: int = 3) -> Rule:
    """Failures of these types / reasons are retried from the DLQ by `sqsjobs failed triage` after `after`,
    at most `times` times per job (a job that keeps failing is then left for a person)."""
    seconds = after.total_seconds() if isinstance(after, timedelta) else float(after)
    if seconds < 0:
        raise ValueError("retry_later(after=...) must not be negative")
    if not 1 <= times <= 100:
        raise ValueError("retry_later(times=...) is between 1 and 100")
    exceptions, reasons = _split(on)
    return Rule("retry_later", exceptions, reasons, seconds, times)


def alert_new(*on: type[BaseException] | str) -> Rule:
    """The first failure of each exception type per job emits `new_failure` (then the DLQ as usual)."""
    exceptions, reasons = _split(on)
    return Rule("alert_new", exceptions, reasons)


def first_match(rules: Iterable[Rule], reason: str, error: BaseException | None, raised: bool = True) -> Rule | None:
    return next((rule for rule in rules if rule.matches(reason, error, raised)), None)


def first_recorded_match(rules: Iterable[Rule], reason: str, error_type: str) -> Rule | None:
    return next((rule for rule in rules if rule.matches_recorded(reason, error_type)), None)


def _names(types: tuple[type[BaseException], ...]) -> Iterator[str]:
    """The names of these classes and of every subclass defined so far (a copy keeps only a name)."""
    stack = list(types)
    seen: set[type] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        yield cls.__name__
        stack.extend(cls.__subclasses__())

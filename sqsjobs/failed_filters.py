"""Which failed jobs a `--job / --reason / --since / --older-than` filter selects, judged on what a copy proves.

Every `sqsjobs.*` attribute of a DLQ copy is data anyone with send rights on the DLQ writes. A filter
therefore tests each copy on its *proven* values (`Proof`): the job name its body names (an envelope
that decoded, its signature checked when signing is on), else a registered `sqsjobs.job` a worker
vouched for; the reason when it checks out (with signing on: only under a worker's tag, or on a copy
SQS's redrive moved); the failure time a worker vouched for (signing off: any well-formed
`sqsjobs.failed_at`), else the time SQS received the copy (`SentTimestamp`, which no sender chooses).

A job is `MATCH`ed when every copy of it that proves a value agrees with the filter (a copy that proves
none does not vote; a redrive copy's `redrive` gives way to a stated reason): a forged copy can neither
drag the worker's own copies into a destructive verb nor, unnoticed, keep them out. A job that matches
only on what its copies claim, or whose copies disagree, is `UNVERIFIED`: `list` and `summary` show it
with `--include-unverified`; `retry`, `flush` and `prune` never act on it by filter and say how many they left.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .errors import BadMessageError
from .failures import FailedJob
from .registry import Registry
from .timing import utc_iso

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
#: A failure kind as sqsjobs writes one (`tries_exhausted`, `invalid_payload`, ...).
_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Names, as `Job(name=...)` allows them, bounded: nothing longer is ever a job's recorded name.
_MAX_NAME = 256


class Verdict(enum.Enum):
    """How a failed job stands against a filter."""

    MATCH = "match"  # on proven values, by every copy that proves one
    UNVERIFIED = "unverified"  # only on claimed values, or its copies disagree
    NO = "no"


@dataclass(frozen=True, slots=True)
class Proof:
    """What one DLQ copy proves about itself (None: only claimed, or nothing at all)."""

    job: str | None
    reason: str | None
    #: Seconds since the epoch: the failure time a worker vouched for, else when SQS received the copy.
    at: float | None
    #: The reason was written (a redrive copy states none: SQS moved it, no worker decided).
    stated: bool


def proof(job: FailedJob, *, signed: bool, body_job: str | None, registry: Registry | None = None) -> Proof:
    """The proven values of one copy. `signed`: signing is on (then only a vouched copy's attributes
    count); `body_job`: the job name of the copy's body when it decoded as an envelope (signature
    checked), which a name from the attributes must not contradict unless a worker vouched for it."""
    trusted = not signed or job.vouched
    claimed = job.job if "job" not in job.unverified and job.job != "?" else None
    if claimed is not None and (
        job.vouched
        or (not signed and body_job is None)
        or (body_job is not None and same_job(registry, claimed, body_job))
    ):
        name: str | None = claimed
    else:
        name = body_job
    reason = job.reason if "reason" not in job.unverified and job.reason != "?" else None
    at: float | None = job.failed_at_ts if trusted and job.failed_at and "failed_at" not in job.unverified else None
    if at is None and job.message.sent_at > 0:
        at = job.message.sent_at
    return Proof(job=name, reason=reason, at=at, stated=job.reason != "redrive")


def same_job(registry: Registry | None, one: str, other: str) -> bool:
    """The same name, or a name and an alias of one registered job class."""
    if one == other:
        return True
    if registry is None or one not in registry or other not in registry:
        return False
    try:
        return registry.get(one) is registry.get(other)
    except BadMessageError:
        return False


def unproven(job: FailedJob, shown: Proof) -> tuple[str, ...]:
    """The fields whose shown value the copy does not prove: `job.unverified` and what filters cannot use."""
    out = list(job.unverified)
    if job.job not in ("?", shown.job):
        out.append("job")
    if shown.reason is None:
        out.append("reason")
    if job.failed_at and (shown.at is None or abs(shown.at - job.failed_at_ts) > 0.001):
        out.append("failed_at")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class FailedFilter:
    """`--job`, `--reason`, `--since`, `--older-than`: empty sets and None select everything."""

    jobs: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    #: Failed at or after this time (seconds since the epoch).
    since: float | None = None
    #: Failed before this time.
    before: float | None = None
    #: Names in `jobs` also match the other names (aliases) of the job class registered under them.
    registry: Registry | None = field(default=None, compare=False)

    @property
    def active(self) -> bool:
        return bool(self.jobs or self.reasons or self.since is not None or self.before is not None)

    def judge(self, copies: Sequence[tuple[FailedJob, Proof]]) -> Verdict:
        """The verdict on one failed job, given each of its copies and what that copy proves."""
        if not self.active:
            return Verdict.MATCH
        proofs = [p for _, p in copies]
        if self._proven(proofs):
            return Verdict.MATCH
        if any(self._claimed(job, p) for job, p in copies):
            return Verdict.UNVERIFIED
        return Verdict.NO

    def _proven(self, proofs: Sequence[Proof]) -> bool:
        if self.jobs and not self._names([p.job for p in proofs if p.job is not None]):
            return False
        if self.reasons:
            stated = [p.reason for p in proofs if p.reason is not None and p.stated]
            votes = stated or [p.reason for p in proofs if p.reason is not None]
            if not _all_in(votes, self.reasons):
                return False
        return self._timely([p.at for p in proofs])

    def _claimed(self, job: FailedJob, shown: Proof) -> bool:
        at = job.failed_at_ts or shown.at
        return (
            (not self.jobs or self._names([job.job]))
            and (not self.reasons or job.reason in self.reasons)
            and self._timely([at if at else None])
        )

    def _names(self, votes: Sequence[str]) -> bool:
        return bool(votes) and all(any(same_job(self.registry, vote, name) for name in self.jobs) for vote in votes)

    def _timely(self, times: Sequence[float | None]) -> bool:
        if self.since is None and self.before is None:
            return True
        if not times or any(t is None for t in times):
            return False
        known = [t for t in times if t is not None]
        return (self.since is None or min(known) >= self.since) and (self.before is None or max(known) < self.before)

    def describe(self) -> str:
        """The filter in words, for notes and prompts (names are the operator's own input)."""
        parts = []
        if self.jobs:
            parts.append("job " + ",".join(sorted(self.jobs)))
        if self.reasons:
            parts.append("reason " + ",".join(sorted(self.reasons)))
        if self.since is not None:
            parts.append("failed since " + utc_iso(self.since))
        if self.before is not None:
            parts.append("failed before " + utc_iso(self.before))
        return "; ".join(parts) or "all"


def _all_in(votes: Sequence[str], allowed: frozenset[str]) -> bool:
    return bool(votes) and all(vote in allowed for vote in votes)


# -- parsing the options ---------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """`30m`, `2h`, `7d`, `1w`, `90s`, or combined (`1d12h`) as seconds; ValueError otherwise."""
    compact = text.strip().lower().replace(" ", "")
    if not _DURATION.fullmatch(compact):
        raise ValueError(f"{text!r} is not a duration: use a number and s, m, h, d or w, e.g. 30m, 2h, 7d, 1d12h")
    return sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(compact))


def parse_moment(text: str, now: float) -> float:
    """A duration ago (`7d`: seven days before `now`) or an ISO time (no zone: UTC) as a timestamp."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO time (2026-01-31T09:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_names(text: str | None) -> frozenset[str]:
    """A comma list of job names as the failed jobs record them."""
    names = frozenset(part.strip() for part in (text or "").split(",") if part.strip())
    for name in names:
        if len(name) > _MAX_NAME:
            raise ValueError(f"a job name is at most {_MAX_NAME} characters")
    return names


def parse_reasons(text: str | None) -> frozenset[str]:
    """A comma list of failure kinds (`tries_exhausted,timeout`)."""
    kinds = frozenset(part.strip() for part in (text or "").split(",") if part.strip())
    for kind in kinds:
        if not _KIND.fullmatch(kind):
            raise ValueError(f"{kind!r} is not a failure kind (lower-case letters, digits and _, e.g. tries_exhausted)")
    return kinds


def parse_filter(
    *,
    jobs: str | None = None,
    reasons: str | None = None,
    since: str | None = None,
    older_than: str | None = None,
    now: float,
    registry: Registry | None = None,
) -> FailedFilter:
    """The filter the options describe; ValueError (saying which option) when one does not parse."""
    after = parse_moment(since, now) if since else None
    before = parse_moment(older_than, now) if older_than else None
    if after is not None and before is not None and after >= before:
        raise ValueError(
            f"--since ({utc_iso(after)}) is not before --older-than ({utc_iso(before)}): nothing could match"
        )
    names, kinds = parse_names(jobs), parse_reasons(reasons)
    # An empty value would select everything: for `retry` or `flush`, a slip must not mean "all".
    if jobs is not None and not names:
        raise ValueError("--job needs at least one job name")
    if reasons is not None and not kinds:
        raise ValueError("--reason needs at least one failure kind")
    return FailedFilter(jobs=names, reasons=kinds, since=after, before=before, registry=registry)

"""What `sqsjobs.testing.fake` records, and how its assertions match and describe it.

Kept apart from the recording App so each module has one job: these are plain values and pure functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..envelope import Envelope

if TYPE_CHECKING:
    from ..job_class import Job

_MAX_PAYLOAD = 200


@dataclass(frozen=True)
class Recorded:
    """One message the fake kept: the logical queue, its envelope and the job it names, rebuilt."""

    queue: str
    envelope: Envelope
    job: Job

    def describe(self) -> str:
        text = f"{self.envelope.job} on {self.queue!r} {short_payload(self.envelope.payload)}"
        chain = self.envelope.chain
        if chain:
            rest = [step_name(link) for link in chain.get("next") or []]
            text += f" [chain {chain['id'][:8]} link {chain['pos']}" + (f", then {', '.join(rest)}]" if rest else "]")
        if self.envelope.batch_id:
            text += f" [batch {self.envelope.batch_id[:8]}]"
        return text


@dataclass
class FakeChain:
    """A chain as dispatched: its steps are jobs, or `FakeBatch`es for the links that are batches."""

    id: str
    steps: list[Any]
    catch: Job | None = None


@dataclass
class FakeBatch:
    """A batch as dispatched: `jobs` in the order given (a chain member is a list of jobs)."""

    id: str
    name: str
    queue: str | None
    allow_failures: bool
    jobs: list[Any] = field(default_factory=list)
    callbacks: dict[str, Job] = field(default_factory=dict)


# -- describing and matching ----------------------------------------------------------------------
def is_job(record: Recorded, cls: type[Job]) -> bool:
    return type(record.job) is cls or record.envelope.job == cls.job_name


def same_job(job: Any, expected: Any) -> bool:
    """A class matches its jobs; an instance an equal job (same class, same payload)."""
    from ..job_class import Job

    if isinstance(expected, type):
        return isinstance(job, expected) if not issubclass(expected, Job) else type(job) is expected
    if isinstance(expected, Job):
        return type(job) is type(expected) and job.model_dump(mode="json") == expected.model_dump(mode="json")
    return False


def chain_matches(steps: list[Any], expected: Sequence[Any]) -> bool:
    from ..batches import PendingBatch

    if len(steps) != len(expected):
        return False
    for step, want in zip(steps, expected, strict=True):
        if want in (FakeBatch, PendingBatch) or isinstance(want, FakeBatch | PendingBatch):
            if not isinstance(step, FakeBatch):
                return False
            if isinstance(want, FakeBatch | PendingBatch) and not same_members(step, want):
                return False
        elif not same_job(step, want):
            return False
    return True


def same_members(step: FakeBatch, want: Any) -> bool:
    """A batch given as an instance matches a batch of equal members (jobs, or chains as lists), in order."""
    members = list(want.jobs)
    if len(members) != len(step.jobs):
        return False
    for got, expected in zip(step.jobs, members, strict=True):
        if isinstance(expected, Sequence) and not isinstance(expected, str):
            if not isinstance(got, list) or not chain_matches(got, list(expected)):
                return False
        elif not same_job(got, expected):
            return False
    return True


def step_name(link: dict[str, Any]) -> str:
    return "batch" if "batch" in link else str(link.get("job"))


def member_name(member: Any) -> str:
    if isinstance(member, list):
        return "chain(" + ", ".join(type(j).__name__ for j in member) + ")"
    return type(member).__name__


def expected_name(expected: Any) -> str:
    if isinstance(expected, type):
        return expected.__name__
    return (
        f"{type(expected).__name__}({short_payload(expected.model_dump(mode='json'))})"
        if hasattr(expected, "model_dump")
        else repr(expected)
    )


def matching_text(predicate: Callable[..., Any] | None) -> str:
    return "" if predicate is None else " matching the predicate"


def short_payload(payload: Any) -> str:
    text = json.dumps(payload, default=str, ensure_ascii=False)
    return text if len(text) <= _MAX_PAYLOAD else text[: _MAX_PAYLOAD - 3] + "..."

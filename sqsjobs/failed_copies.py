"""The copies of one failed job in the DLQs, and which of them speaks for it.

One job may have several DLQ copies (a worker died between the DLQ write and the delete; a DLQ
send timed out after it had succeeded; a retry crashed before its delete). The failed verbs list,
retry and forget a job once, acting on its best copy; a message that only *claims* a job's id (the
`sqsjobs.job_id` attribute, which anyone with send rights on the DLQ writes) never joins it.
"""

from __future__ import annotations

import dataclasses

from .failures import FailedJob


@dataclasses.dataclass(slots=True)
class CollectedFailedJob(FailedJob):
    """A failed job as the commands show it: one per job id, with how many DLQ copies it has."""

    copies: int = 1
    #: Other DLQ messages that claim this job's id but are not copies of it (listed as jobs of their own).
    claimants: int = 0

    @classmethod
    def of(cls, job: FailedJob) -> CollectedFailedJob:
        return cls(**{f.name: getattr(job, f.name) for f in dataclasses.fields(FailedJob)})


def rank(job: FailedJob) -> tuple[bool, bool, bool, str]:
    """Which copy to show and act on: a verified envelope above everything, then one a worker vouched
    for (a forged copy claiming a later failure must not outrank the worker's own), then one with a
    failure reason over a redrive copy, then the latest failure."""
    return (job.verified, job.vouched, job.reason != "redrive", job.failed_at)


Copy = tuple[str, FailedJob]  # (DLQ URL, the message read from it)


def groups(copies: list[Copy]) -> list[list[Copy]]:
    """The copies of each failed job, best copy first, best jobs first.

    Copies are one job when their envelopes verify with the same id, or their bodies match (and, unless
    one verifies, their ids): a claimed id alone (`sqsjobs.job_id`, which anyone can write) never does.
    """
    verified_ids = {job.body: job.id for _, job in copies if job.verified}
    found: dict[tuple[str, str], list[Copy]] = {}
    for url, job in copies:
        key = ("", verified_ids[job.body]) if job.body in verified_ids else (job.body, job.id)
        found.setdefault(key, []).append((url, job))
    ordered = [sorted(group, key=lambda c: rank(c[1]), reverse=True) for group in found.values()]
    return sorted(ordered, key=lambda group: rank(group[0][1]), reverse=True)


def collect(group: list[Copy]) -> CollectedFailedJob:
    collected = CollectedFailedJob.of(group[0][1])
    collected.copies = len(group)
    return collected

"""The daily review of failed jobs: filters applied to whole jobs, a summary, and retries sent in batches.

`FailedJobs` (sqsjobs.failed_jobs) reads the DLQs and acts; this module decides which jobs a filter
selects (`Selection`, over sqsjobs.failed_filters), counts them by queue, job and reason (`summarize`),
and sends retried jobs with SendMessageBatch (`RetrySends`). It holds no AWS client of its own: sends go
through the app's SQS connection, deletes stay in `FailedJobs`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .connections.base import OutgoingMessage
from .connections.sqs import SqsConnection
from .failed_copies import CollectedFailedJob, Copy
from .failed_filters import FailedFilter, Proof, Verdict, unproven
from .failures import FailedJob
from .timing import utc_iso

log = logging.getLogger("sqsjobs.failed")

#: SendMessageBatch takes 10 entries, and 1 MiB (1,048,576 bytes) for all of them together: each
#: entry's body plus every attribute's name, type and value (AWS SQS API reference, SendMessageBatch).
BATCH_ENTRIES = 10
BATCH_BYTES = 1_048_576
#: Tries for entries SQS refused without blaming the sender (throttled, an internal error).
_BATCH_TRIES = 3


@dataclass
class Hooks:
    """How a bulk verb of `FailedJobs` (retry, flush) picks, confirms and reports: each optional."""

    #: Given a job's copies (best first), whether to act on it (e.g. a `Selection`).
    select: Callable[[list[Copy]], bool] | None = None
    #: Shown the jobs about to be acted on, while they are held: False leaves them all.
    confirm: Callable[[list[CollectedFailedJob]], bool] | None = None
    #: Called once per job acted on (sent, deleted, or left with why).
    advance: Callable[[], None] | None = None


# -- which jobs a filter selects -------------------------------------------------------------------


@dataclass
class Selection:
    """A filter as `FailedJobs` applies it to each failed job (its copies, best first).

    Called with a job's copies, says whether the verb acts on (or lists) it: a `MATCH` always; an
    `UNVERIFIED` one only with `include_unverified` (never passed by a destructive verb). Remembers each
    verdict and what each job's best copy proves, for the listing and the summary.
    """

    filter: FailedFilter
    proof: Callable[[FailedJob], Proof]
    include_unverified: bool = False
    #: Best copy's message id -> the verdict on its job.
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    #: Best copy's message id -> what that copy proves.
    proofs: dict[str, Proof] = field(default_factory=dict)
    #: Jobs left out because they match only on unverified values (or their copies disagree).
    left: int = 0

    def __call__(self, group: list[Copy]) -> bool:
        copies = [(job, self.proof(job)) for _, job in group]
        best = group[0][1].message.message_id
        verdict = self.filter.judge(copies)
        self.verdicts[best] = verdict
        self.proofs[best] = copies[0][1]
        if verdict is Verdict.UNVERIFIED and not self.include_unverified:
            self.left += 1
        return verdict is Verdict.MATCH or (verdict is Verdict.UNVERIFIED and self.include_unverified)

    def matched_on_claims(self, job: CollectedFailedJob) -> bool:
        return self.verdicts.get(job.message.message_id) is Verdict.UNVERIFIED

    def unverified(self, job: CollectedFailedJob) -> tuple[str, ...]:
        """The fields of a listed job whose shown value does not check out, or that no filter may use."""
        shown = self.proofs.get(job.message.message_id) or self.proof(job)
        return unproven(job, shown)

    def when(self, job: CollectedFailedJob) -> float | None:
        """The time a filter judges the job by (its best copy's proven failure time)."""
        shown = self.proofs.get(job.message.message_id) or self.proof(job)
        return shown.at


# -- the summary -----------------------------------------------------------------------------------


@dataclass
class SummaryRow:
    """Failed jobs of one queue, job and reason; values not proven are named in `unverified`."""

    queue: str
    job: str
    reason: str
    unverified: tuple[str, ...]
    jobs: int = 0
    copies: int = 0
    oldest: float | None = None
    newest: float | None = None

    def as_data(self) -> dict[str, object]:
        return {
            "queue": self.queue,
            "job": self.job,
            "reason": self.reason,
            "unverified": list(self.unverified),
            "jobs": self.jobs,
            "copies": self.copies,
            "oldest": utc_iso(self.oldest) if self.oldest is not None else None,
            "newest": utc_iso(self.newest) if self.newest is not None else None,
        }


def summarize(jobs: list[CollectedFailedJob], selection: Selection) -> list[SummaryRow]:
    """Counts by (queue, job, reason), most jobs first. A job's values count as they are shown, and a
    value that is not proven keeps its job in a group of its own (marked), never in a proven one."""
    rows: dict[tuple[str, str, str, tuple[str, ...]], SummaryRow] = {}
    for job in jobs:
        marks = tuple(name for name in ("queue", "job", "reason") if name in selection.unverified(job))
        key = (job.queue, job.job, job.reason, marks)
        row = rows.setdefault(key, SummaryRow(job.queue, job.job, job.reason, marks))
        row.jobs += 1
        row.copies += job.copies
        at = selection.when(job)
        if at is not None:
            row.oldest = at if row.oldest is None else min(row.oldest, at)
            row.newest = at if row.newest is None else max(row.newest, at)
    return sorted(rows.values(), key=lambda r: (-r.jobs, r.queue, r.job, r.reason, r.unverified))


# -- retries in batches ----------------------------------------------------------------------------


@dataclass
class Pending:
    """A retried job's message, ready to send: its copies are deleted once SQS took it."""

    group: list[Copy]
    source: str
    message: OutgoingMessage
    #: The message points at the copy's own S3 object (a body that could not be read is sent back as is).
    reused: bool


def entry_size(message: OutgoingMessage) -> int:
    """What one entry counts toward the batch's 1 MiB: body and every attribute's name, type and value."""
    size = len(message.body.encode("utf-8", "surrogatepass"))
    for name, value in message.attributes.items():
        size += len(name.encode()) + len("String" if isinstance(value, str) else "Number") + len(str(value).encode())
    return size


class RetrySends:
    """Retried jobs' messages, sent with SendMessageBatch per source queue (10 entries, 1 MiB a call).

    `held(group)` is asked just before a send (a job whose hold on its DLQ copies lapsed is not sent:
    another reader may be retrying it); `sent(item)` is told of each message SQS took (its copies may
    go), `refused(item, why)` of each it did not (it stays in the DLQ). An entry SQS refused without
    blaming the sender is tried again, twice; anything else is final.
    """

    def __init__(
        self,
        connection: SqsConnection,
        *,
        held: Callable[[list[Copy]], bool],
        sent: Callable[[Pending], None],
        refused: Callable[[Pending, str], None],
    ) -> None:
        self.connection = connection
        self._held = held
        self._sent = sent
        self._refused = refused
        self._pending: dict[str, list[Pending]] = {}

    def add(self, item: Pending) -> None:
        queued = self._pending.setdefault(item.source, [])
        size = sum(entry_size(p.message) for p in queued)
        if queued and (len(queued) == BATCH_ENTRIES or size + entry_size(item.message) > BATCH_BYTES):
            self._send(item.source, self._pending.pop(item.source))
            queued = self._pending.setdefault(item.source, [])
        queued.append(item)

    def flush(self) -> None:
        """Send everything still waiting."""
        while self._pending:
            source, items = self._pending.popitem()
            self._send(source, items)

    def _send(self, source: str, items: list[Pending]) -> None:
        waiting: dict[str, Pending] = {}
        for item in items:
            if self._held(item.group):
                item.message.entry_id = str(len(waiting))
                waiting[item.message.entry_id] = item
            else:
                self._refused(
                    item, "the hold on its DLQ copies lapsed before it was sent (another reader may act on it)"
                )
        for attempt in range(_BATCH_TRIES):
            if not waiting:
                return
            try:
                failures = self.connection.send_batch(source, [item.message for item in waiting.values()])
            except Exception as exc:
                log.exception("could not send %d retried job(s) to %s", len(waiting), source)
                for item in waiting.values():
                    self._refused(item, f"SQS did not take it ({type(exc).__name__}: {exc}); it stays in the DLQ")
                return
            again: dict[str, Pending] = {}
            for failure in failures:
                if failure.entry_id not in waiting:
                    continue
                item = waiting.pop(failure.entry_id)
                if failure.sender_fault or attempt == _BATCH_TRIES - 1:
                    self._refused(item, f"SQS refused it ({failure.code}: {failure.message}); it stays in the DLQ")
                else:
                    again[failure.entry_id] = item
            for item in waiting.values():
                self._sent(item)
            waiting = again
            if waiting:
                time.sleep(0.05 * 2**attempt)

"""Batches (Laravel's `Bus::batch`): many jobs, one record, callbacks when they are done.

    b = batch([ImportRow(row=r) for r in rows]).then(Notify(ok=True)).catch(Notify(ok=False)).name("import").dispatch()
    find_batch(b.id).progress   # 0..100

Where it lives (one DynamoDB table, see docs/workflows.md):

| item | pk / sk | what |
| --- | --- | --- |
| the batch | `batch#<id>` / `meta` | name, options, callbacks, counters `total`/`processed`/`failed`, times |
| a finished member | `batch#<id>` / `job#<member>` | outcome (`processed` or `failed`), job id, error |
| a sent callback | `batch#<id>` / `then`, `catch`, `finally` | the dispatch-once mark |

A member is one job, or one whole chain (it finishes with its last link). Its
outcome is written together with the counter change in one transaction, and only
if the member has no outcome yet, so a redelivered job is never counted twice.
Failed job ids are the `failed` member items, so the batch item never grows.
Callbacks are jobs, each sent once by `dispatch_once`, even when the last two
members finish on two workers at the same moment.

A batch of 500 members or more spreads its counters over shards, each its own DynamoDB partition key,
so that no single item takes every member's count (`sqsjobs.batch_shards`, docs/scaling.md); its
counts are then summed over the shards when first read from a record.

Semantics: `pending = total - processed - failed`; `progress` is the share of
members that have run (succeeded or failed); a batch is `finished` when every
member has run once. `catch` runs at the first failure, and (unless
`allow_failures`) that failure cancels the batch. `then` runs when the batch
finished with no failure and was not cancelled; `finally` runs when it finished,
whatever happened.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import batch_shards, context, flow
from .batch_shards import meta, pk
from .context import Services
from .errors import ConfigurationError
from .flow import BATCH_TTL_S
from .job_class import Job
from .links import check_item_size, to_link
from .timing import parse_iso, utc_iso

if TYPE_CHECKING:
    from .job_class import JobContext

__all__ = ["BATCH_TTL_S", "Batch", "PendingBatch", "batch", "find_batch", "list_batches", "prune_batches"]


def batch(jobs: Iterable[Any]) -> PendingBatch:
    """A batch of jobs (a list inside it is a chain); nothing is sent until `.dispatch()`."""
    return PendingBatch(list(jobs))


@dataclass
class PendingBatch:
    jobs: list[Any]
    callbacks: dict[str, Job] = field(default_factory=dict)
    batch_name: str = ""
    queue: str | None = None
    allows_failures: bool = False
    shard_count: int | None = None

    def then(self, job: Job) -> PendingBatch:
        """Dispatched once when every job succeeded (and the batch was not cancelled)."""
        self.callbacks["then"] = job
        return self

    def catch(self, job: Job) -> PendingBatch:
        """Dispatched once, at the first job that fails for good."""
        self.callbacks["catch"] = job
        return self

    def finally_(self, job: Job) -> PendingBatch:
        """Dispatched once when every job has run, whatever the outcome (`finally` is a keyword)."""
        self.callbacks["finally"] = job
        return self

    def name(self, name: str) -> PendingBatch:
        """A name to find the batch by in `sqsjobs batches list`."""
        self.batch_name = name
        return self

    def on_queue(self, queue: str) -> PendingBatch:
        """Send the batch's jobs and callbacks to this queue instead of each job's own."""
        self.queue = queue
        return self

    def allow_failures(self, allow: bool = True) -> PendingBatch:
        """Keep going after a failure: the batch is not cancelled (`catch` still runs once)."""
        self.allows_failures = allow
        return self

    def shards(self, count: int) -> PendingBatch:
        """Spread the batch's counters over `count` DynamoDB items (1 to 1,000; 1: none) instead of the
        default by its size (one per 250 members from 500 on, at most 64). Each shard takes ~1/count of
        the finishes: ask for more when the batch's jobs finish faster than ~125 a second per shard
        (docs/scaling.md)."""
        batch_shards.shards_for(1, count)  # refuse a bad count now, not when the batch is created
        self.shard_count = count
        return self

    def spec(self, app: Services, default_queue: str | None = None) -> dict[str, Any]:
        """The batch as data: what a chain carries until its turn comes, and what `create` reads.

        `default_queue` is the enclosing chain's queue, used when the batch names none.
        """
        queue = self.queue or default_queue
        members: list[dict[str, Any]] = []
        for entry in self.jobs:
            if isinstance(entry, list | tuple):
                if not entry or any(isinstance(job, PendingBatch) for job in entry):
                    raise ConfigurationError("a chain inside a batch needs jobs, and only jobs (no batches)")
                members.append({"chain": [to_link(app, job, queue) for job in entry]})
            elif isinstance(entry, PendingBatch):
                raise ConfigurationError("a batch cannot contain a batch; add its jobs to this one")
            else:
                members.append(to_link(app, entry, queue))
        spec: dict[str, Any] = {
            "name": self.batch_name,
            "queue": queue,
            "allow_failures": self.allows_failures,
            "jobs": members,
            "callbacks": {k: to_link(app, job, queue) for k, job in self.callbacks.items()},
        }
        if self.shard_count is not None:
            spec["shards"] = self.shard_count
        check_item_size(spec["callbacks"], "its callbacks")
        return spec

    def dispatch(self, app: Services | None = None, *, batch_id: str | None = None) -> Batch:
        """Store the batch record, then send its jobs; returns the record.

        `batch_id` (a UUID, e.g. uuid5 of your own import or order id) makes the dispatch idempotent: a
        parent job retried after it sent the batch sends the same batch again, its members counted once."""
        app = app or context.current()
        if batch_id is not None and not _is_uuid(batch_id):
            raise ConfigurationError(
                f"batch_id {batch_id!r} is not a UUID; derive one with uuid.uuid5(namespace, your_id)"
            )
        found = find_batch(flow.create(app, self.spec(app), batch_id=batch_id), app)
        assert found is not None
        return found


@dataclass
class Batch:
    """A batch record as read from the store (`fresh()` reads it again).

    `total`, `processed` and `failed` of a sharded batch are summed over its shards when first asked
    for (one read per shard), so a job that only looks at `self.batch.cancelled` reads one item.
    """

    id: str
    name: str
    created_at: str
    finished_at: str | None = None
    cancelled_at: str | None = None
    allow_failures: bool = False
    queue: str | None = None
    #: How many items its counters are spread over (0: the batch item alone).
    shards: int = 0
    app: Services | None = field(default=None, repr=False, compare=False)
    #: The run of the job that read this record (`self.batch`): what it adds is keyed by that
    #: job's id and its n-th add, so a redelivery of the job adds nothing twice.
    caller: JobContext | None = field(default=None, repr=False, compare=False)
    #: (total, processed, failed) of the members counted on the batch item itself.
    own: tuple[int, int, int] = field(default=(0, 0, 0), repr=False, compare=False)
    _counts: list[int] | None = field(default=None, init=False, repr=False, compare=False)

    def _tally(self) -> list[int]:
        if self._counts is None:
            sums = batch_shards.sums(self._app().store, self.id, self.shards) if self.shards else (0, 0, 0)
            self._counts = [mine + theirs for mine, theirs in zip(self.own, sums, strict=True)]
        return self._counts

    @property
    def total(self) -> int:
        return self._tally()[0]

    @property
    def processed(self) -> int:
        """Members that succeeded."""
        return self._tally()[1]

    @property
    def failed(self) -> int:
        """Members that failed for good."""
        return self._tally()[2]

    @property
    def pending(self) -> int:
        """Members that have not run to an end yet."""
        return max(0, self.total - self.processed - self.failed)

    @property
    def progress(self) -> int:
        """Percent of members that have run (succeeded or failed), 0-100."""
        return 100 if self.total == 0 else int(100 * (self.processed + self.failed) / self.total)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def cancelled(self) -> bool:
        return self.cancelled_at is not None

    @property
    def has_failures(self) -> bool:
        return self.failed > 0

    def _app(self) -> Services:
        return self.app or context.current()

    def fresh(self) -> Batch:
        found = find_batch(self.id, self._app())
        if found is None:
            raise ConfigurationError(f"batch {self.id} no longer exists (pruned, or expired after {BATCH_TTL_S}s)")
        return found

    def cancel(self) -> None:
        """Mark the batch cancelled; jobs using `SkipIfBatchCancelled` are skipped from now on."""
        app = self._app()
        app.store.update(meta(self.id), set={"cancelled_at": utc_iso(app.clock())}, unless="cancelled_at")
        current = app.store.get(meta(self.id))
        self.cancelled_at = current.get("cancelled_at") if current else utc_iso(app.clock())

    def add(self, jobs: Iterable[Any]) -> None:
        """Add jobs (or chains, as lists) to the batch — typically from a job of this batch.

        The total is raised before anything is sent, and the calling job's own outcome is
        not counted until it returns, so the batch cannot finish in between. From a job
        (`self.batch.add(...)`), a redelivery of that job raises the total only once and
        sends the same member ids again, which are counted once.
        """
        app = self._app()
        spec = PendingBatch(list(jobs)).on_queue(self.queue) if self.queue else PendingBatch(list(jobs))
        members = spec.spec(app)["jobs"]
        if not members:
            return
        if self.caller is not None:
            self.caller.batch_adds += 1
            origin = f"{self.caller.job_id}#{self.caller.batch_adds}"
        else:
            origin = str(uuid.uuid4())
        # A job of a sharded batch adds to its own shard, which cannot finish before the job does.
        shard = self._callers_shard()
        if shard is None:
            counter = meta(self.id)
            raised = app.store.add_and_count(
                (pk(self.id), f"add#{origin}"), {"count": len(members)}, counter, {"total": len(members)}, BATCH_TTL_S
            )
        else:
            counter = batch_shards.count_key(self.id, shard)
            raised = batch_shards.add(app.store, self.id, shard, origin, len(members), BATCH_TTL_S)
        if not raised and app.store.get(counter) is None:
            raise ConfigurationError(f"batch {self.id} no longer exists; nothing was added")
        if raised and self._counts is not None:
            self._counts[0] += len(members)
        elif raised and shard is None:  # counts not read yet: those of the shards will be, not this record's
            self.own = (self.own[0] + len(members), self.own[1], self.own[2])
        ids = [str(uuid.uuid5(uuid.UUID(self.id), f"{origin}#{i}")) for i in range(len(members))]
        shards = None if shard is None else [shard] * len(members)
        flow.send_members(app, self.id, members, ids, shrink_on_failure=self.caller is None, shards=shards)

    def _callers_shard(self) -> int | None:
        """The shard of this sharded batch the calling job is counted in (None: counted on the batch
        item, or not a member: a callback, or code outside the batch's jobs)."""
        envelope = self.caller.envelope if self.caller is not None else None
        if not self.shards or envelope is None or envelope.batch_id != self.id:
            return None
        return flow.shard_of(envelope)

    def failed_job_ids(self) -> list[str]:
        """Ids of the jobs that failed for good (from their own items, not a list on the batch)."""
        store = self._app().store
        return [
            str(attrs.get("job_id", sk[4:]))
            for partition in batch_shards.partitions(self.id, self.shards)
            for sk, attrs in store.query(partition)
            if sk.startswith("job#") and attrs.get("outcome") == "failed"
        ]


def find_batch(batch_id: str, app: Services | None = None, *, caller: JobContext | None = None) -> Batch | None:
    """The batch record with this id, or None when there is none (never created, pruned, expired)."""
    app = app or context.current()
    item = app.store.get(meta(batch_id))
    if item is None:
        return None
    found = _record(app, batch_id, item)
    found.caller = caller
    return found


def list_batches(app: Services | None = None) -> list[Batch]:
    """Every batch, newest first (a table scan: for admin commands)."""
    app = app or context.current()
    found = [_record(app, pk[len("batch#") :], item) for pk, item in app.store.scan("batch#", "meta")]
    return sorted(found, key=lambda b: b.created_at, reverse=True)


def list_batches_at_most(app: Services, items: int) -> tuple[list[Batch], bool]:
    """The batches among at most `items` items of the table, newest first, and whether that was all of it:
    `list_batches` for a page people open (a bounded, eventually consistent scan)."""
    records, whole = app.store.scan_at_most("batch#", "meta", items)
    found = [_record(app, pk[len("batch#") :], item) for pk, item in records]
    return sorted(found, key=lambda b: b.created_at, reverse=True), whole


def prune_batches(
    app: Services | None = None, *, finished_hours: float = 24, unfinished_hours: float | None = None
) -> int:
    """Delete batches (and their member items) finished or cancelled more than `finished_hours`
    ago and, with `unfinished_hours`, unfinished ones created longer ago than that."""
    app = app or context.current()
    now = app.clock()
    pruned = 0
    for found in list_batches(app):
        # A cancelled batch still has jobs to count (and `finally` to send) until none is pending.
        ended = found.finished_at or (found.cancelled_at if found.pending == 0 else None)
        if ended is not None:
            due = now - parse_iso(ended) >= finished_hours * 3600
        else:
            due = unfinished_hours is not None and now - parse_iso(found.created_at) >= unfinished_hours * 3600
        if due:
            for partition in reversed(batch_shards.partitions(found.id, found.shards)):
                for sk, _ in app.store.query(partition):
                    if (partition, sk) != meta(found.id):
                        app.store.delete((partition, sk))
            app.store.delete(meta(found.id))
            pruned += 1
    return pruned


def _record(app: Services, batch_id: str, item: dict[str, Any]) -> Batch:
    return Batch(
        id=batch_id,
        name=str(item.get("name") or ""),
        own=batch_shards.own(item),
        shards=int(item.get("shards", 0)),
        created_at=str(item.get("created_at", "")),
        finished_at=item.get("finished_at"),
        cancelled_at=item.get("cancelled_at"),
        allow_failures=bool(item.get("allow_failures")),
        queue=item.get("queue"),
        app=app,
    )


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False

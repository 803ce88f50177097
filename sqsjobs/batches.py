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

Semantics: `pending = total - processed - failed`; `progress` is the share of
members that have run (succeeded or failed); a batch is `finished` when every
member has run once. `catch` runs at the first failure, and (unless
`allow_failures`) that failure cancels the batch. `then` runs when the batch
finished with no failure and was not cancelled; `finally` runs when it finished,
whatever happened.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .app import App, current_app
from .errors import ConfigurationError, DispatchError
from .timing import parse_iso, utc_iso

if TYPE_CHECKING:
    from .chains import Link
    from .envelope import Envelope
    from .job import Job, JobContext

log = logging.getLogger("sqsjobs.batches")

#: Batch items expire this long after they are written (DynamoDB TTL): a batch record 30 days after its
#: creation, finished or not. Prune sooner with the CLI.
BATCH_TTL_S = 30 * 24 * 3600
_CALLBACKS = ("then", "catch", "finally")


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

    def spec(self, app: App, default_queue: str | None = None) -> dict[str, Any]:
        """The batch as data: what a chain carries until its turn comes, and what `create` reads.

        `default_queue` is the enclosing chain's queue, used when the batch names none.
        """
        from .chains import to_link

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
        spec = {
            "name": self.batch_name,
            "queue": queue,
            "allow_failures": self.allows_failures,
            "jobs": members,
            "callbacks": {k: to_link(app, job, queue) for k, job in self.callbacks.items()},
        }
        check_item_size(spec["callbacks"], "its callbacks")
        return spec

    def dispatch(self, app: App | None = None) -> Batch:
        """Store the batch record, then send its jobs; returns the record."""
        app = app or current_app()
        return create(app, self.spec(app))


@dataclass
class Batch:
    """A batch record as read from the store (`fresh()` reads it again)."""

    id: str
    name: str
    total: int
    processed: int
    failed: int
    created_at: str
    finished_at: str | None = None
    cancelled_at: str | None = None
    allow_failures: bool = False
    queue: str | None = None
    app: App | None = field(default=None, repr=False, compare=False)
    #: The run of the job that read this record (`self.batch`): what it adds is keyed by that
    #: job's id and its n-th add, so a redelivery of the job adds nothing twice.
    caller: JobContext | None = field(default=None, repr=False, compare=False)

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

    def _app(self) -> App:
        return self.app or current_app()

    def fresh(self) -> Batch:
        found = find_batch(self.id, self._app())
        if found is None:
            raise ConfigurationError(f"batch {self.id} no longer exists (pruned, or expired after {BATCH_TTL_S}s)")
        return found

    def cancel(self) -> None:
        """Mark the batch cancelled; jobs using `SkipIfBatchCancelled` are skipped from now on."""
        app = self._app()
        app.store.update(_meta(self.id), set={"cancelled_at": utc_iso(app.clock())}, unless="cancelled_at")
        current = app.store.get(_meta(self.id))
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
        raised = app.store.add_and_count(
            (_pk(self.id), f"add#{origin}"),
            {"count": len(members)},
            _meta(self.id),
            {"total": len(members)},
            BATCH_TTL_S,
        )
        if not raised and app.store.get(_meta(self.id)) is None:
            raise ConfigurationError(f"batch {self.id} no longer exists; nothing was added")
        self.total += len(members) if raised else 0
        ids = [str(uuid.uuid5(uuid.UUID(self.id), f"{origin}#{i}")) for i in range(len(members))]
        _send_members(app, self.id, members, ids, shrink_on_failure=self.caller is None)

    def failed_job_ids(self) -> list[str]:
        """Ids of the jobs that failed for good (from their own items, not a list on the batch)."""
        return [
            str(attrs.get("job_id", sk[4:]))
            for sk, attrs in self._app().store.query(_pk(self.id))
            if sk.startswith("job#") and attrs.get("outcome") == "failed"
        ]


#: What a batch item may carry in callbacks and a chain's rest: DynamoDB items stop at 400 KB.
_ITEM_BUDGET = 350_000


def check_item_size(value: Any, what: str) -> None:
    """Refuse at dispatch what the batch's DynamoDB item could not hold later, in a worker."""
    size = len(json.dumps(value))
    if size > _ITEM_BUDGET:
        raise ConfigurationError(
            f"a batch would store {what} ({size} bytes) on its DynamoDB item, over the 400 KB item limit; "
            "pass references (ids, S3 keys) in those jobs instead of data"
        )


def find_batch(batch_id: str, app: App | None = None, *, caller: JobContext | None = None) -> Batch | None:
    """The batch record with this id, or None when there is none (never created, pruned, expired)."""
    app = app or current_app()
    item = app.store.get(_meta(batch_id))
    if item is None:
        return None
    found = _record(app, batch_id, item)
    found.caller = caller
    return found


def list_batches(app: App | None = None) -> list[Batch]:
    """Every batch, newest first (a table scan: for admin commands)."""
    app = app or current_app()
    found = [_record(app, pk[len("batch#") :], item) for pk, item in app.store.scan("batch#", "meta")]
    return sorted(found, key=lambda b: b.created_at, reverse=True)


def prune_batches(app: App | None = None, *, finished_hours: float = 24, unfinished_hours: float | None = None) -> int:
    """Delete batches (and their member items) finished or cancelled more than `finished_hours`
    ago and, with `unfinished_hours`, unfinished ones created longer ago than that."""
    app = app or current_app()
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
            for sk, _ in app.store.query(_pk(found.id)):
                if sk != "meta":
                    app.store.delete((_pk(found.id), sk))
            app.store.delete(_meta(found.id))
            pruned += 1
    return pruned


# -- what the runner calls --------------------------------------------------------------------
def create(app: App, spec: dict[str, Any], *, batch_id: str | None = None, continuation: Any = None) -> Batch:
    """Store the record, then send the members. Member ids derive from the batch id, so sending
    again after a crash (a chain link redelivered) is counted once."""
    batch_id = batch_id or str(uuid.uuid4())
    members = spec["jobs"]
    attrs = {
        "name": spec.get("name") or "",
        "total": len(members),
        "processed": 0,
        "failed": 0,
        "created_at": utc_iso(app.clock()),
        "allow_failures": bool(spec.get("allow_failures")),
        "callbacks": json.dumps(spec.get("callbacks") or {}),
    }
    if spec.get("queue"):
        attrs["queue"] = spec["queue"]
    if continuation is not None:
        attrs["continuation"] = json.dumps(continuation)
    app.store.add(_meta(batch_id), attrs, ttl=BATCH_TTL_S)
    ids = [str(uuid.uuid5(uuid.UUID(batch_id), str(i))) for i in range(len(members))]
    _send_members(app, batch_id, members, ids, shrink_on_failure=continuation is None)
    record = find_batch(batch_id, app)
    assert record is not None
    if not members:
        _settle(app, batch_id, app.store.get(_meta(batch_id)) or {}, owner=batch_id)
    return record


def _send_members(
    app: App, batch_id: str, members: list[dict[str, Any]], ids: list[str], *, shrink_on_failure: bool
) -> None:
    from .chains import link_id, to_job
    from .dispatching import Planned, send_planned

    planned = []
    for member, member_id in zip(members, ids, strict=True):
        if "chain" in member:
            links = member["chain"]
            state = {"id": member_id, "pos": 0, "next": links[1:], "catch": None}
            first = links[0]
            planned.append(
                Planned(
                    to_job(app, first),
                    first.get("queue"),
                    batch_id=batch_id,
                    chain=state,
                    job_id=link_id(member_id, 0),
                )
            )
        else:
            planned.append(Planned(to_job(app, member), member.get("queue"), batch_id=batch_id, job_id=member_id))
    try:
        sent = send_planned(app, planned)
    except DispatchError as exc:
        if shrink_on_failure:
            # Members that never reached SQS will never finish: take them out of the total. (A
            # job or chain link that creates or adds is retried instead, sending the same ids.)
            app.store.update(_meta(batch_id), add={"total": -len(exc.not_queued)})
        raise
    member_by_job = {p.job_id: member_id for p, member_id in zip(planned, ids, strict=True)}
    chains = {link_id(mid, 0) for entry, mid in zip(members, ids, strict=True) if "chain" in entry}
    for dropped in (d for d in sent if not d.queued):
        # An equal unique job is queued or running. A lone job's work is in hand: count it done (else
        # the batch would wait for a job that never comes). A chain cannot go on without its first link.
        whose = member_by_job[dropped.job_id]
        if dropped.job_id in chains:
            error = f"link 0 ({dropped.job}) was dropped: an equal unique job is queued or running"
            record_member(app, batch_id, whose, dropped.job_id, dropped.job, False, batch_id, error)
        else:
            record_member(app, batch_id, whose, dropped.job_id, dropped.job, True, batch_id)


def member_of(envelope: Envelope) -> str:
    """What a batch counts: the chain a link belongs to, or the job itself."""
    return str(envelope.chain["id"]) if envelope.chain else envelope.id


def record(app: App, envelope: Envelope, succeeded: bool, error: str = "") -> None:
    """Count a member's outcome (once, whatever the redeliveries), then fire what is due."""
    assert envelope.batch_id is not None
    record_member(app, envelope.batch_id, member_of(envelope), envelope.id, envelope.job, succeeded, envelope.id, error)


def record_member(
    app: App,
    batch_id: str,
    member: str,
    job_id: str,
    job: str,
    succeeded: bool,
    owner: str,
    error: str = "",
) -> None:
    outcome = "processed" if succeeded else "failed"
    marker = {"outcome": outcome, "job_id": job_id, "job": job, "error": error[:1000]}
    app.store.add_and_count((_pk(batch_id), f"job#{member}"), marker, _meta(batch_id), {outcome: 1}, BATCH_TTL_S)
    # Read after our own write (consistent read): a redelivery of the member that crashed
    # after counting still gets here and sends what is due.
    state = app.store.get(_meta(batch_id))
    if state is None:
        log.warning("batch %s of job %s no longer exists; its outcome was not recorded", batch_id, job_id)
        return
    _settle(app, batch_id, state, owner=owner)


def _settle(app: App, batch_id: str, state: dict[str, Any], owner: str) -> None:
    callbacks: dict[str, Link] = json.loads(state.get("callbacks") or "{}")
    failed, total = int(state.get("failed", 0)), int(state.get("total", 0))
    cancelled = "cancelled_at" in state
    if failed:
        if not state.get("allow_failures") and not cancelled:
            app.store.update(_meta(batch_id), set={"cancelled_at": utc_iso(app.clock())}, unless="cancelled_at")
            cancelled = True
        _callback(app, batch_id, "catch", callbacks, owner)
    if int(state.get("processed", 0)) + failed < total:
        return
    if app.store.update(_meta(batch_id), set={"finished_at": utc_iso(app.clock())}, unless="finished_at"):
        log.info(
            "batch %s (%s) finished: %d processed, %d failed%s",
            batch_id,
            state.get("name") or "unnamed",
            int(state.get("processed", 0)),
            failed,
            ", cancelled" if cancelled else "",
        )
    if not failed and not cancelled:
        _callback(app, batch_id, "then", callbacks, owner)
    _callback(app, batch_id, "finally", callbacks, owner)
    if state.get("continuation"):
        _continue_chain(json.loads(state["continuation"]), app, cancelled, owner)


def _callback(app: App, batch_id: str, kind: str, callbacks: dict[str, Link], owner: str) -> None:
    link = callbacks.get(kind)
    if link:
        from .chains import send_once

        send_once(app, (_pk(batch_id), kind), owner, link, {"for_batch": batch_id})


def _continue_chain(state: dict[str, Any], app: App, cancelled: bool, owner: str) -> None:
    """The batch was a link of a chain: go on with the chain, or (cancelled) run its catch."""
    from .chains import advance, send_catch

    if cancelled:
        send_catch(app, state, owner)
    else:
        advance(app, state, owner)


def _pk(batch_id: str) -> str:
    return f"batch#{batch_id}"


def _meta(batch_id: str) -> tuple[str, str]:
    return (_pk(batch_id), "meta")


def _record(app: App, batch_id: str, item: dict[str, Any]) -> Batch:
    return Batch(
        id=batch_id,
        name=str(item.get("name") or ""),
        total=int(item.get("total", 0)),
        processed=int(item.get("processed", 0)),
        failed=int(item.get("failed", 0)),
        created_at=str(item.get("created_at", "")),
        finished_at=item.get("finished_at"),
        cancelled_at=item.get("cancelled_at"),
        allow_failures=bool(item.get("allow_failures")),
        queue=item.get("queue"),
        app=app,
    )

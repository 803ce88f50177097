"""Sending jobs from sync code: one with SendMessage, many with SendMessageBatch.

The plan (envelope, unique lock, S3 body) is `sqsjobs.dispatch_plan`'s; this sends it and turns
what SQS refused into one DispatchError naming each job that was not queued.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from botocore.exceptions import BotoCoreError, ClientError

from . import bulk_plan, context, dispatch_plan, unique
from .chunks import bounded
from .connections.base import BatchFailure, OutgoingMessage
from .context import Services
from .dispatch_plan import Grouped, Planned, announce, forget_payload, prepare, unqueued_on_error
from .dispatched import Dispatched
from .envelope import Envelope
from .errors import DispatchError
from .job_class import Job
from .timing import DelayLike

#: SQS caps a message, and a whole batch request, at 1 MiB.
MAX_MESSAGE_BYTES = 1_048_576
_BATCH_RETRIES = 3

__all__ = ["Dispatched", "Planned", "dispatch", "dispatch_many", "send_grouped", "send_planned"]


def dispatch(
    job: Job,
    *,
    queue: str | None = None,
    delay: DelayLike | None = None,
    group: str | None = None,
    deduplication_id: str | None = None,
    app: Services | None = None,
    after_commit: bool | None = None,
) -> Dispatched:
    app = app or context.current()
    prepared = prepare(app, job, queue=queue, delay=delay, group=group, deduplication_id=deduplication_id)
    if isinstance(prepared, Dispatched):
        return prepared
    name, envelope, message = prepared
    if dispatch_plan.hold(app, after_commit, {name: [(envelope, message)]}):
        return Dispatched(envelope.id, envelope.job, name)  # sent when the transaction commits (sqsjobs.after_commit)
    with unqueued_on_error(app, envelope, name, message):
        message_id = app.connection.send(name, message)
    announce(app, name, [envelope])
    return Dispatched(envelope.id, envelope.job, name, message_id)


def dispatch_many(
    jobs: Iterable[Job],
    *,
    queue: str | None = None,
    delay: DelayLike | None = None,
    app: Services | None = None,
    after_commit: bool | None = None,
) -> list[Dispatched]:
    """Send jobs with SendMessageBatch: 10 entries and at most 1 MiB per call.

    Entries SQS rejects for a transient reason are retried; the rest raise one
    DispatchError naming every job that was not queued (the others were). A unique
    job's duplicate is in the result with `queued=False`.
    """
    app = app or context.current()
    return send_planned(app, [Planned(job, queue, delay) for job in jobs], after_commit=after_commit)


def send_planned(app: Services, planned: list[Planned], *, after_commit: bool | None = None) -> list[Dispatched]:
    """`dispatch_many` for jobs that each carry their own queue, delay, chain or batch."""
    held = dispatch_plan.holder(app, after_commit)
    if held is not None:
        return hold_planned(app, held, planned)
    queued = bulk_plan.drafts_by_queue(app, planned)  # what it refuses, it refuses before anything is sent
    not_queued: list[tuple[str, str, str]] = []
    results: list[Dispatched] = []
    for name, drafts in queued.items():
        with bulk_plan.Stream(app, drafts, not_queued, results) as stream:
            for chunk in stream.batches(chunks):
                sent, failed = _send_chunk(app, name, chunk)
                results.extend(Dispatched(env.id, env.job, name) for env in sent)
                not_queued.extend(failed)
    raise_not_queued(not_queued)
    return results


def hold_planned(app: Services, held: dispatch_plan.Holder, planned: list[Planned]) -> list[Dispatched]:
    """Take every message now and hand them to the transaction, which sends them when it commits."""
    grouped, not_queued, results = bulk_plan.by_queue(app, planned)
    if grouped:
        held.hold(app, grouped)
    results.extend(Dispatched(env.id, env.job, name) for name, items in grouped.items() for env, _ in items)
    raise_not_queued(not_queued)
    return results


def send_grouped(app: Services, grouped: Grouped, not_queued: list[tuple[str, str, str]]) -> list[Dispatched]:
    """Send prepared messages in batches (a dispatch's, or what a transaction held until its commit);
    the jobs SQS did not take are added to `not_queued`, their unique locks and S3 bodies freed."""
    results: list[Dispatched] = []
    for name, items in grouped.items():
        for chunk in chunks(items):
            sent, failed = _send_chunk(app, name, chunk)
            results.extend(Dispatched(env.id, env.job, name) for env in sent)
            not_queued.extend(failed)
    return results


def chunks(
    items: Iterable[tuple[Envelope, OutgoingMessage]],
) -> Iterable[list[tuple[Envelope, OutgoingMessage]]]:
    return bounded(
        items, count=10, size=MAX_MESSAGE_BYTES, size_of=lambda item: item[1].size or len(item[1].body.encode())
    )


def _send_chunk(
    app: Services, queue: str, chunk: list[tuple[Envelope, OutgoingMessage]]
) -> tuple[list[Envelope], list[tuple[str, str, str]]]:
    """Send one batch; retry only entries SQS says were not the sender's fault."""
    pending = {message.entry_id: (envelope, message) for envelope, message in chunk}
    not_queued: list[tuple[str, str, str]] = []
    for attempt in range(_BATCH_RETRIES):
        try:
            failures = app.connection.send_batch(queue, [m for _, m in pending.values()])
        except (ClientError, BotoCoreError) as exc:
            not_queued.extend(all_failed(pending, exc))
            break
        pending = sort_failures(pending, failures, attempt, not_queued)
        if not pending:
            break
        time.sleep(0.05 * 2**attempt)
    return sent_of(app, queue, chunk, not_queued), not_queued


_Pending = dict[str, tuple[Envelope, OutgoingMessage]]


def all_failed(pending: _Pending, exc: Exception) -> list[tuple[str, str, str]]:
    # botocore already retried throttling and connection errors; what is left is final.
    return [(env.id, env.job, str(exc)) for env, _ in pending.values()]


def sort_failures(
    pending: _Pending, failures: list[BatchFailure], attempt: int, not_queued: list[tuple[str, str, str]]
) -> _Pending:
    """Record final failures in `not_queued`; return the entries worth another try."""
    retry: _Pending = {}
    for failure in failures:
        envelope, message = pending[failure.entry_id]
        if failure.sender_fault or attempt == _BATCH_RETRIES - 1:
            not_queued.append((envelope.id, envelope.job, f"{failure.code}: {failure.message}"))
        else:
            retry[failure.entry_id] = (envelope, message)
    return retry


def sent_of(
    app: Services, queue: str, chunk: list[tuple[Envelope, OutgoingMessage]], not_queued: list[tuple[str, str, str]]
) -> list[Envelope]:
    """The envelopes of `chunk` that were queued (announced; unique locks of the others are freed)."""
    failed_ids = {job_id for job_id, _, _ in not_queued}
    for env, message in chunk:
        if env.id in failed_ids:
            unique.release(app.store, env)
            forget_payload(app, message)
    sent = [env for env, _ in chunk if env.id not in failed_ids]
    announce(app, queue, sent)
    return sent


def raise_not_queued(not_queued: list[tuple[str, str, str]]) -> None:
    if not_queued:
        listed = ", ".join(f"{job} {job_id} ({reason})" for job_id, job, reason in not_queued)
        raise DispatchError(f"{len(not_queued)} job(s) were not queued: {listed}", not_queued)

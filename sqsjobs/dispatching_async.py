"""Sending jobs from async code (aiobotocore): the same plan, chunks, retries and errors as the
sync sender, without blocking the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from botocore.exceptions import BotoCoreError, ClientError

from . import bulk_plan, context, dispatch_plan
from .context import Services
from .dispatch_plan import Planned, announce, prepare, unqueued_on_error
from .dispatched import Dispatched
from .dispatching import (
    _BATCH_RETRIES,
    all_failed,
    chunks,
    dispatch,
    dispatch_many,
    hold_planned,
    raise_not_queued,
    sent_of,
    sort_failures,
)
from .job_class import Job
from .timing import DelayLike


async def dispatch_async(
    job: Job,
    *,
    queue: str | None = None,
    delay: DelayLike | None = None,
    group: str | None = None,
    deduplication_id: str | None = None,
    app: Services | None = None,
    after_commit: bool | None = None,
) -> Dispatched:
    """`dispatch` for async code: on the sqs connection the send never blocks the event loop."""
    app = app or context.current()
    if app.connection.name != "sqs":
        return dispatch(
            job,
            queue=queue,
            delay=delay,
            group=group,
            deduplication_id=deduplication_id,
            app=app,
            after_commit=after_commit,
        )
    prepared = prepare(app, job, queue=queue, delay=delay, group=group, deduplication_id=deduplication_id)
    if isinstance(prepared, Dispatched):
        return prepared
    name, envelope, message = prepared
    if dispatch_plan.hold(app, after_commit, {name: [(envelope, message)]}):
        return Dispatched(envelope.id, envelope.job, name)  # sent (by the sync client) when the transaction commits
    with unqueued_on_error(app, envelope, name, message):
        message_id = await app.async_sender.send(name, message)
    announce(app, name, [envelope])
    return Dispatched(envelope.id, envelope.job, name, message_id)


async def dispatch_many_async(
    jobs: Iterable[Job],
    *,
    queue: str | None = None,
    delay: DelayLike | None = None,
    app: Services | None = None,
    after_commit: bool | None = None,
) -> list[Dispatched]:
    """`dispatch_many` for async code, with the same chunking, retries and errors."""
    app = app or context.current()
    if app.connection.name != "sqs":
        return dispatch_many(jobs, queue=queue, delay=delay, app=app, after_commit=after_commit)
    planned = [Planned(job, queue, delay) for job in jobs]
    held = dispatch_plan.holder(app, after_commit)
    if held is not None:
        return hold_planned(app, held, planned)  # sent (by the sync client) when the transaction commits
    queued = bulk_plan.drafts_by_queue(app, planned)
    not_queued: list[tuple[str, str, str]] = []
    results: list[Dispatched] = []
    for name, drafts in queued.items():
        with bulk_plan.Stream(app, drafts, not_queued, results) as stream:
            for chunk in stream.batches(chunks):
                pending = {message.entry_id: (envelope, message) for envelope, message in chunk}
                failed_here: list[tuple[str, str, str]] = []
                for attempt in range(_BATCH_RETRIES):
                    try:
                        failures = await app.async_sender.send_batch(name, [m for _, m in pending.values()])
                    except (ClientError, BotoCoreError) as exc:
                        failed_here.extend(all_failed(pending, exc))
                        break
                    pending = sort_failures(pending, failures, attempt, failed_here)
                    if not pending:
                        break
                    await asyncio.sleep(0.05 * 2**attempt)
                results.extend(Dispatched(env.id, env.job, name) for env in sent_of(app, name, chunk, failed_here))
                not_queued.extend(failed_here)
    raise_not_queued(not_queued)
    return results

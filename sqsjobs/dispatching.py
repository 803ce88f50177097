"""Turning jobs into SQS messages: one at a time, in bulk, or run inline.

Delays up to `max_delay_hop` (900 s, the SQS cap) use DelaySeconds; longer ones
carry `available_at` in the envelope and travel in hops, so nothing is ever
silently truncated.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from .app import App, current_app
from .connections.base import BatchFailure, OutgoingMessage
from .coordination import acquire_unique, release_unique, unique_key
from .decisions import Fail
from .envelope import Envelope
from .errors import DispatchError
from .timing import DelayLike, delay_seconds, utc_iso

if TYPE_CHECKING:
    from .job import Job

log = logging.getLogger("sqsjobs.dispatch")

#: SQS caps a message, and a whole batch request, at 1 MiB.
MAX_MESSAGE_BYTES = 1_048_576
_BATCH_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Planned:
    """One job of a bulk dispatch, with what chains and batches add to its envelope."""

    job: Job
    queue: str | None = None
    delay: DelayLike | None = None
    batch_id: str | None = None
    chain: dict[str, Any] | None = None
    job_id: str | None = None
    extra: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Dispatched:
    """What a dispatch did: the job's id, where it went, and whether it was queued."""

    job_id: str
    job: str
    queue: str
    message_id: str = ""
    queued: bool = True


def build_message(
    app: App,
    job: Job,
    *,
    queue: str | None = None,
    delay: DelayLike | None = None,
    group: str | None = None,
    deduplication_id: str | None = None,
    entry_id: str = "",
    inline: bool | None = None,
    batch_id: str | None = None,
    chain: dict[str, Any] | None = None,
    job_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[str, Envelope, OutgoingMessage]:
    """The envelope and SQS message for one job; raises DispatchError for what SQS would refuse."""
    cls = type(job)
    name = app.queue_for(cls, queue)
    now = app.clock()
    seconds = delay_seconds(delay if delay is not None else cls.delay, now)
    if inline if inline is not None else getattr(app.connection, "runs_inline", False):
        seconds = 0.0
    fifo = app.settings.physical_queue_name(name).endswith(".fifo")
    if fifo and seconds > 0:
        raise DispatchError(
            f"queue {name!r} is FIFO and SQS refuses a per-message delay there; "
            "dispatch to a standard queue, or set DelaySeconds on the FIFO queue itself"
        )
    envelope = Envelope(
        id=job_id or str(uuid.uuid4()),
        job=cls.job_name,
        payload=job.model_dump(mode="json"),
        queue=name,
        dispatched_at=utc_iso(now),
        chain=chain,
        batch_id=batch_id,
        extra=dict(extra or {}),
    )
    if cls.retry_until is not None:
        envelope.retry_until = utc_iso(now + cls.retry_until.total_seconds())
    envelope.unique_key = unique_key(job)
    # available_at is set for every delay so wait times are measured from when the
    # job became runnable; only delays longer than one hop need it to be re-sent.
    hop = app.settings.max_delay_hop
    send_delay = min(hop, math.ceil(seconds))
    if seconds > 0:
        envelope.available_at = utc_iso(now + seconds)
    body = envelope.encode(app.signing_key)
    size = len(body.encode())
    message = OutgoingMessage(
        body=body,
        delay_seconds=send_delay,
        group_id=(group or cls.job_name) if fifo else None,
        deduplication_id=(deduplication_id or envelope.id) if fifo else None,
        entry_id=entry_id or envelope.id,
        size=size,
    )
    return name, envelope, message


def dispatch(
    job: Job,
    *,
    queue: str | None = None,
    delay: DelayLike | None = None,
    group: str | None = None,
    deduplication_id: str | None = None,
    app: App | None = None,
) -> Dispatched:
    app = app or current_app()
    prepared = _prepare(app, job, queue=queue, delay=delay, group=group, deduplication_id=deduplication_id)
    if isinstance(prepared, Dispatched):
        return prepared
    name, envelope, message = prepared
    with _unqueued_on_error(app, envelope, name, message):
        message_id = app.connection.send(name, message)
    return Dispatched(envelope.id, envelope.job, name, message_id)


def _prepare(app: App, job: Job, **options: Any) -> tuple[str, Envelope, OutgoingMessage] | Dispatched:
    """The message for one job, or the Dispatched(queued=False) of a unique job's duplicate."""
    name, envelope, message = build_message(app, job, **options)
    if not _take_unique_lock(app, job, envelope):
        return Dispatched(envelope.id, envelope.job, name, queued=False)
    with _unqueued_on_error(app, envelope, name, message):
        offload(app, envelope, message)
    return name, envelope, message


def offload(app: App, envelope: Envelope, message: OutgoingMessage) -> None:
    """On SQS, a body over SQSJOBS_PAYLOAD_THRESHOLD moves to S3 and the message carries a pointer.

    Done after the unique lock is taken, so a dropped duplicate never uploads anything.
    Other connections have no size limit and keep the body.
    """
    payloads = app.payloads
    if payloads is None:
        return
    try:
        payloads.offload(message, envelope.id)
    except (ClientError, BotoCoreError) as exc:
        raise DispatchError(
            f"{envelope.job} ({envelope.id}) is {message.size} bytes, over SQSJOBS_PAYLOAD_THRESHOLD, and could "
            f"not be stored in the bucket {app.settings.bucket!r}: {exc}. Run `sqsjobs provision` (it creates "
            "the bucket) or set SQSJOBS_BUCKET",
            [(envelope.id, envelope.job, f"payload not stored: {exc}")],
        ) from exc


def _forget_payload(app: App, message: OutgoingMessage) -> None:
    """The S3 body of a message that was never queued (the lifecycle rule would get it, later)."""
    payloads = app.payloads
    if payloads is not None and message.pointer is not None:
        payloads.delete(message.pointer)


@contextlib.contextmanager
def _unqueued_on_error(
    app: App, envelope: Envelope, queue: str, message: OutgoingMessage | None = None
) -> Iterator[None]:
    """A send that failed frees the job's unique lock and S3 body; AWS errors become a DispatchError."""
    try:
        yield
    except BaseException as exc:
        release_unique(app, envelope)  # not queued, whatever went wrong
        if message is not None:
            _forget_payload(app, message)
        if not isinstance(exc, ClientError | BotoCoreError):
            raise
        raise DispatchError(
            f"{envelope.job} ({envelope.id}) was not queued on {queue!r}: {exc}",
            [(envelope.id, envelope.job, str(exc))],
        ) from exc


def _take_unique_lock(app: App, job: Job, envelope: Envelope) -> bool:
    """For a unique job: take its lock, or log the duplicate that is dropped (never silently).

    A store that cannot be reached is a DispatchError naming the job: nothing was sent.
    """
    unique_for = type(job).unique_for
    if envelope.unique_key is None or unique_for is None:
        return True
    try:
        taken = acquire_unique(app, envelope, unique_for)
    except (ClientError, BotoCoreError) as exc:
        raise DispatchError(
            f"{envelope.job} ({envelope.id}) was not queued: its unique lock could not be taken ({exc}); "
            "nothing was sent, so dispatching it again is safe",
            [(envelope.id, envelope.job, f"unique lock not taken: {exc}")],
        ) from exc
    if taken:
        return True
    log.info(
        "unique job %s (%s) is already queued or running; this dispatch was dropped", envelope.job, envelope.unique_key
    )
    return False


def dispatch_many(
    jobs: Iterable[Job], *, queue: str | None = None, delay: DelayLike | None = None, app: App | None = None
) -> list[Dispatched]:
    """Send jobs with SendMessageBatch: 10 entries and at most 1 MiB per call.

    Entries SQS rejects for a transient reason are retried; the rest raise one
    DispatchError naming every job that was not queued (the others were). A unique
    job's duplicate is in the result with `queued=False`.
    """
    app = app or current_app()
    return send_planned(app, [Planned(job, queue, delay) for job in jobs])


def send_planned(app: App, planned: list[Planned]) -> list[Dispatched]:
    """`dispatch_many` for jobs that each carry their own queue, delay, chain or batch."""
    by_queue, not_queued, results = _by_queue(app, planned)
    for name, items in by_queue.items():
        for chunk in _chunks(items):
            sent, failed = _send_chunk(app, name, chunk)
            results.extend(Dispatched(env.id, env.job, name) for env in sent)
            not_queued.extend(failed)
    _raise_not_queued(not_queued)
    return results


def _by_queue(
    app: App, planned: Iterable[Planned]
) -> tuple[dict[str, list[tuple[Envelope, OutgoingMessage]]], list[tuple[str, str, str]], list[Dispatched]]:
    """Messages grouped by queue (large bodies already offloaded, per entry), the jobs that
    could not even be prepared, and the unique duplicates that were dropped."""
    by_queue: dict[str, list[tuple[Envelope, OutgoingMessage]]] = {}
    not_queued: list[tuple[str, str, str]] = []
    dropped: list[Dispatched] = []
    try:
        for index, item in enumerate(planned):
            job = item.job
            name, envelope, message = build_message(
                app,
                job,
                queue=item.queue,
                delay=item.delay,
                entry_id=f"e{index}",
                batch_id=item.batch_id,
                chain=item.chain,
                job_id=item.job_id,
                extra=item.extra,
            )
            try:
                if not _take_unique_lock(app, job, envelope):
                    dropped.append(Dispatched(envelope.id, envelope.job, name, queued=False))
                    continue
            except DispatchError as exc:  # this job only: the others go ahead
                not_queued.extend(exc.not_queued)
                continue
            try:
                offload(app, envelope, message)
            except DispatchError as exc:
                release_unique(app, envelope)
                not_queued.extend(exc.not_queued)
                continue
            by_queue.setdefault(name, []).append((envelope, message))
    except BaseException:
        # Nothing is sent when preparing fails (a FIFO delay, an invalid job): free what was taken.
        for items in by_queue.values():
            for envelope, message in items:
                release_unique(app, envelope)
                _forget_payload(app, message)
        raise
    return by_queue, not_queued, dropped


def _chunks(
    items: list[tuple[Envelope, OutgoingMessage]],
) -> Iterable[list[tuple[Envelope, OutgoingMessage]]]:
    chunk: list[tuple[Envelope, OutgoingMessage]] = []
    size = 0
    for item in items:
        item_size = item[1].size or len(item[1].body.encode())
        if chunk and (len(chunk) == 10 or size + item_size > MAX_MESSAGE_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


def _send_chunk(
    app: App, queue: str, chunk: list[tuple[Envelope, OutgoingMessage]]
) -> tuple[list[Envelope], list[tuple[str, str, str]]]:
    """Send one batch; retry only entries SQS says were not the sender's fault."""
    pending = {message.entry_id: (envelope, message) for envelope, message in chunk}
    not_queued: list[tuple[str, str, str]] = []
    for attempt in range(_BATCH_RETRIES):
        try:
            failures = app.connection.send_batch(queue, [m for _, m in pending.values()])
        except (ClientError, BotoCoreError) as exc:
            not_queued.extend(_all_failed(pending, exc))
            break
        pending = _sort_failures(pending, failures, attempt, not_queued)
        if not pending:
            break
        time.sleep(0.05 * 2**attempt)
    return _sent(app, chunk, not_queued), not_queued


_Pending = dict[str, tuple[Envelope, OutgoingMessage]]


def _all_failed(pending: _Pending, exc: Exception) -> list[tuple[str, str, str]]:
    # botocore already retried throttling and connection errors; what is left is final.
    return [(env.id, env.job, str(exc)) for env, _ in pending.values()]


def _sort_failures(
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


def _sent(
    app: App, chunk: list[tuple[Envelope, OutgoingMessage]], not_queued: list[tuple[str, str, str]]
) -> list[Envelope]:
    """The envelopes of `chunk` that were queued (unique locks of the others are freed)."""
    failed_ids = {job_id for job_id, _, _ in not_queued}
    for env, message in chunk:
        if env.id in failed_ids:
            release_unique(app, env)
            _forget_payload(app, message)
    return [env for env, _ in chunk if env.id not in failed_ids]


def _raise_not_queued(not_queued: list[tuple[str, str, str]]) -> None:
    if not_queued:
        listed = ", ".join(f"{job} {job_id} ({reason})" for job_id, job, reason in not_queued)
        raise DispatchError(f"{len(not_queued)} job(s) were not queued: {listed}", not_queued)


# -- from async code ------------------------------------------------------------------------
async def dispatch_async(
    job: Job,
    *,
    queue: str | None = None,
    delay: DelayLike | None = None,
    group: str | None = None,
    deduplication_id: str | None = None,
    app: App | None = None,
) -> Dispatched:
    """`dispatch` for async code: on the sqs connection the send never blocks the event loop."""
    app = app or current_app()
    if app.connection.name != "sqs":
        return dispatch(job, queue=queue, delay=delay, group=group, deduplication_id=deduplication_id, app=app)
    prepared = _prepare(app, job, queue=queue, delay=delay, group=group, deduplication_id=deduplication_id)
    if isinstance(prepared, Dispatched):
        return prepared
    name, envelope, message = prepared
    with _unqueued_on_error(app, envelope, name, message):
        message_id = await app.async_sender.send(name, message)
    return Dispatched(envelope.id, envelope.job, name, message_id)


async def dispatch_many_async(
    jobs: Iterable[Job], *, queue: str | None = None, delay: DelayLike | None = None, app: App | None = None
) -> list[Dispatched]:
    """`dispatch_many` for async code, with the same chunking, retries and errors."""
    app = app or current_app()
    if app.connection.name != "sqs":
        return dispatch_many(jobs, queue=queue, delay=delay, app=app)
    by_queue, not_queued, results = _by_queue(app, [Planned(job, queue, delay) for job in jobs])
    for name, items in by_queue.items():
        for chunk in _chunks(items):
            pending = {message.entry_id: (envelope, message) for envelope, message in chunk}
            failed_here: list[tuple[str, str, str]] = []
            for attempt in range(_BATCH_RETRIES):
                try:
                    failures = await app.async_sender.send_batch(name, [m for _, m in pending.values()])
                except (ClientError, BotoCoreError) as exc:
                    failed_here.extend(_all_failed(pending, exc))
                    break
                pending = _sort_failures(pending, failures, attempt, failed_here)
                if not pending:
                    break
                import asyncio

                await asyncio.sleep(0.05 * 2**attempt)
            results.extend(Dispatched(env.id, env.job, name) for env in _sent(app, chunk, failed_here))
            not_queued.extend(failed_here)
    _raise_not_queued(not_queued)
    return results


def dispatch_sync(job: Job, app: App | None = None) -> None:
    """Run `job` inline through the runner core; re-raise its exception if it is given up."""
    from .connections.inline import SyncConnection

    app = app or current_app()
    connection = SyncConnection(app.runner.process, app.settings.max_receive_count)
    name, _envelope, message = build_message(app, job, inline=True)
    connection.send(name, message)
    decision = connection.last_decision
    if isinstance(decision, Fail) and decision.exception is not None:
        raise decision.exception

"""Planning a dispatch: the envelope and SQS message for a job, its unique lock and its S3 body.

Everything before the send, shared by the sync and async senders (`sqsjobs.dispatching`,
`sqsjobs.dispatching_async`), so both refuse the same things and free the same things.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from . import job_log, tracing, unique
from .connections.base import OutgoingMessage
from .context import Services
from .dispatched import Dispatched
from .envelope import Envelope
from .errors import DispatchError
from .events import JobEvent
from .job_class import Job
from .job_log import clean_tags
from .links import encrypted_names, names_encrypted
from .timing import DelayLike, delay_seconds, utc_iso

log = logging.getLogger("sqsjobs.dispatch")

#: Messages per queue, each with its envelope: what a dispatch sends, or holds until a commit.
Grouped = dict[str, list[tuple[Envelope, OutgoingMessage]]]


class Holder(Protocol):
    """Where dispatches made inside a database transaction wait for its commit (sqsjobs.after_commit)."""

    def hold(self, app: Services, grouped: Grouped) -> None: ...


#: Set by sqsjobs.after_commit when imported: the holder for a dispatch (its `after_commit=` option), or
#: None to send now. None until then, so a program that never holds pays one attribute read per dispatch.
holder_for: Callable[[Services, bool | None], Holder | None] | None = None


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


def holder(app: Services, after_commit: bool | None) -> Holder | None:
    """The transaction that holds this dispatch (its `after_commit=` option), or None: send it now."""
    if holder_for is None:
        if after_commit or (after_commit is None and app.settings.after_commit):
            warn_unwatched()
        return None
    return holder_for(app, after_commit)


def hold(app: Services, after_commit: bool | None, grouped: Grouped) -> bool:
    """Hand `grouped` to the transaction that holds this dispatch; False: no transaction, send it now."""
    held = holder(app, after_commit)
    if held is None:
        return False
    held.hold(app, grouped)
    return True


_warned_unwatched = False


def warn_unwatched() -> None:
    """Once per process: a dispatch asked to wait for a commit, and nothing watches a transaction."""
    global _warned_unwatched
    if _warned_unwatched:
        return
    _warned_unwatched = True
    log.warning(
        "a dispatch asked to wait for the database commit (SQSJOBS_AFTER_COMMIT=true or after_commit=True), "
        "but no integration watches a transaction, so it was sent at once (and so will every other): call "
        "sqsjobs.integrations.sqlalchemy.hold_until_commit(...) or sqsjobs.integrations.django.hold_until_commit() "
        "at start-up, or wrap the transaction in `with sqsjobs.hold_dispatches():` (docs/after-commit.md)"
    )


@dataclass(slots=True)
class Draft:
    """A job's envelope and what its SQS message will carry, before the body is encoded. A bulk dispatch
    drafts every job first (what it refuses, it refuses before anything is taken or sent), then encodes
    each body just before its batch goes out: it holds one batch of large bodies at a time, not all."""

    job: Job
    queue: str
    envelope: Envelope
    delay_seconds: int
    group_id: str | None
    deduplication_id: str | None
    entry_id: str


def build_message(app: Services, job: Job, **options: Any) -> tuple[str, Envelope, OutgoingMessage]:
    """The envelope and SQS message for one job (`draft`'s options); raises DispatchError for what SQS
    would refuse."""
    drafted = draft(app, job, **options)
    return drafted.queue, drafted.envelope, message_of(app, drafted)


def draft(
    app: Services,
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
) -> Draft:
    """The envelope for one job (sealed when its class encrypts); raises DispatchError for what SQS would refuse."""
    cls = type(job)
    name = app.queue_for(cls, queue)
    now = app.clock()
    seconds = delay_seconds(delay if delay is not None else cls.delay, now)
    inline = inline if inline is not None else getattr(app.connection, "runs_inline", False)
    fifo = app.settings.physical_queue_name(name).endswith(".fifo")
    if fifo and seconds > 0:  # refused inline too (sync, a test's fake): what SQS would refuse fails everywhere
        raise DispatchError(
            f"queue {name!r} is FIFO and SQS refuses a per-message delay there; "
            "dispatch to a standard queue, or set DelaySeconds on the FIFO queue itself"
        )
    if inline:
        seconds = 0.0
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
    envelope.tags = clean_tags(job.job_tags()) or None
    envelope.trace = tracing.outgoing()
    # available_at is set for every delay so wait times are measured from when the
    # job became runnable; only delays longer than one hop need it to be re-sent.
    if seconds > 0:
        envelope.available_at = utc_iso(now + seconds)
    if not inline:  # an inline body never leaves the process; any other is sealed before it is signed
        seal(app, cls, envelope)
    return Draft(
        job=job,
        queue=name,
        envelope=envelope,
        delay_seconds=min(app.settings.max_delay_hop, math.ceil(seconds)),
        group_id=(group or cls.job_name) if fifo else None,
        deduplication_id=(deduplication_id or envelope.id) if fifo else None,
        entry_id=entry_id or envelope.id,
    )


def message_of(app: Services, drafted: Draft) -> OutgoingMessage:
    """The SQS message of a drafted job: its body signed for its queue (a pointer is bound to the job id)."""
    envelope = drafted.envelope
    body = envelope.encode(app.signing_key, queue=drafted.queue)
    try:
        size = len(body) if body.isascii() else len(body.encode())  # isascii() reads a flag: no copy of a large body
    except UnicodeEncodeError as exc:  # a lone surrogate: pydantic takes it in a str, UTF-8 has no form for it
        reason = f"its payload holds text that is not valid Unicode ({exc.reason} at {exc.start}); fix the value"
        raise DispatchError(
            f"{envelope.job} ({envelope.id}) was not queued: {reason}", [(envelope.id, envelope.job, reason)]
        ) from None
    return OutgoingMessage(
        body=body,
        delay_seconds=drafted.delay_seconds,
        group_id=drafted.group_id,
        deduplication_id=drafted.deduplication_id,
        entry_id=drafted.entry_id,
        size=size,
    )


def seal(app: Services, cls: type[Job], envelope: Envelope) -> None:
    """Encrypt the payload of an encrypted job class, and chain links of encrypted classes (sqsjobs.encryption).

    No KMS call (nor client) for a job with nothing to seal. Raises ConfigurationError without
    SQSJOBS_KMS_KEY, DispatchError when KMS refuses or cannot be reached: never sent in plain text.
    """
    is_encrypted = encrypted_names(app.registry)
    if not cls.encrypted and (envelope.chain is None or not names_encrypted(envelope.chain, is_encrypted)):
        return
    from .encryption import seal_envelope  # only apps that encrypt load it

    try:
        seal_envelope(app.encryptor, envelope, cls.encrypted, is_encrypted)
    except (ClientError, BotoCoreError) as exc:
        raise DispatchError(
            f"{envelope.job} ({envelope.id}) is an encrypted job and its payload could not be encrypted with "
            f"SQSJOBS_KMS_KEY={app.settings.kms_key} ({exc}); check that this role may call kms:GenerateDataKey "
            "on it; nothing was sent",
            [(envelope.id, envelope.job, f"payload not encrypted: {exc}")],
        ) from exc


def prepare(app: Services, job: Job, **options: Any) -> tuple[str, Envelope, OutgoingMessage] | Dispatched:
    """The message for one job, or the Dispatched(queued=False) of a unique job's duplicate."""
    name, envelope, message = build_message(app, job, **options)
    if not take_unique_lock(app, job, envelope):
        return Dispatched(envelope.id, envelope.job, name, queued=False)
    with unqueued_on_error(app, envelope, name, message):
        offload(app, envelope, message)
    return name, envelope, message


def offload(app: Services, envelope: Envelope, message: OutgoingMessage) -> None:
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


def forget_payload(app: Services, message: OutgoingMessage) -> None:
    """The S3 body of a message that was never queued (the lifecycle rule would get it, later)."""
    payloads = app.payloads
    if payloads is not None and message.pointer is not None:
        payloads.delete(message.pointer)


@contextlib.contextmanager
def unqueued_on_error(
    app: Services, envelope: Envelope, queue: str, message: OutgoingMessage | None = None
) -> Iterator[None]:
    """A send that failed frees the job's unique lock and S3 body; AWS errors become a DispatchError."""
    try:
        yield
    except BaseException as exc:
        unique.release(app.store, envelope)  # not queued, whatever went wrong
        if message is not None:
            forget_payload(app, message)
        if not isinstance(exc, ClientError | BotoCoreError):
            raise
        raise DispatchError(
            f"{envelope.job} ({envelope.id}) was not queued on {queue!r}: {exc}",
            [(envelope.id, envelope.job, str(exc))],
        ) from exc


def take_unique_lock(app: Services, job: Job, envelope: Envelope) -> bool:
    """For a unique job: take its lock, or log the duplicate that is dropped (never silently).

    A store that cannot be reached is a DispatchError naming the job: nothing was sent.
    """
    unique_for = type(job).unique_for
    if envelope.unique_key is None or unique_for is None:
        return True
    try:
        taken = unique.acquire(app.store, envelope, unique_for)
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


def unique_key(job: Job) -> str | None:
    cls = type(job)
    return f"{cls.job_name}:{job.unique_id()}" if cls.unique_for is not None else None


def announce(app: Services, queue: str, envelopes: Iterable[Envelope]) -> None:
    """`queued`, for each job SQS took, to the app's event listeners (and the job log, when on)."""
    events = app.events
    log_on = app.settings.job_log
    if not log_on and not events.wants("queued"):
        return  # nobody listens: a dispatch_many of thousands builds no events
    for env in envelopes:
        if log_on:
            # SQS has the job: a log write that fails must not make the dispatch look failed (a caller
            # would send it again) nor stop the rest of a dispatch_many.
            try:
                job_log.queued(
                    app.store, env.id, env.job, queue, env.dispatched_at, env.tags or [], app.settings.job_log_ttl
                )
            except Exception:
                log.exception("job %s is queued, but the job log could not record it", env.id)
        if events.wants("queued"):
            events.emit(JobEvent("queued", env.id, env.job, queue, 0, dispatched_at=env.dispatched_at))

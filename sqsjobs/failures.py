"""What a failed job looks like in the dead-letter queue.

The DLQ *is* the failed-jobs store: the body is the original message, byte for
byte (so a retry runs exactly what failed, and an unreadable body is kept for a
human; an offloaded body stays a pointer to the same S3 object), and the reason
travels as message attributes.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from .connections.base import Connection, OutgoingMessage, ReceivedMessage
from .errors import type_name
from .payloads import carried
from .timing import has_utc, parse_iso, utc_iso

if TYPE_CHECKING:
    from .envelope import Envelope
    from .registry import Registry
    from .signing import SigningKeys

log = logging.getLogger("sqsjobs.runner")

PREFIX = "sqsjobs."
_TRACEBACK_CHARS = 2000
#: What SQS takes in one message: body plus every attribute's name, type and value.
_SQS_MAX_BYTES = 1_048_576
#: Message attributes SQS takes on one message.
_SQS_MAX_ATTRIBUTES = 10
#: Characters outside these ranges make SQS refuse the whole message (AWS SendMessage reference).
_NOT_ALLOWED = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: Per attribute, what a human needs; the rest is in the body. Least important last: dropped first.
_LIMITS = {
    "reason": 64,
    "job_id": 128,
    "job": 256,
    "source_queue": 256,
    "failed_at": 64,
    "attempts": 16,
    "tag": 140,
    "error_type": 256,
    "error": 1000,
    "traceback": _TRACEBACK_CHARS,
}


def dead_letter(
    message: ReceivedMessage,
    *,
    kind: str,
    error: BaseException,
    attempts: int,
    now: float,
    job_name: str = "",
    job_id: str = "",
    keys: SigningKeys | None = None,
) -> OutgoingMessage:
    """The DLQ copy of `message`, with the reason in its attributes (at most 10 are allowed).

    Every attribute value may come from the message (a job name, an id, an exception text that
    quotes the payload), so each is cleaned of characters SQS refuses and cut to a size; and they
    are dropped, least useful first, if the body leaves no room for them. A DLQ write SQS refuses
    would leave the job looping without a reason. With signing keys the copy is tagged
    (`sqsjobs.tag`, over the fields in TAGGED and the body): the failed verbs then know a worker
    wrote the reason, not someone with send rights on the DLQ.
    """
    attributes = {
        "reason": kind,
        # A body that is no envelope has no job id: its source message id makes its copies one job.
        "job_id": job_id or message.message_id,
        "job": job_name,
        "source_queue": message.queue,
        "failed_at": utc_iso(now),
        "attempts": str(attempts),
        "tag": "",
        "error_type": type_name(error),
        "error": str(error) or type(error).__name__,
        "traceback": traceback_head(error),
    }
    letter = carried(message)  # an offloaded body keeps its S3 pointer: the object moves with it
    if keys is not None and len(letter.attributes) + len(attributes) > _SQS_MAX_ATTRIBUTES:
        # The job's name is in its body (an envelope, or the S3 object a pointer names): least missed.
        del attributes["job"]
    room = _SQS_MAX_BYTES - len(letter.body.encode("utf-8", "surrogatepass")) - _attributes_size(letter.attributes)
    for name, given in attributes.items():
        # The tag is made once the fields it covers are written (or left out for room).
        raw = keys.tag(tagged_fields(letter.attributes), letter.body) if name == "tag" and keys else given
        value = clean(raw, _LIMITS[name])
        size = len(PREFIX + name) + len("String") + len(value.encode())
        if not value or size > room or len(letter.attributes) >= _SQS_MAX_ATTRIBUTES:
            continue
        letter.attributes[PREFIX + name] = value
        room -= size
    # FIFO DLQs only: a redelivery of the same source message (the worker died after writing this)
    # is absorbed by SQS; a later failure of the same job (after `failed retry`) is a new message.
    letter.deduplication_id = message.message_id
    letter.entry_id = job_id or message.message_id
    return letter


#: The attributes a DLQ copy's tag covers: what `failed retry` acts on. Error texts are for people.
TAGGED = ("reason", "job_id", "job", "source_queue", "failed_at", "attempts")


def tagged_fields(attributes: Mapping[str, object]) -> dict[str, str]:
    """The TAGGED attributes as written ("" when absent), which a tag covers."""
    return {name: value if isinstance(value := attributes.get(PREFIX + name), str) else "" for name in TAGGED}


def clean(text: str, limit: int) -> str:
    """`text` as SQS accepts it in an attribute: allowed characters only, at most `limit` characters."""
    return _NOT_ALLOWED.sub("\ufffd", text[:limit])


def _attributes_size(attributes: dict[str, str | int]) -> int:
    return sum(len(k) + len("Number") + len(str(v).encode()) for k, v in attributes.items())


def traceback_head(error: BaseException) -> str:
    """The innermost frames of the traceback, which say where it broke, within a size limit."""
    if error.__traceback__ is None:
        return ""
    text = "".join(traceback.format_exception(error))
    return text[-_TRACEBACK_CHARS:]


@dataclass(slots=True)
class FailedJob:
    """A message read back from a DLQ, with its failure reason.

    Every `sqsjobs.*` attribute is data that anyone with send rights on the DLQ can write:
    `from_message` reads them bounded and never raises; `sqsjobs.failed_jobs` checks them against
    what the app knows and names in `unverified` the fields whose value did not check out.
    """

    id: str
    job: str
    queue: str
    failed_at: str
    reason: str
    error_type: str
    error: str
    traceback: str
    attempts: int
    body: str
    message: ReceivedMessage
    #: Fields (`job`, `queue`, `attempts`, `reason`, `failed_at`, ...) whose shown value did not check out.
    unverified: tuple[str, ...] = ()
    #: `sqsjobs.*` attributes that were ignored because their value did not check out.
    rejected: tuple[str, ...] = ()
    #: The body is an envelope that decoded (its signature checked when signing is on) with this id.
    verified: bool = False
    #: The body's payload is sealed (`encrypted = True`): `failed show` can try to decrypt it.
    encrypted: bool = False
    #: A worker of this deployment wrote this copy and its reason (its `sqsjobs.tag` checks out).
    vouched: bool = False

    @classmethod
    def from_message(cls, message: ReceivedMessage) -> FailedJob:
        """The attributes as they are (bounded), else the envelope's best guess; never raises."""
        attrs = _attributes(message)
        envelope = _peek(message.body)
        return cls(
            id=attrs.get("job_id") or envelope.get("id") or message.message_id,
            job=attrs.get("job") or envelope.get("job") or "?",
            queue=attrs.get("source_queue") or envelope.get("queue") or "?",
            failed_at=attrs.get("failed_at", ""),
            reason=attrs.get("reason", "redrive"),
            error_type=attrs.get("error_type", ""),
            error=attrs.get("error", REDRIVE_ERROR),
            traceback=attrs.get("traceback", ""),
            attempts=_count(attrs.get("attempts", "")),
            body=message.body,
            message=message,
        )

    @property
    def failed_at_ts(self) -> float:
        try:
            return parse_iso(self.failed_at) if self.failed_at else 0.0
        except (ValueError, OverflowError):
            return 0.0


REDRIVE_ERROR = "moved by the queue's redrive policy (the consumer never decided)"


def _attributes(message: ReceivedMessage) -> dict[str, str]:
    """The `sqsjobs.*` attributes, each cut to the size `dead_letter` writes (a forged one may be ~1 MiB)."""
    out: dict[str, str] = {}
    for name, value in message.attributes.items():
        if name.startswith(PREFIX) and (field := name[len(PREFIX) :]) in _LIMITS:
            out[field] = value[: _LIMITS[field]] if isinstance(value, str) else ""
    return out


def _peek(body: str) -> dict[str, str]:
    """Best-effort id/job/queue from a body that may not be an envelope at all (nothing here is verified)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError, TypeError):
        return {}
    if not isinstance(data, dict):
        return {}
    out = {k: v[: _LIMITS["job"]] for k in ("id", "job", "queue") if isinstance(v := data.get(k), str) and v}
    if isinstance(data.get("encrypted"), dict):
        out["encrypted"] = "yes"
    return out


#: The largest `sqsjobs.attempts` taken as written (tries and maxReceiveCount are at most 1,000).
MAX_ATTEMPTS = 100_000


def _count(text: str) -> int:
    """An attribute anyone with send rights on the DLQ can write: junk (or `²`, which isdigit) reads as 0."""
    if not (text.isascii() and text.isdigit() and len(text) <= 6):
        return 0
    value = int(text)
    return value if value <= MAX_ATTEMPTS else 0


#: A reason as sqsjobs writes one (`tries_exhausted`, `payload_too_large`, ...).
_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: What an id or a name may not contain to be shown as it is (controls, bidi overrides, surrogates).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def verify_failed_job(
    message: ReceivedMessage,
    *,
    sources: frozenset[str],
    registry: Registry,
    envelope: Envelope | None,
    keys: SigningKeys | None = None,
) -> FailedJob:
    """A DLQ message as a FailedJob whose `sqsjobs.*` attributes were checked, never trusted.

    Anyone with send rights on the DLQ (or a redrive of a crafted message) writes those attributes.
    `envelope` is the body decoded by `envelope.decode` (signature checked when keys are set), or
    None (then the body's best guess, `_peek`, stands in for it). `sources` are the logical queues
    of this app whose DLQ the message was read from: a source queue is believed only when it is
    one of them, taken from the attribute, else the envelope, else the DLQ itself when it has one
    source and the message names none. Ints and
    strings are bounded. Whatever does not check out is named in `unverified` (a value that was
    shown anyway) or `rejected` (an attribute ignored). With signing `keys`, a copy whose `sqsjobs.tag`
    checks out was written by a worker (`vouched`); a reason without one is unverified. Never raises,
    whatever the message.
    """
    raw = {k[len(PREFIX) :]: v for k, v in message.attributes.items() if k.startswith(PREFIX)}
    attrs = {k: v for k, v in raw.items() if k in _LIMITS and isinstance(v, str)}
    peek = {} if envelope is not None else _peek(message.body)
    unverified: list[str] = []
    rejected: list[str] = []

    def attribute(name: str) -> str | None:
        """The attribute's value when it is within the size sqsjobs writes; an overlong one is rejected."""
        value = attrs.get(name)
        if value is not None and len(value) > _LIMITS[name]:
            rejected.append(name)
            return None
        return value

    body_says = {"id": envelope.id, "job": envelope.job, "queue": envelope.queue} if envelope is not None else peek

    # id: the attribute (what `failed retry ID` takes), else the envelope's, else the message id. A
    # claim the body does not back (another id, or none: junk anyone can send) is unverified.
    claimed_id = attribute("job_id")
    if claimed_id is not None and not _printable(claimed_id):
        rejected.append("job_id")
        claimed_id = None
    own_id = body_says.get("id")
    job_id = claimed_id or (own_id if own_id and _printable(own_id) else message.message_id)
    if (claimed_id is not None or envelope is not None) and job_id != own_id:
        unverified.append("id")

    # job: a registered name, from the attribute, else the envelope; else the claim, unverified.
    claimed_job = attribute("job")
    job_claims = [claimed_job, body_says.get("job")]
    job = next((c for c in job_claims if c and c in registry), None)
    if job is None:
        job = next((c for c in job_claims if c), "?")
        if job != "?":
            unverified.append("job")
    if claimed_job and claimed_job != job:
        rejected.append("job")

    # queue: only a queue of this app that drains into this DLQ: the attribute, else the envelope.
    claimed_queue = attribute("source_queue")
    claims = [claimed_queue, body_says.get("queue")]
    queue = next((c for c in claims if c and c in sources), None)
    if claimed_queue and claimed_queue != queue:
        rejected.append("source_queue")
    if queue is None:
        if not any(claims) and "source_queue" not in raw and len(sources) == 1:
            (queue,) = sources  # names none: the DLQ it is in has one source queue
        else:
            queue = next((c for c in claims if c), None) or attrs.get("source_queue") or "?"
            unverified.append("queue")

    attempts = 0
    claimed_attempts = attribute("attempts")
    if claimed_attempts is not None:
        if claimed_attempts.isascii() and claimed_attempts.isdigit() and int(claimed_attempts) <= MAX_ATTEMPTS:
            attempts = int(claimed_attempts)
        else:
            unverified.append("attempts")
            rejected.append("attempts")

    vouched = False
    if keys is not None and "reason" in raw:
        wire_body = message.pointer.body if message.pointer is not None else message.body
        failed_at_ts = _timestamp(attrs.get("failed_at", ""))
        vouched = failed_at_ts is not None and keys.vouches(
            raw.get("tag"), tagged_fields(message.attributes), wire_body, failed_at_ts, message.sent_at
        )
        if not vouched:
            unverified.append("reason")

    reason = attribute("reason")
    if reason is None:
        reason = "redrive" if "reason" not in raw else "?"
        if "reason" in raw:
            unverified.append("reason")
    elif not _REASON.fullmatch(reason):
        unverified.append("reason")

    failed_at = attribute("failed_at") or ""
    if failed_at and not _iso_time(failed_at):
        failed_at = ""
        unverified.append("failed_at")
        rejected.append("failed_at")

    texts = {}
    for name in ("error_type", "error", "traceback"):
        value = attrs.get(name)
        if value is not None and len(value) > _LIMITS[name]:
            value = value[: _LIMITS[name]]
            unverified.append(name)
        texts[name] = value
    error = texts["error"] if texts["error"] is not None else ("" if "reason" in raw else REDRIVE_ERROR)
    return FailedJob(
        id=job_id,
        job=job[: _LIMITS["job"]],
        queue=queue[: _LIMITS["source_queue"]],
        failed_at=failed_at,
        reason=reason[: _LIMITS["reason"]],
        error_type=texts["error_type"] or "",
        error=error,
        traceback=texts["traceback"] or "",
        attempts=attempts,
        body=message.body,
        message=message,
        unverified=tuple(dict.fromkeys(unverified)),
        rejected=tuple(dict.fromkeys(rejected)),
        verified=envelope is not None and job_id == envelope.id,
        encrypted=envelope.encrypted is not None if envelope is not None else "encrypted" in peek,
        vouched=vouched,
    )


def _printable(text: str) -> bool:
    return 0 < len(text) <= _LIMITS["job_id"] and _UNPRINTABLE.search(text) is None


def _iso_time(text: str) -> bool:
    return _timestamp(text) is not None


def _timestamp(text: str) -> float | None:
    """An ISO time with a zone as a timestamp; None for anything else."""
    try:
        moment = datetime.fromisoformat(text)
        stamp = moment.timestamp()
    except (ValueError, OverflowError, TypeError):
        return None
    # Shown through utc_iso by `failed list --json` and `failed summary`, which such a time would crash.
    return stamp if moment.tzinfo is not None and has_utc(moment) else None


def write(connection: Connection, message: ReceivedMessage, letter: OutgoingMessage) -> bool:
    """Send a DLQ copy; False (logged) when SQS refused, so the caller keeps the source for later."""
    try:
        connection.send_to_dlq(message.queue, letter)
    except Exception:
        log.exception(
            "could not write message %s to the DLQ of %r; it stays on its queue and is tried again",
            message.message_id,
            message.queue,
        )
        return False
    return True

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
from dataclasses import dataclass

from .connections.base import Connection, OutgoingMessage, ReceivedMessage
from .payloads import carried
from .timing import parse_iso, utc_iso

log = logging.getLogger("sqsjobs.runner")

PREFIX = "sqsjobs."
_TRACEBACK_CHARS = 2000
#: What SQS takes in one message: body plus every attribute's name, type and value.
_SQS_MAX_BYTES = 1_048_576
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
) -> OutgoingMessage:
    """The DLQ copy of `message`, with the reason in its attributes (at most 10 are allowed).

    Every attribute value may come from the message (a job name, an id, an exception text that
    quotes the payload), so each is cleaned of characters SQS refuses and cut to a size; and they
    are dropped, least useful first, if the body leaves no room for them. A DLQ write SQS refuses
    would leave the job looping without a reason.
    """
    attributes = {
        "reason": kind,
        # A body that is no envelope has no job id: its source message id makes its copies one job.
        "job_id": job_id or message.message_id,
        "job": job_name,
        "source_queue": message.queue,
        "failed_at": utc_iso(now),
        "attempts": str(attempts),
        "error_type": type(error).__name__,
        "error": str(error) or type(error).__name__,
        "traceback": traceback_head(error),
    }
    letter = carried(message)  # an offloaded body keeps its S3 pointer: the object moves with it
    room = _SQS_MAX_BYTES - len(letter.body.encode("utf-8", "surrogatepass")) - _attributes_size(letter.attributes)
    for name, raw in attributes.items():
        value = clean(raw, _LIMITS[name])
        size = len(PREFIX + name) + len("String") + len(value.encode())
        if not value or size > room:
            continue
        letter.attributes[PREFIX + name] = value
        room -= size
    # FIFO DLQs only: a redelivery of the same source message (the worker died after writing this)
    # is absorbed by SQS; a later failure of the same job (after `failed retry`) is a new message.
    letter.deduplication_id = message.message_id
    letter.entry_id = job_id or message.message_id
    return letter


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
    """A message read back from a DLQ, with its failure reason."""

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

    @classmethod
    def from_message(cls, message: ReceivedMessage) -> FailedJob:
        attrs = {k[len(PREFIX) :]: v for k, v in message.attributes.items() if k.startswith(PREFIX)}
        envelope = _peek(message.body)
        return cls(
            id=attrs.get("job_id") or envelope.get("id") or message.message_id,
            job=attrs.get("job") or envelope.get("job") or "?",
            queue=attrs.get("source_queue") or envelope.get("queue") or "?",
            failed_at=attrs.get("failed_at", ""),
            reason=attrs.get("reason", "redrive"),
            error_type=attrs.get("error_type", ""),
            error=attrs.get("error", "moved by the queue's redrive policy (the consumer never decided)"),
            traceback=attrs.get("traceback", ""),
            attempts=_count(attrs.get("attempts", "")),
            body=message.body,
            message=message,
        )

    @property
    def failed_at_ts(self) -> float:
        return parse_iso(self.failed_at) if self.failed_at else 0.0


def _peek(body: str) -> dict[str, str]:
    """Best-effort id/job/queue from a body that may not be an envelope at all."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k in ("id", "job", "queue") if isinstance(v := data.get(k), str)}


def _count(text: str) -> int:
    """An attribute anyone with send rights on the DLQ can write: junk reads as 0."""
    return int(text) if text.isdigit() and len(text) < 10 else 0


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

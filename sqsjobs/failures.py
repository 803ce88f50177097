"""What a failed job looks like in the dead-letter queue.

The DLQ *is* the failed-jobs store: the body is the original message, byte for
byte (so a retry runs exactly what failed, and an unreadable body is kept for a
human; an offloaded body stays a pointer to the same S3 object), and the reason
travels as message attributes.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass

from .connections.base import OutgoingMessage, ReceivedMessage
from .payloads import carried
from .timing import parse_iso, utc_iso

PREFIX = "sqsjobs."
_TRACEBACK_CHARS = 2000


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
    """The DLQ copy of `message`, with the reason in its attributes (at most 10 are allowed)."""
    attributes = {
        "reason": kind,
        "error_type": type(error).__name__,
        "error": (str(error) or type(error).__name__)[:1000],
        "traceback": traceback_head(error),
        "failed_at": utc_iso(now),
        "source_queue": message.queue,
        "attempts": str(attempts),
        "job": job_name,
        "job_id": job_id,
    }
    letter = carried(message)  # an offloaded body keeps its S3 pointer: the object moves with it
    letter.attributes.update({PREFIX + k: v for k, v in attributes.items() if v})
    letter.deduplication_id = job_id or message.message_id
    letter.entry_id = job_id or message.message_id
    return letter


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
            attempts=int(attrs.get("attempts", "0") or 0),
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
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k in ("id", "job", "queue") if isinstance(v := data.get(k), str)}

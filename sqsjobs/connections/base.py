"""The one contract every connection (sqs, memory, sync, null) implements.

A connection only moves messages: send, receive, delete, change visibility and
write to the dead-letter queue. It knows nothing about jobs, which is what lets
the runner core be the only place with job semantics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class PayloadPointer:
    """Where an offloaded body lives; `body` is the pointer as it travels on the queue."""

    bucket: str
    key: str
    size: int
    body: str
    attribute: str = "ExtendedPayloadSize"


@dataclass(slots=True)
class OutgoingMessage:
    """A message to send. `entry_id` correlates batch results with the caller's jobs."""

    body: str
    delay_seconds: int = 0
    group_id: str | None = None
    deduplication_id: str | None = None
    #: Message attributes: a str is sent as a String, an int as a Number.
    attributes: dict[str, str | int] = field(default_factory=dict)
    entry_id: str = ""
    #: UTF-8 size of the body, when the sender already measured it (batching needs it).
    size: int = 0
    #: Set when the body was moved to S3 and `body` is now the pointer (never sent as such).
    pointer: PayloadPointer | None = None


@dataclass(slots=True)
class ReceivedMessage:
    """A message as received. `receive_count` is SQS's; the attempt number is derived from it by
    sqsjobs.policy.attempt (runs, not receives: docs/attempts.md)."""

    queue: str
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: float
    attributes: dict[str, str] = field(default_factory=dict)
    received_at: float = 0.0
    #: Set when the body was fetched from S3 (see sqsjobs.payloads); `body` is then the real one.
    pointer: PayloadPointer | None = None
    #: Why an offloaded body could not be fetched; the runner fails such a message for good...
    payload_error: str = ""
    #: ... unless the cause may pass (S3 throttling, a 5xx, a timeout): then it is tried again later.
    payload_retry: bool = False
    #: The DLQ reason for `payload_error`: `missing_payload`, `foreign_pointer` for a pointer outside
    #: the configured bucket and prefix (never read, never deleted), or `payload_too_large`.
    payload_reason: str = "missing_payload"
    #: The FIFO message group (None on a standard queue): FIFO order and the attempt count need it.
    group_id: str | None = None


class Undeleted(NamedTuple):
    """A message a delete left in its queue. `retry`: the service failed that entry on its own side
    (SQS's `SenderFault` false), so the same receipt handle may well work a moment later; otherwise the
    message itself was refused (an expired receipt handle: it may already be running elsewhere)."""

    message: ReceivedMessage
    retry: bool


@dataclass(slots=True)
class QueueInfo:
    """What the worker and `check` need to know about a queue, read once."""

    name: str
    url: str
    visibility_timeout: int
    fifo: bool
    dlq_url: str | None
    max_receive_count: int | None
    content_based_dedup: bool = False


@dataclass(slots=True)
class BatchFailure:
    entry_id: str
    code: str
    message: str
    sender_fault: bool


@runtime_checkable
class Connection(Protocol):
    """Moves messages for named (logical) queues."""

    name: str

    def send(self, queue: str, message: OutgoingMessage) -> str: ...

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[BatchFailure]:
        """Send at most 10 messages; return the entries SQS rejected."""
        ...

    def receive(
        self, queue: str, max_messages: int, wait_seconds: int, visibility_timeout: int | None = None
    ) -> list[ReceivedMessage]:
        """Up to `max_messages` (1-10), long-polling `wait_seconds`; each hidden for `visibility_timeout`
        seconds, or the queue's own visibility timeout when None.

        A worker passes the visibility its heartbeat counts on: the queue's setting may change while
        it runs, and a receive hidden for less than the worker believes runs its job twice.
        """
        ...

    def delete(self, queue: str, messages: Sequence[ReceivedMessage]) -> list[Undeleted]:
        """Delete messages; return those that could not be deleted (they may be delivered again), each
        saying whether trying again may help. Every failed entry is logged."""
        ...

    def change_visibility(self, queue: str, items: Sequence[tuple[ReceivedMessage, int]]) -> list[ReceivedMessage]:
        """Set each message's visibility; return those whose change failed on the service's side (worth
        trying again: the heartbeat does). Every failed entry is logged; one refused for the message
        itself (an expired receipt handle) is not returned."""
        ...

    def send_to_dlq(self, queue: str, message: OutgoingMessage) -> None: ...

    def queue_info(self, queue: str) -> QueueInfo: ...

    def counts(self, queue: str) -> dict[str, int]:
        """`ApproximateNumberOfMessages`, `...NotVisible` and `...Delayed` for the queue."""
        ...

"""An in-process queue that behaves like SQS where jobs can tell: for users' fast tests.

It honours delays, visibility timeouts (the queue's, or the one a receive asks for), receive
counts, a redrive policy to a dead-letter list and FIFO groups as SQS serves them — several
messages of a group in one receive, in order, and nothing of a group while one of its messages
is in flight — so a test written against it keeps passing on SQS (tests/unit/test_memory_connection.py
runs the same FIFO script on both). Time comes from an injectable clock.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .base import BatchFailure, OutgoingMessage, QueueInfo, ReceivedMessage, Undeleted


@dataclass(slots=True)
class _Stored:
    message_id: str
    body: str
    attributes: dict[str, str]
    sent_at: float
    visible_at: float
    group_id: str | None
    receive_count: int = 0
    receipt: str = ""


@dataclass(slots=True)
class _Queue:
    messages: list[_Stored] = field(default_factory=list)
    dead: list[_Stored] = field(default_factory=list)


class MemoryConnection:
    """SQS semantics in a dict. `dead_letters(queue)` is the DLQ's content."""

    name = "memory"

    def __init__(
        self,
        *,
        visibility_timeout: int = 30,
        max_receive_count: int | None = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.visibility_timeout = visibility_timeout
        self.max_receive_count = max_receive_count
        self._clock = clock
        self._queues: dict[str, _Queue] = {}
        self._cond = threading.Condition()
        self._receipts = itertools.count(1)

    def _queue(self, name: str) -> _Queue:
        return self._queues.setdefault(name, _Queue())

    # -- sending ------------------------------------------------------------------------
    def send(self, queue: str, message: OutgoingMessage) -> str:
        now = self._clock()
        stored = _Stored(
            message_id=str(uuid.uuid4()),
            body=message.body,
            attributes={k: str(v) for k, v in message.attributes.items()},
            sent_at=now,
            visible_at=now + message.delay_seconds,
            group_id=message.group_id,
        )
        with self._cond:
            self._queue(queue).messages.append(stored)
            self._cond.notify_all()
        return stored.message_id

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[BatchFailure]:
        for message in messages:
            self.send(queue, message)
        return []

    def send_to_dlq(self, queue: str, message: OutgoingMessage) -> None:
        now = self._clock()
        with self._cond:
            self._queue(queue).dead.append(
                _Stored(
                    str(uuid.uuid4()), message.body, {k: str(v) for k, v in message.attributes.items()}, now, now, None
                )
            )

    # -- receiving ----------------------------------------------------------------------
    def receive(
        self, queue: str, max_messages: int, wait_seconds: int, visibility_timeout: int | None = None
    ) -> list[ReceivedMessage]:
        deadline = time.monotonic() + wait_seconds
        hide_for = self.visibility_timeout if visibility_timeout is None else max(0, int(visibility_timeout))
        with self._cond:
            while True:
                found = self._take(queue, max_messages, hide_for)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                self._cond.wait(min(remaining, 0.05))

    def _take(self, queue: str, max_messages: int, hide_for: int) -> list[ReceivedMessage]:
        """As SQS FIFO does: a group with a message in flight gives nothing, and a group that gives
        hands out its messages in order, several per receive (the consumer must keep them in order)."""
        now = self._clock()
        q = self._queue(queue)
        blocked = {m.group_id for m in q.messages if m.group_id and m.visible_at > now and m.receive_count}
        out: list[ReceivedMessage] = []
        for stored in list(q.messages):
            if len(out) >= max_messages:
                break
            if stored.group_id and stored.group_id in blocked:
                continue
            if stored.visible_at > now:
                if stored.group_id:
                    blocked.add(stored.group_id)  # nothing of its group may pass it
                continue
            if self.max_receive_count is not None and stored.receive_count >= self.max_receive_count:
                q.messages.remove(stored)
                q.dead.append(stored)
                continue
            stored.receive_count += 1
            stored.visible_at = now + hide_for
            stored.receipt = f"{stored.message_id}#{next(self._receipts)}"
            out.append(
                ReceivedMessage(
                    queue=queue,
                    message_id=stored.message_id,
                    receipt_handle=stored.receipt,
                    body=stored.body,
                    receive_count=stored.receive_count,
                    sent_at=stored.sent_at,
                    attributes=dict(stored.attributes),
                    received_at=now,
                    group_id=stored.group_id,
                )
            )
        return out

    def delete(self, queue: str, messages: Sequence[ReceivedMessage]) -> list[Undeleted]:
        handles = {m.receipt_handle for m in messages}
        with self._cond:
            q = self._queue(queue)
            q.messages = [m for m in q.messages if m.receipt not in handles]
        return []

    def change_visibility(self, queue: str, items: Sequence[tuple[ReceivedMessage, int]]) -> list[ReceivedMessage]:
        now = self._clock()
        wanted = {m.receipt_handle: vt for m, vt in items}
        with self._cond:
            for stored in self._queue(queue).messages:
                if stored.receipt in wanted:
                    stored.visible_at = now + wanted[stored.receipt]
            self._cond.notify_all()
        return []

    # -- inspection ---------------------------------------------------------------------
    def queue_info(self, queue: str) -> QueueInfo:
        return QueueInfo(
            name=queue,
            url=f"memory://{queue}",
            visibility_timeout=self.visibility_timeout,
            fifo=queue.endswith(".fifo"),
            dlq_url=f"memory://{queue}-dlq",
            max_receive_count=self.max_receive_count,
        )

    def counts(self, queue: str) -> dict[str, int]:
        now = self._clock()
        with self._cond:
            msgs = self._queue(queue).messages
            visible = sum(1 for m in msgs if m.visible_at <= now)
            delayed = sum(1 for m in msgs if m.visible_at > now and not m.receive_count)
        return {
            "ApproximateNumberOfMessages": visible,
            "ApproximateNumberOfMessagesNotVisible": len(msgs) - visible - delayed,
            "ApproximateNumberOfMessagesDelayed": delayed,
        }

    def size(self, queue: str) -> int:
        with self._cond:
            return len(self._queue(queue).messages)

    def dead_letters(self, queue: str) -> list[ReceivedMessage]:
        """What the queue's DLQ holds, as messages (attributes carry the failure reason)."""
        with self._cond:
            return [
                ReceivedMessage(queue, m.message_id, "", m.body, m.receive_count, m.sent_at, dict(m.attributes))
                for m in self._queue(queue).dead
            ]

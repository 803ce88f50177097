"""Connections that do not queue: `sync` runs each job at once, `null` drops it.

`sync` runs the job through the same runner core as a worker, so a job that
passes here behaves the same under the poller. It is handed the runner as a
callable so connections never import the runner.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from ..decisions import Decision, Release
from .base import BatchFailure, Connection, OutgoingMessage, QueueInfo, ReceivedMessage

RunMessage = Callable[[ReceivedMessage, Connection], Decision]


log = logging.getLogger("sqsjobs.sync")


class NullConnection:
    """Accepts every message and keeps none: dispatching becomes a no-op."""

    name = "null"
    runs_inline = True

    def send(self, queue: str, message: OutgoingMessage) -> str:
        return ""

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[BatchFailure]:
        return []

    def send_to_dlq(self, queue: str, message: OutgoingMessage) -> None:
        return None

    def receive(self, queue: str, max_messages: int, wait_seconds: int) -> list[ReceivedMessage]:
        return []

    def delete(self, queue: str, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        return []

    def change_visibility(self, queue: str, items: Sequence[tuple[ReceivedMessage, int]]) -> None:
        return None

    def queue_info(self, queue: str) -> QueueInfo:
        return QueueInfo(queue, f"null://{queue}", 0, queue.endswith(".fifo"), None, None)

    def counts(self, queue: str) -> dict[str, int]:
        return {}


class SyncConnection(NullConnection):
    """Runs a job as it is dispatched; releases retry at once (delays are not waited for).

    A job dispatched while another runs on the same thread (from `handle()`, or the next
    link of a chain) runs right after it, not inside it: the calls queue up instead of
    nesting, so a chain of any length runs without growing the stack.
    """

    name = "sync"
    runs_inline = True

    def __init__(self, run: RunMessage, max_receive_count: int = 10) -> None:
        self._run = run
        self._max_receive_count = max_receive_count
        self._dead: dict[str, list[ReceivedMessage]] = {}
        self.last_decision: Decision | None = None
        self._handles = itertools.count(1)
        self._local = threading.local()

    def send(self, queue: str, message: OutgoingMessage) -> str:
        message_id = str(uuid.uuid4())
        pending: list[tuple[str, OutgoingMessage, str]] | None = getattr(self._local, "pending", None)
        if pending is not None:
            pending.append((queue, message, message_id))
            return message_id
        self._local.pending = pending = [(queue, message, message_id)]
        own_error: Exception | None = None
        try:
            while pending:
                item = pending.pop(0)
                try:
                    self._run_now(*item)
                except Exception as exc:
                    if item[2] != message_id:  # one queued job's crash must not drop the others
                        log.exception("a job dispatched from a running job crashed the sync connection")
                    elif own_error is None:
                        own_error = exc
        finally:
            self._local.pending = None
        if own_error is not None:
            raise own_error
        return message_id

    def _run_now(self, queue: str, message: OutgoingMessage, message_id: str) -> None:
        now = time.time()
        for attempt in range(1, self._max_receive_count + 1):
            received = ReceivedMessage(
                queue,
                message_id,
                f"sync-{next(self._handles)}",
                message.body,
                attempt,
                now,
                {k: str(v) for k, v in message.attributes.items()},
                now,
            )
            decision = self._run(received, self)
            self.last_decision = decision
            if not isinstance(decision, Release):
                return
        # What a queue's redrive policy does to a message that never settles: no endless loop here.
        log.error(
            "a message on %r was released %d times without settling; moved aside as a redrive would",
            queue,
            self._max_receive_count,
        )
        self.send_to_dlq(queue, message)

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[BatchFailure]:
        for message in messages:
            self.send(queue, message)
        return []

    def send_to_dlq(self, queue: str, message: OutgoingMessage) -> None:
        self._dead.setdefault(queue, []).append(
            ReceivedMessage(
                queue,
                str(uuid.uuid4()),
                "",
                message.body,
                0,
                time.time(),
                {k: str(v) for k, v in message.attributes.items()},
            )
        )

    def dead_letters(self, queue: str) -> list[ReceivedMessage]:
        return list(self._dead.get(queue, []))

    def queue_info(self, queue: str) -> QueueInfo:
        return QueueInfo(queue, f"sync://{queue}", 0, queue.endswith(".fifo"), f"sync://{queue}-dlq", None)

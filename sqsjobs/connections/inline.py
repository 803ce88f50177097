"""Connections that do not queue: `sync` runs each job at once, `null` drops it.

`sync` runs the job through the same runner core as a worker, so a job that
passes here behaves the same under the poller. It is handed the runner as a
callable so connections never import the runner, and it applies the runner's
decisions with the meaning the settler gives them on a queue (sqsjobs.settling),
minus the waiting: a `Release` runs the job again now and spends a try, a
`Postpone` (the job did not run) runs it again now as a copy carrying the runs so
far, so it spends none.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from .. import policy
from ..decisions import Decision, Postpone, Release
from ..errors import NeverRanError
from .base import BatchFailure, Connection, OutgoingMessage, QueueInfo, ReceivedMessage, Undeleted

RunMessage = Callable[[ReceivedMessage, Connection], Decision]


log = logging.getLogger("sqsjobs.sync")

#: Postponements after which the sync connection gives up on a job that does not get to run.
MAX_POSTPONES = 20


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

    def receive(
        self, queue: str, max_messages: int, wait_seconds: int, visibility_timeout: int | None = None
    ) -> list[ReceivedMessage]:
        return []

    def delete(self, queue: str, messages: Sequence[ReceivedMessage]) -> list[Undeleted]:
        return []

    def change_visibility(self, queue: str, items: Sequence[tuple[ReceivedMessage, int]]) -> list[ReceivedMessage]:
        return []

    def queue_info(self, queue: str) -> QueueInfo:
        return QueueInfo(queue, f"null://{queue}", 0, queue.endswith(".fifo"), None, None)

    def counts(self, queue: str) -> dict[str, int]:
        return {}


class SyncConnection(NullConnection):
    """Runs a job as it is dispatched; releases retry at once (delays are not waited for).

    A job dispatched while another runs on the same thread (from `handle()`, or the next
    link of a chain) runs right after it, not inside it: the calls queue up instead of
    nesting, so a chain of any length runs without growing the stack.

    Dispatched from a running event loop (an async endpoint, an async test), the jobs run on a
    thread of their own, so an `async def handle` gets a loop of its own instead of failing on
    the caller's, and the caller's loop is never re-entered. The dispatch still returns only
    once the job is done: that is what "sync" promises.
    """

    name = "sync"
    runs_inline = True

    def __init__(self, run: RunMessage, max_receive_count: int = 10, *, max_postpones: int = MAX_POSTPONES) -> None:
        self._run = run
        self._max_receive_count = max_receive_count
        self._max_postpones = max_postpones
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
        if _in_running_loop():
            _on_own_thread(lambda: self._drain(queue, message, message_id))
        else:
            self._drain(queue, message, message_id)
        return message_id

    def _drain(self, queue: str, message: OutgoingMessage, message_id: str) -> None:
        """Run the message, then every job dispatched meanwhile on this thread, in order."""
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

    def _run_now(self, queue: str, message: OutgoingMessage, message_id: str) -> None:
        now = time.time()
        attributes = {k: str(v) for k, v in message.attributes.items()}
        receive_count = 0
        postponed = 0
        while True:
            receive_count += 1
            received = ReceivedMessage(
                queue,
                message_id,
                f"sync-{next(self._handles)}",
                message.body,
                receive_count,
                now,
                dict(attributes),
                now,
            )
            decision = self._run(received, self)
            self.last_decision = decision
            if isinstance(decision, Postpone):
                postponed += 1
                if postponed > self._max_postpones:
                    raise NeverRanError(
                        f"a job on {queue!r} was postponed {postponed} times and did not get to run "
                        f"(last: {decision.reason or 'no reason given'}); the sync connection does not wait, "
                        "so what holds it back is still there each time: run it through a queue "
                        "(connection 'memory' in tests, 'sqs' otherwise)"
                    )
                # What the settler does on a standard queue: a fresh copy carrying the runs so far.
                attributes[policy.RUNS_ATTRIBUTE] = str(policy.runs_so_far(receive_count, attributes))
                message_id, receive_count = str(uuid.uuid4()), 0
                continue
            if not isinstance(decision, Release):
                return
            if receive_count >= self._max_receive_count:
                break
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


def _in_running_loop() -> bool:
    """Whether this thread is inside a running event loop (where `asyncio.run` would raise)."""
    if "asyncio" not in sys.modules:  # nothing imported asyncio, so no loop runs: keep it that way
        return False
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _on_own_thread(work: Callable[[], None]) -> None:
    """Run `work` on a new thread, in a copy of the caller's context (the activated app), and wait.

    A thread of its own rather than the caller's loop: a job awaited there would need the loop
    the caller is blocking in, and `asyncio.run` refuses to start inside it.
    """
    errors: list[BaseException] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            context.run(work)
        except BaseException as exc:  # handed to the caller, who raised nothing of its own
            errors.append(exc)

    thread = threading.Thread(target=target, name="sqsjobs-sync", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]

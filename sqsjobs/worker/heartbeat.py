"""The heartbeat: keeps held and running messages hidden while the worker has them.

It has a thread of its own and a client with short timeouts and few retries: a heartbeat that
waits behind slow deletes, or on one hung call for half a minute, arrives after the message has
become visible again, and a long job runs twice.

A decided message leaves the heartbeat *before* its decision is applied, and `untrack` waits for
a heartbeat call already carrying it, so a late extension can never overwrite a release.

The thread sleeps until the next message is due (half of its visibility passed), not on a tick:
an idle or busy worker pays one wake-up per extension, not ten a second. An extension that fails
is tried again `_RETRY_S` later, while the message is still hidden.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.config import Config

from .. import aws
from ..connections.base import Connection, ReceivedMessage
from ..connections.sqs import SqsConnection
from ..settings import Settings
from ..timing import MAX_VISIBILITY_SECONDS

log = logging.getLogger("sqsjobs.worker")

#: Longest the thread sleeps with nothing due (a guard; `track` wakes it for a sooner message).
_IDLE_S = 1.0
#: A failed extension is tried again this much later (a quarter of the visibility, if that is less),
#: while the message still has the rest of the half it had left when it was due.
_RETRY_S = 1.0
#: Messages due this soon (at most a tenth of their visibility) go along with those due now: one call
#: for the messages of neighbouring receives instead of one each.
_SLACK_S = 1.0
#: Room left before SQS's 12 hours from the receive, for the call itself.
_MARGIN_S = 5
#: Short enough that one hung call cannot outlast half a visibility timeout of 30 s or more.
_CONNECT_TIMEOUT_S = 2
_READ_TIMEOUT_S = 5
_ATTEMPTS = 2


@dataclass(slots=True)
class _Tracked:
    message: ReceivedMessage
    visibility: int
    #: When to extend it next (monotonic): once half of its visibility has passed, or a retry.
    due_at: float
    warned_12h: bool = False


class Heartbeat:
    """Extends each tracked message's visibility whenever half of it has passed."""

    def __init__(self, connection: Connection, clock: Callable[[], float] = time.time, enabled: bool = True) -> None:
        self._connection = connection
        self._clock = clock
        self._enabled = enabled
        self._cond = threading.Condition()
        self._tracked: dict[str, _Tracked] = {}
        #: Receipt handles in the heartbeat call under way; `untrack` waits for them.
        self._calling: set[str] = set()
        #: When the sleeping thread wakes by itself (None: it is awake); `track` wakes it sooner.
        self._sleeping_until: float | None = None
        self._halt = threading.Event()
        #: Failed calls in a row, per queue: the first is logged with its traceback, the rest in one line
        #: each, and each waits a second longer (up to a quarter of the visibility) before the next try.
        self._failures: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="sqsjobs-heartbeat", daemon=True)

    def start(self) -> None:
        if self._enabled:
            self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(_READ_TIMEOUT_S * _ATTEMPTS + 1)

    def track(self, messages: list[ReceivedMessage], visibility: int) -> None:
        """Keep received messages hidden until they are decided; `visibility` is what the receive asked for.

        Held (prefetched) messages are extended too, so a message waiting for a free thread is never
        handed to a second worker.
        """
        now = time.monotonic()
        wall = self._clock()
        with self._cond:
            soonest = math.inf
            for message in messages:
                elapsed = max(0.0, wall - message.received_at) if message.received_at else 0.0
                due_at = now + visibility / 2 - elapsed
                soonest = min(soonest, due_at)
                self._tracked[message.receipt_handle] = _Tracked(message, visibility, due_at)
            if self._sleeping_until is not None and soonest < self._sleeping_until:
                self._cond.notify_all()

    def untrack(self, messages: list[ReceivedMessage], wait: bool = True) -> bool:
        """Stop extending `messages`; returns once no heartbeat call for them is still under way. Without
        `wait`, returns at once: False while such a call is under way (untrack again, waiting, later)."""
        handles = {m.receipt_handle for m in messages}
        with self._cond:
            for handle in handles:
                self._tracked.pop(handle, None)
            while self._calling & handles:
                if not wait:
                    return False
                self._cond.wait()
            return True

    def _run(self) -> None:
        while not self._halt.is_set():
            with self._cond:
                now = time.monotonic()
                soonest = min((t.due_at for t in self._tracked.values()), default=math.inf)
                self._sleeping_until = min(soonest, now + _IDLE_S)
                if self._sleeping_until > now and not self._halt.is_set():
                    self._cond.wait(self._sleeping_until - now)
                self._sleeping_until = None
            if self._halt.is_set():
                return
            try:
                self.beat()
            except Exception:
                log.exception("heartbeat failed; trying again")
                self._halt.wait(0.1)  # not a busy loop while it keeps failing

    def beat(self) -> None:
        """Extend every message due for it (one batched call per queue)."""
        due = self._due()
        if not due:
            return
        try:
            for queue, items in due.items():
                try:
                    failed = self._connection.change_visibility(queue, items)
                except Exception as exc:
                    failures = self._failures[queue] = self._failures.get(queue, 0) + 1
                    log.log(
                        logging.ERROR if failures == 1 else logging.WARNING,
                        "heartbeat for %d message(s) on %s failed (%d in a row); trying again: %s",
                        len(items),
                        queue,
                        failures,
                        exc,
                        exc_info=failures == 1,
                    )
                    self._retry([message for message, _ in items], failures)
                else:
                    self._failures.pop(queue, None)
                    self._retry(failed, 1)
        finally:
            with self._cond:
                self._calling.clear()
                self._cond.notify_all()

    def _retry(self, messages: list[ReceivedMessage], failures: int) -> None:
        if not messages:
            return
        now = time.monotonic()
        with self._cond:
            for message in messages:
                tracked = self._tracked.get(message.receipt_handle)
                if tracked is not None:
                    tracked.due_at = now + min(_RETRY_S * failures, tracked.visibility / 4)

    def _due(self) -> dict[str, list[tuple[ReceivedMessage, int]]]:
        now = time.monotonic()
        wall = self._clock()
        due: dict[str, list[tuple[ReceivedMessage, int]]] = {}
        with self._cond:
            for tracked in self._tracked.values():
                if tracked.due_at > now + min(_SLACK_S, tracked.visibility / 10):
                    continue
                # SQS counts the 12-hour visibility cap from receipt; past it we cannot hold on.
                received = tracked.message.received_at
                left = MAX_VISIBILITY_SECONDS - _MARGIN_S - (wall - received) if received else math.inf
                extend = int(min(tracked.visibility, left))
                if extend <= 0:
                    tracked.due_at = math.inf  # nothing more can be done for it
                    if not tracked.warned_12h:
                        tracked.warned_12h = True
                        log.error(
                            "message %s has been held for 12 hours, the SQS maximum; "
                            "it will be delivered again while its job still runs",
                            tracked.message.message_id,
                        )
                    continue
                tracked.due_at = now + extend / 2  # half of what it was given (less near the 12 hours)
                due.setdefault(tracked.message.queue, []).append((tracked.message, extend))
                self._calling.add(tracked.message.receipt_handle)
        return due


def quick_connection(connection: Connection, settings: Settings) -> Connection:
    """The connection heartbeats go through: on SQS, its own client with short timeouts and few retries.

    A heartbeat that fails fast is tried again a second later, well inside the half of its visibility
    the message still has; one that waits out the default 35 s read timeout and its retries is too late.
    """
    if type(connection) is not SqsConnection:
        return connection
    return SqsConnection(settings, client_factory=_quick_client)


def _quick_client() -> Any:
    config = Config(
        region_name=aws.region(),
        connect_timeout=_CONNECT_TIMEOUT_S,
        read_timeout=_READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": _ATTEMPTS},
        max_pool_connections=4,
        parameter_validation=aws.PARAMETER_VALIDATION,
    )
    return aws.new_client("sqs", config)

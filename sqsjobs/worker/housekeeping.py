"""The worker's background duties: batched deletes, visibility heartbeats, timeouts.

They run on one thread so they keep going while the main thread long-polls and
job threads are busy.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..connections.base import ReceivedMessage
from ..timing import MAX_VISIBILITY_SECONDS

if TYPE_CHECKING:
    from .poller import Worker

log = logging.getLogger("sqsjobs.worker")

_TICK_S = 0.1


@dataclass(slots=True)
class _Tracked:
    message: ReceivedMessage
    visibility_timeout: int
    visible_until: float
    thread_id: int
    warned_12h: bool = False


class Housekeeper:
    """Deletes finished messages in batches, extends running ones, interrupts overdue jobs."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._lock = threading.Lock()
        self._tracked: dict[str, _Tracked] = {}
        self._deletes: dict[str, list[ReceivedMessage]] = {}
        #: Receipt handles whose S3 payload goes once their message is deleted.
        self._drops: set[str] = set()
        self._oldest_delete = 0.0
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqsjobs-housekeeper", daemon=True)
        self._wedged_ids: set[int] = set()
        self.wedged = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()
        self._thread.join(10)
        self._flush_deletes(force=True)

    # -- what job threads tell us ------------------------------------------------------
    def track(self, messages: list[ReceivedMessage]) -> None:
        """Keep received messages hidden from other consumers until they are settled.

        Held (prefetched) messages are extended too, so a message waiting for a free
        thread is never handed to a second worker.
        """
        now = time.monotonic()
        wall = time.time()
        with self._lock:
            for message in messages:
                vt = self._worker.connection.queue_info(message.queue).visibility_timeout
                elapsed = max(0.0, wall - message.received_at) if message.received_at else 0.0
                self._tracked[message.receipt_handle] = _Tracked(message, vt, now + vt - elapsed, 0)

    def claim(self, message: ReceivedMessage) -> None:
        """The calling job thread now runs `message` (so a wedged thread's message can be let go)."""
        with self._lock:
            tracked = self._tracked.get(message.receipt_handle)
            if tracked is not None:
                tracked.thread_id = threading.get_ident()

    def untrack(self, messages: list[ReceivedMessage]) -> None:
        with self._lock:
            for message in messages:
                self._tracked.pop(message.receipt_handle, None)

    def delete_later(self, message: ReceivedMessage, drop_payload: bool = False) -> None:
        """Delete `message` with the next batch; with `drop_payload`, its S3 payload after that."""
        with self._lock:
            if not self._deletes:
                self._oldest_delete = time.monotonic()
            self._deletes.setdefault(message.queue, []).append(message)
            if drop_payload and message.pointer is not None:
                self._drops.add(message.receipt_handle)
            full = any(len(batch) >= 10 for batch in self._deletes.values())
        if full:
            self._wake.set()

    def wedged_thread_alive(self, thread: threading.Thread) -> bool:
        return thread.ident in self._wedged_ids

    # -- the loop ----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._halt.is_set():
            self._wake.wait(_TICK_S)
            self._wake.clear()
            try:
                self._flush_deletes()
                if self._worker.options.heartbeat:
                    self._heartbeat()
                self._enforce_timeouts()
            except Exception:
                log.exception("housekeeping failed; trying again")

    def _flush_deletes(self, force: bool = False) -> None:
        with self._lock:
            if not self._deletes:
                return
            due = force or time.monotonic() - self._oldest_delete >= self._worker.options.delete_flush_s
            if not due and not any(len(batch) >= 10 for batch in self._deletes.values()):
                return
            if due:
                batches, self._deletes = self._deletes, {}
            else:
                # Only whole batches of 10 go now; a remainder waits for more or for its time.
                batches = {}
                for queue, pending in list(self._deletes.items()):
                    whole = len(pending) // 10 * 10
                    if whole:
                        batches[queue] = pending[:whole]
                        if pending[whole:]:
                            self._deletes[queue] = pending[whole:]
                        else:
                            del self._deletes[queue]
                if self._deletes:
                    self._oldest_delete = time.monotonic()
        for queue, messages in batches.items():
            try:
                kept = self._worker.connection.delete(queue, messages)
            except Exception:
                log.exception(
                    "could not delete %d finished message(s) from %s; they may run again",
                    len(messages),
                    queue,
                )
                kept = messages
            self._drop_payloads(messages, kept)

    def _drop_payloads(self, deleted: list[ReceivedMessage], kept: list[ReceivedMessage]) -> None:
        """S3 payloads of finished jobs go after their message: a redelivery still finds its body."""
        with self._lock:
            if not self._drops:
                return
            dropping = [m for m in deleted if m.receipt_handle in self._drops]
            self._drops.difference_update(m.receipt_handle for m in dropping)
        still_queued = {m.receipt_handle for m in kept}
        payloads = self._worker.app.payloads
        for message in dropping:
            if payloads is not None and message.pointer is not None and message.receipt_handle not in still_queued:
                payloads.delete(message.pointer)

    def _heartbeat(self) -> None:
        now = time.monotonic()
        wall = time.time()
        due: dict[str, list[tuple[ReceivedMessage, int]]] = {}
        with self._lock:
            for tracked in self._tracked.values():
                vt = tracked.visibility_timeout
                if tracked.visible_until - now > vt / 2:
                    continue
                # SQS counts the 12-hour visibility cap from receipt; past it we cannot hold on.
                left = MAX_VISIBILITY_SECONDS - (wall - tracked.message.received_at) - 1
                extend = int(min(vt, left))
                if extend <= 0:
                    if not tracked.warned_12h:
                        tracked.warned_12h = True
                        log.error(
                            "message %s has been held for 12 hours, the SQS maximum; "
                            "it will be delivered again while its job still runs",
                            tracked.message.message_id,
                        )
                    continue
                tracked.visible_until = now + extend
                due.setdefault(tracked.message.queue, []).append((tracked.message, extend))
        for queue, items in due.items():
            try:
                self._worker.connection.change_visibility(queue, items)
            except Exception:
                log.exception("heartbeat for %d message(s) on %s failed", len(items), queue)

    def _enforce_timeouts(self) -> None:
        grace = self._worker.options.timeout_grace
        now = time.monotonic()
        for running in self._worker._enforcer.interrupt_overdue(now):
            if running.interrupted_at is None or now - running.interrupted_at < grace:
                continue
            if running.thread_id in self._wedged_ids:
                continue
            self._wedged_ids.add(running.thread_id)
            self.wedged = True
            with self._lock:
                # Stop extending its message: it becomes visible again and counts an attempt.
                for key, tracked in list(self._tracked.items()):
                    if tracked.thread_id == running.thread_id:
                        del self._tracked[key]
            log.error(
                "%s ignored its timeout of %gs for %gs (blocked outside Python?); the worker stops taking "
                "work and exits 1 so it can be replaced. Its message returns after the visibility timeout "
                "and counts as an attempt.",
                running.job_name,
                running.timeout,
                grace,
            )
            self._worker.stop(f"{running.job_name} could not be interrupted", 1)

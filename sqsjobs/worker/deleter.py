"""The deleter: finished messages leave their queue in batches of 10, then their S3 bodies go.

Its own thread: a delete batch (and an S3 delete behind it) may take seconds when AWS is slow,
and nothing else — least of all the heartbeat — may wait for that. The thread sleeps until a batch
is due (full, or its oldest message waited long enough), not on a tick: an idle worker's threads
waking ten times a second cost more CPU than its long polls.
"""

from __future__ import annotations

import logging
import threading
import time

from ..connections.base import Connection, ReceivedMessage, Undeleted
from ..payloads import PayloadStore

log = logging.getLogger("sqsjobs.worker")

#: Longest the thread sleeps with nothing pending (a guard; every add that needs it wakes the thread).
_IDLE_S = 1.0
#: Tries of a delete after its first failed (SQS failing the entry on its side, or the call failing
#: after botocore's own retries), n seconds before the n-th: a message left in its queue runs its job
#: again once its visibility lapses, and the heartbeat no longer extends it. 6 s in all stays well
#: inside the half visibility the heartbeat leaves a message with.
_RETRIES = 3


class Deleter:
    """Collects deletes; sends a queue's batch when it holds 10, or when its oldest waited `flush_s` (up to
    twice that for one left over when full batches went)."""

    def __init__(self, connection: Connection, payloads: PayloadStore | None, flush_s: float) -> None:
        self._connection = connection
        self._payloads = payloads
        self._flush_s = flush_s
        self._lock = threading.Lock()
        self._pending: dict[str, list[ReceivedMessage]] = {}
        #: Receipt handles whose S3 payload goes once their message is deleted.
        self._drops: set[str] = set()
        #: When each queue's oldest pending delete was added: a busy queue's full batches must never
        #: hold back another queue's lone delete (its message is no longer extended by the heartbeat).
        self._oldest: dict[str, float] = {}
        #: Receipt handle -> tries so far, for deletes that failed and are pending again.
        self._tries: dict[str, int] = {}
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqsjobs-deleter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Send everything still pending (failed deletes tried again without waiting), then stop."""
        self._halt.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(60)
        for _ in range(_RETRIES + 1):
            self.flush(force=True)
            with self._lock:
                if not self._pending:
                    break

    def add(self, message: ReceivedMessage, drop_payload: bool = False) -> None:
        """Delete `message` with the next batch; with `drop_payload`, its S3 payload after that."""
        with self._lock:
            now = time.monotonic()
            batch = self._pending.get(message.queue)
            sooner = batch is None or self._oldest[message.queue] > now  # none, or only backed-off retries
            if batch is None:
                batch = self._pending[message.queue] = []
            if sooner:
                self._oldest[message.queue] = now
            batch.append(message)
            if drop_payload and message.pointer is not None:
                self._drops.add(message.receipt_handle)
        if sooner or len(batch) >= 10:  # a sooner deadline to sleep until, or a batch to send now
            self._wake.set()

    def _run(self) -> None:
        while not self._halt.is_set():
            self._wake.wait(self._until_due())
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.exception("deleting finished messages failed; trying again")

    def _until_due(self) -> float:
        with self._lock:
            if not self._oldest:
                return _IDLE_S
            return max(0.0, min(self._oldest.values()) + self._flush_s - time.monotonic())

    def flush(self, force: bool = False) -> None:
        """Send the batches that are due (all of them with `force`)."""
        for queue, messages in self._due(force).items():
            try:
                undeleted = self._connection.delete(queue, messages)
                failure: Exception | None = None
            except Exception as exc:  # botocore has tried already; the call may still work a moment later
                undeleted = [Undeleted(m, True) for m in messages]
                failure = exc
            retrying = self._again(queue, messages, [u.message for u in undeleted if u.retry], failure)
            self._drop_payloads(messages, {u.message.receipt_handle for u in undeleted}, retrying)

    def _again(
        self, queue: str, sent: list[ReceivedMessage], failed: list[ReceivedMessage], failure: Exception | None
    ) -> set[str]:
        """Put failed deletes back, due after their backoff; returns their receipt handles. Those that
        used their tries are given up (their jobs will run again)."""
        now = time.monotonic()
        retrying: list[ReceivedMessage] = []
        given_up = 0
        with self._lock:
            # Every message sent leaves the count (a retry that landed, too); those failing again come back in.
            earlier = {
                m.receipt_handle: self._tries.pop(m.receipt_handle) for m in sent if m.receipt_handle in self._tries
            }
            for message in failed:
                tries = earlier.get(message.receipt_handle, 0) + 1
                if tries > _RETRIES:
                    given_up += 1
                    continue
                self._tries[message.receipt_handle] = tries
                retrying.append(message)
            first = any(self._tries[m.receipt_handle] == 1 for m in retrying)
            if retrying:
                delay = max(self._tries[m.receipt_handle] for m in retrying)
                self._pending[queue] = retrying + self._pending.get(queue, [])
                due = now + delay - self._flush_s  # `_due` sends a queue flush_s after its "oldest"
                self._oldest[queue] = min(self._oldest.get(queue, due), due)
        if failure is not None and retrying:
            (log.error if first else log.warning)(
                "could not delete %d finished message(s) from %s (%s); trying again",
                len(retrying),
                queue,
                failure,
                exc_info=failure if first else None,
            )
        if given_up:
            log.error(
                "gave up deleting %d finished message(s) from %s after %d tries; their jobs will run again "
                "when SQS delivers them",
                given_up,
                queue,
                _RETRIES + 1,
            )
        return {m.receipt_handle for m in retrying}

    def _due(self, force: bool) -> dict[str, list[ReceivedMessage]]:
        now = time.monotonic()
        batches: dict[str, list[ReceivedMessage]] = {}
        with self._lock:
            for queue, pending in list(self._pending.items()):
                # A queue whose oldest waited long enough goes whole; else only whole batches of 10 go, and
                # the remainder waits for more or for its time, counted from now: fuller batches (fewer
                # calls) for at most one more `flush_s` of waiting.
                whole = len(pending) if force or now - self._oldest[queue] >= self._flush_s else len(pending) // 10 * 10
                if not whole:
                    continue
                batches[queue] = pending[:whole]
                if pending[whole:]:
                    self._pending[queue] = pending[whole:]
                    self._oldest[queue] = now
                else:
                    del self._pending[queue], self._oldest[queue]
        return batches

    def _drop_payloads(self, sent: list[ReceivedMessage], still_queued: set[str], retrying: set[str]) -> None:
        """S3 payloads of finished jobs go after their message: a redelivery still finds its body. A
        delete tried again keeps its payload's turn for when it is done."""
        with self._lock:
            if not self._drops:
                return
            dropping = [m for m in sent if m.receipt_handle in self._drops and m.receipt_handle not in retrying]
            self._drops.difference_update(m.receipt_handle for m in dropping)
        for message in dropping:
            if (
                self._payloads is not None
                and message.pointer is not None
                and message.receipt_handle not in still_queued
            ):
                try:
                    self._payloads.delete(message.pointer)
                except Exception:
                    log.exception("could not delete the S3 body of %s; it stays in the bucket", message.message_id)

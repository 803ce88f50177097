"""The deleter: finished messages leave their queue in batches of 10, then their S3 bodies go.

Its own thread: a delete batch (and an S3 delete behind it) may take seconds when AWS is slow,
and nothing else — least of all the heartbeat — may wait for that. The thread sleeps until a batch
is due (full, or its oldest message waited long enough), not on a tick: an idle worker's threads
waking ten times a second cost more CPU than its long polls.

A delete SQS fails on its side (an entry with `SenderFault` false) is tried again a few seconds
later: left alone, the finished message would come back once its visibility lapsed (the heartbeat
no longer extends it) and its job would run again. A failed *call* is not: botocore has already
spent its attempts on it, for longer than a message is sure to stay hidden.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..connections.base import Connection, ReceivedMessage, Undeleted
from ..payloads import PayloadStore

log = logging.getLogger("sqsjobs.worker")

#: Longest the thread sleeps with nothing pending (a guard; every add that needs it wakes the thread).
_IDLE_S = 1.0
#: Tries after the first for a delete SQS failed on its side, n seconds before the n-th: 6 s in all,
#: inside the half visibility (30 s at the default 60) the heartbeat leaves a message with.
_RETRIES = 3


@dataclass(slots=True)
class _Retry:
    message: ReceivedMessage
    tries: int
    due_at: float


class Deleter:
    """Collects deletes; sends a queue's batch when it holds 10, or when its oldest waited `flush_s` (up to
    twice that for one left over when full batches went). Retries ride along once they are due."""

    def __init__(
        self,
        connection: Connection,
        payloads: PayloadStore | None,
        flush_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connection = connection
        self._clock = clock
        self._payloads = payloads
        self._flush_s = flush_s
        self._lock = threading.Lock()
        self._pending: dict[str, list[ReceivedMessage]] = {}
        #: Receipt handles whose S3 payload goes once their message is deleted.
        self._drops: set[str] = set()
        #: When each queue's oldest pending delete was added: a busy queue's full batches must never
        #: hold back another queue's lone delete (its message is no longer extended by the heartbeat).
        self._oldest: dict[str, float] = {}
        #: Deletes SQS failed on its side, per queue, each waiting for its own time (never sent sooner
        #: with a busy queue's next batch: a short fault on SQS's side would use up every try at once).
        self._retries: dict[str, list[_Retry]] = {}
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqsjobs-deleter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Send everything still pending, waiting for retries that are due within their few seconds, then stop."""
        self._halt.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(60)
        self.flush(force=True)
        self.settle_retries()

    def settle_retries(self) -> None:
        """Wait for the retries still to come (6 s at most) and send each when due: for `stop`, and for
        a caller that flushes without the thread (`Worker.poll_once`)."""
        while (wait := self._next_retry_in()) is not None:
            time.sleep(wait)
            self.flush(force=True)

    def add(self, message: ReceivedMessage, drop_payload: bool = False) -> None:
        """Delete `message` with the next batch; with `drop_payload`, its S3 payload after that."""
        with self._lock:
            batch = self._pending.get(message.queue)
            if batch is None:  # a new deadline: the thread may be sleeping past it
                batch = self._pending[message.queue] = []
                self._oldest[message.queue] = self._clock()
            batch.append(message)
            if drop_payload and message.pointer is not None:
                self._drops.add(message.receipt_handle)
        if self._halt.is_set() and not self._thread.is_alive():
            # After `stop` (a job that ignored its timeout ended late): no thread will send it.
            self.flush(force=True)
        elif len(batch) == 1 or len(batch) >= 10:  # a deadline to sleep until, or a batch to send now
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
            due = [t + self._flush_s for t in self._oldest.values()]
            due.extend(r.due_at for retries in self._retries.values() for r in retries)
        return _IDLE_S if not due else min(_IDLE_S, max(0.0, min(due) - self._clock()))

    def _next_retry_in(self) -> float | None:
        with self._lock:
            due = [r.due_at for retries in self._retries.values() for r in retries]
        return None if not due else max(0.0, min(due) - self._clock())

    def flush(self, force: bool = False) -> None:
        """Send the batches that are due (all but retries not yet due with `force`)."""
        for queue, (messages, tries) in self._due(force).items():
            try:
                undeleted = self._connection.delete(queue, messages)
                # A connection of the user's own may still return plain messages (or None): no retry then.
                failed = [u if isinstance(u, Undeleted) else Undeleted(u, False) for u in undeleted or []]
            except Exception:
                log.exception(
                    "could not delete %d finished message(s) from %s; they may run again", len(messages), queue
                )
                failed = [Undeleted(m, False) for m in messages]
            self._again(queue, [u.message for u in failed if u.retry], tries)
            self._drop_payloads(messages, {u.message.receipt_handle for u in failed}, tries)

    def _due(self, force: bool) -> dict[str, tuple[list[ReceivedMessage], dict[str, int]]]:
        """Per queue: the messages to send now, and the tries so far of those that are retries."""
        now = self._clock()
        batches: dict[str, tuple[list[ReceivedMessage], dict[str, int]]] = {}
        with self._lock:
            for queue, pending in list(self._pending.items()):
                # A queue whose oldest waited long enough goes whole; else only whole batches of 10 go, and
                # the remainder waits for more or for its time, counted from now: fuller batches (fewer
                # calls) for at most one more `flush_s` of waiting.
                whole = len(pending) if force or now - self._oldest[queue] >= self._flush_s else len(pending) // 10 * 10
                if not whole:
                    continue
                batches[queue] = (pending[:whole], {})
                if pending[whole:]:
                    self._pending[queue] = pending[whole:]
                    self._oldest[queue] = now
                else:
                    del self._pending[queue], self._oldest[queue]
            for queue, retries in list(self._retries.items()):
                ready = [r for r in retries if r.due_at <= now]
                if not ready:
                    continue
                messages, tries = batches.setdefault(queue, ([], {}))
                messages.extend(r.message for r in ready)
                tries.update((r.message.receipt_handle, r.tries) for r in ready)
                left = [r for r in retries if r.due_at > now]
                if left:
                    self._retries[queue] = left
                else:
                    del self._retries[queue]
        return batches

    def _again(self, queue: str, failed: list[ReceivedMessage], tries: dict[str, int]) -> None:
        """Keep deletes SQS failed on its side for a later try; give up on those that used theirs."""
        if not failed:
            return
        now = self._clock()
        given_up = 0
        with self._lock:
            for message in failed:
                n = tries.get(message.receipt_handle, 0) + 1
                if n > _RETRIES:
                    given_up += 1
                else:
                    self._retries.setdefault(queue, []).append(_Retry(message, n, now + n))
        self._wake.set()  # the thread may sleep past the first retry's time
        if given_up:
            log.error(
                "gave up deleting %d finished message(s) from %s after %d tries (SQS failed them on its side); "
                "their jobs will run again when SQS delivers them",
                given_up,
                queue,
                _RETRIES + 1,
            )

    def _drop_payloads(self, sent: list[ReceivedMessage], still_queued: set[str], tries: dict[str, int]) -> None:
        """S3 payloads of finished jobs go after their message: a redelivery still finds its body.

        A message deleted only on a retry keeps its body (the bucket's lifecycle rule removes it): that
        late, its receipt handle may be stale, and SQS then answers success without deleting it."""
        with self._lock:
            if not self._drops:
                return
            retrying = {r.message.receipt_handle for retries in self._retries.values() for r in retries}
            settled = [m for m in sent if m.receipt_handle in self._drops and m.receipt_handle not in retrying]
            self._drops.difference_update(m.receipt_handle for m in settled)
        for message in settled:
            if (
                self._payloads is not None
                and message.pointer is not None
                and message.receipt_handle not in still_queued
                and message.receipt_handle not in tries
            ):
                try:
                    self._payloads.delete(message.pointer)
                except Exception:
                    log.exception("could not delete the S3 body of %s; it stays in the bucket", message.message_id)

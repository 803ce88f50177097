"""The settler: turns the runner's decisions into SQS calls, within SQS's limits.

The ways in that have a queue (the poller, the asyncio worker, the Lambda adapter) apply decisions
here and nowhere else, so "release", "postpone" and "hand back unstarted" mean the same on each (the
sync connection has no queue: it runs the job again at once, with the same meaning for attempts):

- `Release(delay)`: the job ran; its message becomes visible again after `delay` (a try spent).
  SQS refuses a visibility beyond 12 hours from the receive, so the delay is cut to what is left.
- `Postpone(delay)` / `give_back`: the job did *not* run; it comes back without spending a try.
  On a standard queue a copy carrying the runs so far is sent (delayed) and the source is
  deleted: 2 calls (batched 10 per call when handing back many) instead of 1, and the receive
  count starts again, so the redrive policy still counts only crashes. On a FIFO queue a copy
  would jump the group's order, so the message keeps its place (a visibility change) and the
  postponement is counted in the store (`skips`), which the next delivery subtracts.
- `Ack`, `Fail`, `Defer`: the caller deletes the source (in batches, or by reporting success
  to Lambda); `Settled.drop_payload` says whether its S3 body may go too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import policy
from .chunks import bounded
from .connections.base import Connection, OutgoingMessage, ReceivedMessage
from .decisions import Ack, Decision, Postpone, Release, deletes_source, drops_payload
from .payloads import carried
from .signing import SigningKeys
from .stores.base import Store
from .timing import MAX_DELAY_SECONDS, MAX_VISIBILITY_SECONDS

log = logging.getLogger("sqsjobs.settle")

#: A visibility change must land before SQS's 12-hour mark, with room for the call itself.
_VISIBILITY_MARGIN_S = 30
#: A FIFO postponement is remembered as long as a message can live on a queue.
_SKIPS_TTL_S = 14 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Settled:
    """What is left for the caller once a decision is applied."""

    #: Delete the source message (batched by the poller; reported as success to Lambda).
    delete: bool
    #: ... and its offloaded S3 body with it (only a finished job lets go of it).
    drop_payload: bool = False


#: What an Ack leaves to the caller (the delete, and the S3 body with it).
_ACKED = Settled(delete=True, drop_payload=True)


class SkipLedger:
    """FIFO postponements per message id, so they are not counted as attempts."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store
        self._warned = False

    def record(self, message: ReceivedMessage) -> None:
        self._store().incr(("skips", message.message_id), 1, ttl=_SKIPS_TTL_S)

    def count(self, message: ReceivedMessage) -> int:
        """Postponements of this FIFO message so far; read only on its redeliveries (receive count > 1).

        Without a reachable store (no table provisioned, an outage) it answers 0: a postponement then
        spends a try, as any store error does, and the job itself still runs.
        """
        if message.group_id is None or message.receive_count <= 1:
            return 0
        try:
            item = self._store().get(("skips", message.message_id))
        except Exception as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "FIFO postponements cannot be read from the store (%s: %s); until it is reachable each one "
                    "counts as a try. Run `sqsjobs provision` to create the table (SQSJOBS_TABLE)",
                    type(exc).__name__,
                    exc,
                )
            return 0
        return int(item.get("count", 0)) if item else 0


class Settler:
    """Applies decisions for one connection; stateless, safe across threads."""

    def __init__(
        self,
        connection: Connection,
        skips: SkipLedger,
        clock: Callable[[], float] = time.time,
        keys: SigningKeys | None = None,
    ) -> None:
        self.connection = connection
        self.skips = skips
        self.clock = clock
        #: With signing, a copy carries a stamp of when its job was first sent, so a hand-back does not
        #: make a backlogged job look like a late replay to SQSJOBS_SIGNING_MAX_AGE.
        self.keys = keys

    def apply(self, message: ReceivedMessage, decision: Decision) -> Settled:
        """Make the decision true on SQS, except the delete, which is left to the caller."""
        if type(decision) is Ack:  # most decisions: nothing to call, and one answer for all
            return _ACKED
        if isinstance(decision, Postpone):
            return Settled(delete=bool(self.give_back([message], decision.delay, decision.reason)))
        if isinstance(decision, Release):
            self.release([(message, decision.delay)])
            return Settled(delete=False)
        return Settled(delete=deletes_source(decision), drop_payload=drops_payload(decision))

    def visibility_left(self, message: ReceivedMessage) -> int:
        """The longest visibility SQS accepts for this receipt now."""
        if not message.received_at:
            return MAX_VISIBILITY_SECONDS - _VISIBILITY_MARGIN_S
        used = self.clock() - message.received_at
        return max(0, math.floor(MAX_VISIBILITY_SECONDS - _VISIBILITY_MARGIN_S - used))

    def release(self, items: Sequence[tuple[ReceivedMessage, int]]) -> None:
        """Visibility changes, cut to what SQS accepts. An entry SQS failed on its side is tried once
        more at once; a failure is logged (the message then comes back when its current visibility
        ends, sooner or later than asked, which spends nothing more)."""
        by_queue: dict[str, list[tuple[ReceivedMessage, int]]] = {}
        for message, delay in items:
            allowed = self.visibility_left(message)
            if delay > allowed:
                log.warning(
                    "message %s: a wait of %d s is more than SQS allows from this receive; it comes back in %d s",
                    message.message_id,
                    delay,
                    allowed,
                )
            by_queue.setdefault(message.queue, []).append((message, max(0, min(int(delay), allowed))))
        for queue, entries in by_queue.items():
            sending = entries
            try:
                failed = self.connection.change_visibility(queue, sending) or []  # None: a connection of old
                again = {m.receipt_handle for m in failed}
                if again:  # SQS's own failure for those entries (logged): a second call usually lands
                    sending = [e for e in entries if e[0].receipt_handle in again]
                    self.connection.change_visibility(queue, sending)
            except Exception:
                log.exception("could not change the visibility of %d message(s) on %s", len(sending), queue)

    def give_back(self, messages: Sequence[ReceivedMessage], delay: int = 0, reason: str = "") -> list[ReceivedMessage]:
        """Bring messages whose job did not run back after `delay` seconds, spending no try.

        Returns the messages whose copy was sent: the caller deletes these sources. The others keep
        their place (FIFO, or a copy that could not be sent: then the try is spent, and logged).
        """
        delay = max(0, int(delay))
        fifo = [m for m in messages if m.group_id is not None]
        standard = [m for m in messages if m.group_id is None]
        copied: list[ReceivedMessage] = []
        by_queue: dict[str, list[ReceivedMessage]] = {}
        for message in standard:
            by_queue.setdefault(message.queue, []).append(message)
        for queue, group in by_queue.items():
            copied.extend(self._send_copies(queue, group, delay))
        kept = [m for m in standard if m not in copied]
        for message in fifo:
            try:
                self.skips.record(message)
            except Exception:
                log.exception("could not record the postponement of %s; it spends a try", message.message_id)
        if kept or fifo:
            self.release([(m, delay) for m in (*fifo, *kept)])
        if messages:
            log.info(
                "%d message(s) not run%s; back in %d s without spending a try",
                len(messages),
                f" ({reason})" if reason else "",
                delay,
            )
        return copied

    def _send_copies(self, queue: str, messages: list[ReceivedMessage], delay: int) -> list[ReceivedMessage]:
        now = self.clock()
        outgoing: list[OutgoingMessage] = []
        for index, message in enumerate(messages):
            copy = carried(message)
            copy.entry_id = str(index)
            copy.size = copy.size or len(copy.body.encode("utf-8", "surrogatepass"))
            copy.attributes[policy.RUNS_ATTRIBUTE] = str(policy.runs_so_far(message.receive_count, message.attributes))
            if delay > MAX_DELAY_SECONDS:
                copy.attributes[policy.NOT_BEFORE_ATTRIBUTE] = str(math.ceil(now + delay))
            if self.keys is not None and message.sent_at:
                stamp = message.attributes.get(policy.FIRST_SENT_ATTRIBUTE, "")
                earlier = self.keys.first_sent(message.body, stamp, message.sent_at) if stamp else None
                first = min(earlier, message.sent_at) if earlier is not None else message.sent_at
                copy.attributes[policy.FIRST_SENT_ATTRIBUTE] = self.keys.stamp(message.body, first, now)
            copy.delay_seconds = min(delay, MAX_DELAY_SECONDS)
            outgoing.append(copy)
        sent: list[ReceivedMessage] = []
        for chunk in _chunks(outgoing):
            try:
                failures = self.connection.send_batch(queue, chunk)
            except Exception:
                log.exception("could not send %d copy/copies to %s; they spend a try instead", len(chunk), queue)
                continue
            refused = {f.entry_id for f in failures}
            sent.extend(messages[int(c.entry_id)] for c in chunk if c.entry_id not in refused)
        return sent


#: SendMessageBatch takes 10 entries and 1 MiB in all (AWS SendMessageBatch reference).
_BATCH_BYTES = 1_048_576


def _chunks(messages: list[OutgoingMessage]) -> list[list[OutgoingMessage]]:
    return list(bounded(messages, count=10, size=_BATCH_BYTES, size_of=_weight))


def _weight(message: OutgoingMessage) -> int:
    return message.size + sum(len(k) + len(str(v)) + 6 for k, v in message.attributes.items())

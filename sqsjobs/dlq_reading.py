"""Reading a whole DLQ with SQS, which has no "read without taking".

Every message read is received, so it is hidden from everyone else for as long as the reader keeps
it so: `HeldMessages` extends the hide of everything it holds while the caller is still reading or
acting (a DLQ of thousands, S3 bodies, a slow retry outlast any fixed hide), and gives back what the
caller did not delete. A read that cannot vouch it saw every message once while holding all of them
says why in `incomplete`: the failed verbs then report it and exit non-zero rather than claim a
flush or a retry of "everything" that missed some (or that a second operator may act on too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("sqsjobs.failed")

#: Empty receives in a row while SQS still counts visible messages before a read gives up (a short poll
#: samples only some SQS servers; a queue at its in-flight limit returns nothing at all).
_MAX_EMPTY_RECEIVES = 10
#: Extend the hide once a third of it has passed: two more chances before it would lapse.
_EXTEND_EVERY = 1 / 3
#: SQS's longest visibility timeout.
_MAX_HIDE_S = 43_200


class HeldMessages:
    """The messages one command read from its DLQs, hidden until it deletes or gives them back."""

    def __init__(self, sqs: Any, hide_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._sqs = sqs
        #: The hide asked for now: it starts at `hide_s` and grows with the read (see `keep_hidden`).
        self.hide_s = hide_s
        self._clock = clock
        self._started = self._extended = clock()
        #: DLQ URL -> message id -> the receipt handle that holds it.
        self.held: dict[str, dict[str, str]] = {}
        #: Why this read may have missed a message or lost its hold on one (empty: it did not).
        self.incomplete: list[str] = []
        self._seen: dict[str, set[str]] = {}

    def read(self, dlq_url: str) -> Iterator[dict[str, Any]]:
        """Each message of the DLQ once (as `receive_message` returns it), held from then on."""
        held = self.held.setdefault(dlq_url, {})
        seen = self._seen.setdefault(dlq_url, set())
        empty = stale = 0
        while True:
            self.keep_hidden()
            response = self._sqs.receive_message(
                QueueUrl=dlq_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=self.hide_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                MessageAttributeNames=["All"],
            )
            got = response.get("Messages", [])
            if not got:
                if not self._visible(dlq_url):
                    self._check_others(dlq_url)
                    return
                empty += 1
                if empty >= _MAX_EMPTY_RECEIVES:
                    self.incomplete.append(
                        f"{dlq_url}: SQS returned no message {empty} times while it still counted some visible "
                        "(another reader holds them, or the queue is at its in-flight limit)"
                    )
                    return
                continue
            empty = 0
            fresh = [item for item in got if item["MessageId"] not in seen]
            stale = 0 if fresh else stale + 1
            if stale >= _MAX_EMPTY_RECEIVES:
                return  # only messages read before keep coming back: their hold keeps lapsing (said above)
            for item in got:
                held[item["MessageId"]] = item["ReceiptHandle"]
                if item["MessageId"] in seen:
                    # Read before and visible again: the hold lapsed, and someone else may have taken it.
                    self._lapsed(dlq_url, 1)
                    continue
                seen.add(item["MessageId"])
                yield item

    def keep_hidden(self) -> None:
        """Extend the hide of everything held, when a third of it has passed since the last time.

        Each extension costs a call per 10 messages held, so the hide grows with the read (to twice
        as long as it has lasted, at most SQS's 12 h): a read of thousands extends a few times, not
        every few seconds. A command that dies leaves its messages hidden at most that long.
        """
        now = self._clock()
        if now - self._extended < self.hide_s * _EXTEND_EVERY:
            return
        self._extended = now
        self.hide_s = min(_MAX_HIDE_S, max(self.hide_s, round(2 * (now - self._started))))
        for dlq_url, held in self.held.items():
            lost = self._change(dlq_url, list(held.items()), self.hide_s)
            for message_id in lost:
                held.pop(message_id, None)
            if lost:
                self._lapsed(dlq_url, len(lost))

    def deleted(self, dlq_url: str, message_id: str) -> None:
        """The caller deleted this message: nothing to hide or give back."""
        self.held.get(dlq_url, {}).pop(message_id, None)

    def receipt(self, dlq_url: str, message_id: str) -> str | None:
        """The receipt handle that holds the message now (it changes if the message was seen again)."""
        return self.held.get(dlq_url, {}).get(message_id)

    def give_back(self, dlq_url: str | None = None) -> None:
        """Make what is still held visible again (of one DLQ, or all)."""
        for url in [dlq_url] if dlq_url is not None else list(self.held):
            held = self.held.pop(url, {})
            self._change(url, list(held.items()), 0)

    def _change(self, dlq_url: str, items: list[tuple[str, str]], hide_s: int) -> set[str]:
        """Set the hide of these messages; the ids whose hold was lost (the receipt no longer holds them)."""
        lost: set[str] = set()
        for start in range(0, len(items), 10):
            chunk = items[start : start + 10]
            try:
                response = self._sqs.change_message_visibility_batch(
                    QueueUrl=dlq_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": receipt, "VisibilityTimeout": hide_s}
                        for i, (_, receipt) in enumerate(chunk)
                    ],
                )
            except Exception:
                log.warning("could not change the visibility of %d DLQ message(s) of %s", len(chunk), dlq_url)
                lost.update(message_id for message_id, _ in chunk)
                continue
            lost.update(chunk[int(failure["Id"])][0] for failure in response.get("Failed", []))
        return lost

    def _lapsed(self, dlq_url: str, count: int) -> None:
        note = (
            f"{dlq_url}: the hold on {count} message(s) lapsed while reading (hide {self.hide_s} s); "
            "another reader may have seen or acted on them"
        )
        self.incomplete.append(note)

    def _visible(self, dlq_url: str) -> int:
        attrs = self._sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])

    def _check_others(self, dlq_url: str) -> None:
        """Nothing visible is left: but messages someone else holds (another operator's command, anyone
        with ReceiveMessage) or delayed ones were not read. SQS counts them; a read that missed them
        says so (the counts are approximate: a false alarm costs an exit 1, a miss a silent partial flush)."""
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=dlq_url,
            AttributeNames=["ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]
        hidden = int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
        delayed = int(attrs.get("ApproximateNumberOfMessagesDelayed", 0))
        others = hidden + delayed - len(self.held.get(dlq_url, {}))
        if others > 0:
            self.incomplete.append(
                f"{dlq_url}: about {others} message(s) were hidden by another reader or delayed, and were not read"
            )

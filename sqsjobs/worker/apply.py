"""Applying the runner's decisions in the worker, in the one order that keeps them true.

1. The message leaves the heartbeat (and any heartbeat call already carrying it lands first), so
   no extension can overwrite the decision.
2. The settler makes the decision true on SQS (a release, a postponement, or nothing yet).
3. A message that leaves its queue goes to the deleter.
4. Its FIFO lane moves on; if it stays in its queue, the rest of its lane is handed back unstarted.

Every message handed back without running (a stop, `--max-jobs`, a FIFO lane held back) goes
through the settler's `give_back`, so it spends no try (docs/attempts.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..connections.base import ReceivedMessage
from ..decisions import Decision
from ..settling import Settler
from .deleter import Deleter
from .heartbeat import Heartbeat
from .lanes import Lanes

log = logging.getLogger("sqsjobs.worker")


class Applier:
    """Shared by the thread and asyncio job loops; safe across threads."""

    def __init__(
        self,
        settler: Settler,
        heartbeat: Heartbeat,
        deleter: Deleter,
        lanes: Lanes,
        after_job: Callable[[], None] = lambda: None,
    ) -> None:
        self._settler = settler
        self._heartbeat = heartbeat
        self._deleter = deleter
        self._lanes = lanes
        self._after_job = after_job

    def done(self, message: ReceivedMessage, decision: Decision) -> None:
        """The runner decided `message`: apply it, then let its lane go on."""
        self._heartbeat.untrack([message])
        self._apply(message, decision)

    def done_now(self, message: ReceivedMessage, decision: Decision) -> bool:
        """`done` without waiting (the asyncio loop must not): False, and nothing applied, while a
        heartbeat call carrying `message` is under way; the message is no longer extended meanwhile."""
        if not self._heartbeat.untrack([message], wait=False):
            return False
        self._apply(message, decision)
        return True

    def _apply(self, message: ReceivedMessage, decision: Decision) -> None:
        """Steps 2-4, for a message the heartbeat no longer carries."""
        left_queue = False
        try:
            settled = self._settler.apply(message, decision)
        except Exception:
            log.exception("could not apply the decision for %s; it returns after its visibility", message.message_id)
        else:
            if settled.delete:
                self._deleter.add(message, settled.drop_payload)
                left_queue = True
        self._finish(message, left_queue)

    def crashed(self, message: ReceivedMessage) -> None:
        """The runner raised (our bug, or an interpreter exit): the message returns after its visibility
        timeout, and the rest of its lane must not overtake it."""
        self._heartbeat.untrack([message])
        self._finish(message, left_queue=False)

    def _finish(self, message: ReceivedMessage, left_queue: bool) -> None:
        rest = self._lanes.finish(message, left_queue)
        if rest:
            self.give_back(rest, "an earlier message of their FIFO group comes back first")
        try:
            self._after_job()
        except Exception:  # the message is settled: a caller must never settle it again as a crash
            log.exception("the worker's check after a job failed")

    def give_back(self, messages: list[ReceivedMessage], reason: str) -> None:
        """Messages that never started: back to their queue at once, without spending a try."""
        if not messages:
            return
        self._heartbeat.untrack(messages)
        try:
            replaced = self._settler.give_back(messages, 0, reason)
        except Exception:
            log.exception("could not hand back %d message(s); they return after their visibility", len(messages))
            return
        for message in replaced:
            self._deleter.add(message)

"""The receiver: long-polls the queues in strict priority order while there is room for more work.

Every receive asks for the visibility the heartbeat counts on (read once at start-up): the queue's
own setting may be changed while the worker runs, and a message hidden for less than the worker
believes reappears while its job runs, and runs twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..connections.base import Connection
from .apply import Applier
from .control import Control
from .heartbeat import Heartbeat
from .lanes import Lanes
from .options import WorkerOptions

log = logging.getLogger("sqsjobs.worker")

#: Longest the receive loop waits for a full batch of free slots while jobs are running.
_BATCH_LINGER_S = 0.05


class Receiver:
    """Runs on the worker's main thread, so a signal is acted on when a long poll returns."""

    def __init__(
        self,
        connection: Connection,
        options: WorkerOptions,
        visibility: dict[str, int],
        control: Control,
        lanes: Lanes,
        heartbeat: Heartbeat,
        applier: Applier,
        check_limits: Callable[[], None],
    ) -> None:
        self._connection = connection
        self._options = options
        self._visibility = visibility
        self._control = control
        self._lanes = lanes
        self._heartbeat = heartbeat
        self._applier = applier
        self._check_limits = check_limits

    def run(self) -> None:
        """Receive until the worker stops (a signal, a limit, empty queues, a wedged job)."""
        opts = self._options
        queues = opts.queues
        single = len(queues) == 1
        # Never below 1 s: an empty queue must cost one call per second, not a busy loop.
        long_wait = max(1, min(20, round(opts.sleep if single else opts.sleep / len(queues))))
        errors = 0
        empty_checks = 0
        while not self._control.stopping:
            wanted = self._lanes.room(_BATCH_LINGER_S)
            if wanted == 0 or self._control.stopping:
                break
            self._check_limits()
            if self._control.stopping:
                break
            if self._control.paused.issuperset(queues):
                self._control.wait(1.0)  # every queue paused: look again soon, receive nothing
                continue
            try:
                # With several queues, one quick look at each in order first: a message on a higher
                # queue must not wait behind a long poll on a lower one.
                got = False if single else self.receive(wanted, 0)
                if not got:
                    got = self.receive(wanted, long_wait)
                errors = 0
            except Exception:
                errors += 1
                log.exception("receive failed (%d in a row); trying again", errors)
                self._control.wait(min(30.0, 0.5 * 2**errors))
                continue
            if got or not self._lanes.idle():
                empty_checks = 0
            elif opts.once:
                self._control.stop("no job to run")
            elif opts.stop_when_empty and self._queues_empty():
                # Queue counts are approximate (and not one atomic snapshot even on moto):
                # only two empty looks in a row, one long poll apart, end the worker.
                empty_checks += 1
                if empty_checks >= 2:
                    self._control.stop("queues empty")

    def receive(self, wanted: int, wait: int) -> bool:
        """Receive from the first queue (in priority order) that has messages, and hold them."""
        paused = self._control.paused
        for queue in self._options.queues:
            if self._control.stopping:
                return False
            if queue in paused:
                continue
            visibility = self._visibility[queue]
            messages = self._connection.receive(queue, wanted, wait, visibility_timeout=visibility)
            if messages and queue in self._control.paused:
                # Paused during the long poll: back at once, unstarted, no try spent.
                self._heartbeat.track(messages, visibility)
                self._applier.give_back(messages, "the queue is paused")
                return False
            if messages:
                self._heartbeat.track(messages, visibility)
                if not self._lanes.add(messages):
                    self._applier.give_back(messages, "the worker is stopping")
                    return False
                return True
        return False

    def _queues_empty(self) -> bool:
        return all(not any(self._connection.counts(queue).values()) for queue in self._options.queues)

"""FIFO lanes: what a worker holds, and which held message may start next.

One receive from a FIFO queue can return several messages of one group, in the group's order.
Run on separate threads they would finish in any order, so each group is a lane: at most one of
its messages runs at a time, in the order received. When one of them does not leave the queue
(released, postponed, or the runner crashed), the rest of its lane must not overtake it, so they
are handed back unstarted (AWS Lambda Powertools' SqsFifoPartialProcessor does the same).
A standard queue's messages (no group) are each a lane of their own.

Also the worker's capacity: `concurrency` running plus `prefetch` held, and how many to ask for.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable

from ..connections.base import ReceivedMessage
from .control import Control


class Lanes:
    """Held and running messages; thread-safe. Receivers call `room`/`add`, job loops `take`/`finish`."""

    #: Longest a waiting job loop goes without looking again when no ticket comes (a paused queue that
    #: resumed puts none); a class attribute so tests can raise it and see every wake-up come by ticket.
    look_again_s = 0.5

    def __init__(
        self,
        control: Control,
        concurrency: int,
        prefetch: int,
        max_starts: int | None = None,
    ) -> None:
        self._control = control
        self._concurrency = concurrency
        self._capacity = concurrency + prefetch
        self._max_starts = max_starts
        # Re-entrant: a signal handler on the main thread wakes waiters through `wake`.
        self._lock = lock = threading.RLock()
        # Only the receiver waits on `_room` (a slot freed). Job loops wait for a ticket instead of on a
        # condition of this lock: a notify is made holding the lock, so every loop it wakes blocks again
        # on the lock before it can look, and a receive of ten woke ten loops into that queue (3.7
        # voluntary switches a job at --concurrency 10). A ticket is put after the lock is let go, and
        # SimpleQueue wakes one waiting getter at a time (1.35 a job; docs/performance.md, "Job loops woken").
        self._room = threading.Condition(lock)
        self._tickets: queue.SimpleQueue[None] = queue.SimpleQueue()
        #: Job loops waiting for a ticket, and tickets put and not yet taken: at most one ticket per
        #: waiting loop, so tickets never pile up while every loop is busy.
        self._sleepers = 0
        self._tickets_out = 0
        self._held: collections.deque[ReceivedMessage] = collections.deque()
        self._running: set[str] = set()
        self._running_groups: set[str] = set()
        #: How many wanted messages wake the waiting receiver (None: it is not waiting). A finish
        #: that frees less room wakes nobody: one needless thread switch per job is most of a short
        #: job's overhead besides its SQS calls.
        self._need: int | None = None
        self._closed = False
        #: Told, without a ticket, whenever messages may start or taking must end (see `listen`).
        self._listener: Callable[[], None] | None = None
        self.started = 0
        self.finished = 0
        control.on_stop(self.wake)

    # -- the receiver's side -------------------------------------------------------------
    def room(self, linger_s: float) -> int:
        """Block until messages should be received; how many (at most 10), or 0 once stopping.

        Asking only when half of the capacity is free keeps receives full (10 per call) under load
        without holding more than the worker can start; while jobs run, it lingers `linger_s` for
        more slots so short jobs fill one receive instead of two half-empty ones.
        """
        with self._room:
            try:
                self._need = 1
                while not self._halted() and (wanted := self._wanted()) == 0:
                    self._room.wait(0.5)
                full = self._need = min(10, self._capacity)
                until = time.monotonic() + linger_s
                while not self._halted() and wanted < full and (self._running or self._held):
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._room.wait(left)
                    wanted = max(wanted, self._wanted())
                return 0 if self._halted() else wanted
            finally:
                self._need = None

    def _wanted(self) -> int:
        free = self._capacity - len(self._running) - len(self._held)
        if self._max_starts is not None:  # `--once`, `--max-jobs`: never receive what will not start
            free = min(free, self._max_starts - self.started - len(self._held))
        if free <= 0:
            return 0
        if not self._running and not self._held:
            return min(10, free)
        return min(10, free) if free >= max(1, min(10, self._capacity) // 2) else 0

    def add(self, messages: list[ReceivedMessage]) -> bool:
        """Hold received messages in their order; False (nothing held) once the worker stops."""
        with self._lock:
            if self._halted():
                return False
            self._held.extend(messages)
            wake = self._tickets_for(len(messages))
        self._hand_out(wake)
        self._tell()
        return True

    # -- the job loops' side -------------------------------------------------------------
    def listen(self, listener: Callable[[], None] | None) -> None:
        """Have `listener` called (on the caller's thread, outside the lock but for a signal handler that
        interrupted a holder of it) when a receive held messages or the worker stops. For a taker that never
        blocks in `take` (the asyncio worker's loop), which then looks with `take(block=False)` and `done`.
        A finish tells nobody (its finisher takes the next message for its slot), nor does a resumed queue:
        such a taker looks again every `look_again_s` too. It must not block. None: no more calls."""
        self._listener = listener

    def done(self) -> bool:
        """Whether `take` can return nothing any more (stopping, or `max_starts` were started)."""
        with self._lock:
            return self._ended()

    def _ended(self) -> bool:
        return self._halted() or (self._max_starts is not None and self.started >= self._max_starts)

    def _tell(self) -> None:
        if (listener := self._listener) is not None:
            listener()

    def take(self, block: bool = True) -> ReceivedMessage | None:
        """Block until a held message may start; None once stopping or `max_starts` were started
        (or, without `block`, when none may start now)."""
        waited: bool | None = None  # counted as waiting; True once a ticket was taken
        try:
            while True:
                with self._lock:
                    if waited is not None:
                        self._sleepers -= 1
                        self._tickets_out -= waited
                        waited = None
                    if self._ended():
                        return None
                    message = self._startable() if len(self._running) < self._concurrency else None
                    if message is not None:
                        self._held.remove(message)
                        self._running.add(message.receipt_handle)
                        if message.group_id is not None:
                            self._running_groups.add(_lane(message))
                        self.started += 1
                        return message
                    if not block:
                        return None
                    self._sleepers += 1
                    waited = False
                try:  # a ticket says "look again"; the timeout covers what puts none (a queue unpaused)
                    self._tickets.get(timeout=self.look_again_s)
                    waited = True
                except queue.Empty:
                    pass
        finally:
            if waited is not None:  # left while counted as waiting (an interrupt): counted no more
                with self._lock:
                    self._sleepers -= 1
                    self._tickets_out -= waited

    def _tickets_for(self, wanted: int) -> int:
        """How many waiting job loops to wake for `wanted` messages that may start (counted as put)."""
        wake = max(0, min(wanted, self._sleepers - self._tickets_out))
        self._tickets_out += wake
        return wake

    def _hand_out(self, tickets: int) -> None:
        """Wake that many job loops; called after the lock is let go, so none of them waits for it."""
        for _ in range(tickets):
            self._tickets.put(None)

    def _startable(self) -> ReceivedMessage | None:
        paused = self._control.paused  # held when its queue was paused a moment ago: kept, not started
        for message in self._held:
            if message.queue in paused:
                continue
            if message.group_id is None or _lane(message) not in self._running_groups:
                return message
        return None

    def finish(self, message: ReceivedMessage, left_queue: bool) -> list[ReceivedMessage]:
        """`message` is no longer running. Unless it left its queue (`left_queue`: deleted, or replaced
        by a copy), the rest of its FIFO lane is taken out and returned, to be handed back unstarted."""
        with self._lock:
            self._running.discard(message.receipt_handle)
            self.finished += 1
            rest: list[ReceivedMessage] = []
            if message.group_id is not None:
                lane = _lane(message)
                self._running_groups.discard(lane)
                if not left_queue:
                    rest = [m for m in self._held if m.group_id is not None and _lane(m) == lane]
                    for held in rest:
                        self._held.remove(held)
            if self._need is not None and (self._wanted() >= self._need or not (self._running or self._held)):
                self._room.notify()
            wake = self._tickets_for(1) if self._held else 0  # a finish frees one slot: one message at most
        self._hand_out(wake)
        return rest

    def take_held(self, queues: frozenset[str]) -> list[ReceivedMessage]:
        """Held (not started) messages of these queues, taken out to be handed back (a pause)."""
        with self._lock:
            out = [m for m in self._held if m.queue in queues]
            for message in out:
                self._held.remove(message)
            if out:
                self._room.notify_all()
            return out

    # -- stopping ------------------------------------------------------------------------
    def close(self) -> list[ReceivedMessage]:
        """Start nothing more; return every held message (to be handed back)."""
        with self._lock:
            self._closed = True
            held = list(self._held)
            self._held.clear()
            self._room.notify_all()
            wake = self._tickets_for(self._sleepers)
        self._hand_out(wake)
        self._tell()
        return held

    def wake(self) -> None:
        with self._lock:
            self._room.notify_all()
            wake = self._tickets_for(self._sleepers)
        self._hand_out(wake)
        self._tell()

    def _halted(self) -> bool:
        return self._closed or self._control.stopping

    # -- what the worker reads -----------------------------------------------------------
    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def idle(self) -> bool:
        with self._lock:
            return not self._running and not self._held


def _lane(message: ReceivedMessage) -> str:
    # A group is per queue: two FIFO queues may both have a group "orders".
    return f"{message.queue}\0{message.group_id}"

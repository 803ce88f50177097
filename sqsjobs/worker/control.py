"""The worker's stop switch and exit code, at the bottom so every part can pull it.

The receiver, the job loops, the heartbeat and the watchdog all need to stop the worker or see
that it is stopping; holding that here (not on the Worker) keeps the Worker the only module that
knows all the others, and none of them knows the Worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

EXIT_OK = 0
EXIT_WEDGED = 1
#: A configuration error found while working (as `sqsjobs` reports one at start: docs/cli.md).
EXIT_CONFIG = 2
EXIT_MEMORY = 12


class Control:
    """Set once to stop; the first reason and the first non-zero exit code win."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self.reason = ""
        self.exit_code = EXIT_OK
        #: Queues an operator paused (`sqsjobs pause`): the receiver takes nothing from them.
        self.paused: frozenset[str] = frozenset()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def on_stop(self, listener: Callable[[], None]) -> None:
        """Call `listener` when the worker stops (parts blocked on their own conditions wake up)."""
        with self._lock:
            self._listeners.append(listener)

    def stop(self, reason: str, exit_code: int | None = None) -> None:
        """Safe from any thread or a signal handler, so listeners may only take re-entrant locks
        (the handler runs on the main thread, which may hold one of them at that moment)."""
        if exit_code is not None and exit_code != EXIT_OK and self.exit_code == EXIT_OK:
            self.exit_code = exit_code
        if not self._stopping.is_set():
            self.reason = reason
            self._stopping.set()
        for listener in list(self._listeners):
            listener()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking at once on a stop; True when stopping."""
        return self._stopping.wait(seconds)

"""What a running worker tells the outside, and what it hears back.

- **Metrics** (SQSJOBS_METRICS) are collected by the app's `JobMetrics` listener on every job thread
  and flushed here every SQSJOBS_METRICS_INTERVAL seconds and once more when the worker stops,
  together with one `worker_alive` per queue: an alarm on its absence is "nothing consumes this queue".
- **Beats and controls** (SQSJOBS_WORKER_BEAT seconds, sqsjobs.workers): a beat in the table for
  `sqsjobs workers`, and a read of `restart` (finish running jobs, exit 0 for the supervisor to start
  the new code) and `pause` (take nothing from a paused queue) on the same tick.
- **Events**: `worker_starting` and `worker_stopping` to the app's listeners.

A table that is missing or refuses the calls turns beats and controls off for this worker with one
warning: they are an operator's convenience, never a reason to stop running jobs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from .. import metric_snapshots, workers
from .._version import __version__
from ..app import App
from ..events import QueueEvent
from .control import Control

log = logging.getLogger("sqsjobs.worker")

#: A beat outlives this many missed ticks before the worker drops from `sqsjobs workers`.
_BEAT_LIFETIME_TICKS = 6
#: Seconds between looks at whether a snapshot minute has ended (a write happens once per minute).
_SNAPSHOT_TICK_S = 15.0


class Reporter:
    def __init__(
        self,
        app: App,
        queues: list[str],
        control: Control,
        processed: Callable[[], int],
        running: Callable[[], list[str]],
        paused: Callable[[frozenset[str]], None] = lambda queues: None,
    ) -> None:
        self.app = app
        self.queues = list(queues)
        self.control = control
        self._processed = processed
        self._running = running
        #: Called with the queues newly paused: the worker hands back what it holds of them, unstarted.
        self._on_paused = paused
        #: Beats and control reads that failed in a row (a passing DynamoDB error is retried next tick).
        self._failures = 0
        self.worker_id = f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started_at = app.clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beats = app.settings.worker_beat > 0
        self._next_flush = 0.0
        #: The restart request standing when this worker started (Laravel's way: a request is a new
        #: value, so no clock has to agree with another; a worker never restarts for an old one).
        self._restart_seen: float | None = None
        self._first_read = True
        #: The dashboard's per-minute counters (SQSJOBS_SNAPSHOTS), flushed once a minute on this thread.
        self._snapshots = metric_snapshots.attach(app.events, app.settings, app.clock, app.connection.name)

    def _detail(self, **more: object) -> dict[str, object]:
        return {"queues": self.queues, "host": socket.gethostname(), "pid": os.getpid(), **more}

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.app.events.emit(QueueEvent("worker_starting", ",".join(self.queues), self._detail()))
        metrics = self.app.start_metrics()
        if metrics is not None:
            metrics.alive(self.queues)
            metrics.flush()  # `worker_alive` at once: a fresh worker clears a "no worker" alarm without waiting
            self._next_flush = time.monotonic() + self.app.settings.metrics_interval
        if self._beats:
            self._tick_controls()  # a paused queue is not received from, even once
        if metrics is not None or self._beats or self._snapshots is not None:
            self._thread = threading.Thread(target=self._run, name="sqsjobs-reporter", daemon=True)
            self._thread.start()

    def stop(self, reason: str, processed: int, exit_code: int) -> None:
        """After the last job settled: the last metrics, the last beat, then `worker_stopping`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        metrics = self.app.metrics
        if metrics is not None:
            metrics.flush()  # what the last jobs did; no `worker_alive`: this worker is gone
        if self._snapshots is not None:
            self._snapshots.flush()
        if self._beats:
            try:
                workers.gone(self.app.store, self.worker_id)
            except Exception:
                log.debug("could not remove this worker's beat; it expires by itself", exc_info=True)
        self.app.events.emit(
            QueueEvent(
                "worker_stopping",
                ",".join(self.queues),
                self._detail(reason=reason, processed=processed, exit_code=exit_code),
            )
        )

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        settings = self.app.settings
        snapshot_tick = _SNAPSHOT_TICK_S if self._snapshots is not None else 0
        tick = min(
            x for x in (settings.worker_beat if self._beats else 0, settings.metrics_interval, snapshot_tick) if x > 0
        )
        while not self._stop.wait(tick):
            if self._beats:
                self._tick_controls()
            if self._snapshots is not None:
                self._snapshots.tick()  # writes a minute once it has ended
            metrics = self.app.metrics
            if metrics is not None and time.monotonic() >= self._next_flush:
                self._next_flush = time.monotonic() + settings.metrics_interval
                metrics.alive(self.queues)
                metrics.flush()

    def _tick_controls(self) -> None:
        try:
            self._beat_and_read()
        except Exception as exc:
            self._failures += 1
            if self._first_read and _missing_table(exc):
                # No table at all (never provisioned): nothing to beat into; say so once, carry on.
                self._beats = False
                log.warning(
                    "worker beats, `sqsjobs restart` and `sqsjobs pause` are off for this worker: the table %r "
                    "does not exist (%s). Run `sqsjobs provision` to create it, or set SQSJOBS_WORKER_BEAT=0",
                    self.app.settings.table,
                    type(exc).__name__,
                )
            elif self._failures in (1, 10) or self._failures % 100 == 0:
                # A throttle or a blip: the last pause and restart state stands, the next tick tries again.
                log.warning(
                    "could not beat or read restart/pause from the table %r (%d time(s) in a row: %s: %s); "
                    "trying again",
                    self.app.settings.table,
                    self._failures,
                    type(exc).__name__,
                    exc,
                )
            return
        self._failures = 0

    def _beat_and_read(self) -> None:
        store, now = self.app.store, self.app.clock()
        controls = workers.read_controls(store)
        paused = frozenset(q for q in self.queues if q in controls.paused)
        if paused != self.control.paused:
            resumed = self.control.paused - paused
            newly = paused - self.control.paused
            self.control.paused = paused
            if newly:
                log.info("paused by an operator: %s (running jobs finish)", ",".join(sorted(newly)))
                self._on_paused(newly)
            if resumed:
                log.info("continued by an operator: %s", ",".join(sorted(resumed)))
        if self._first_read:
            self._first_read, self._restart_seen = False, controls.restart_at
            if controls.restart_at is not None and controls.restart_at > self.started_at:
                # Asked for after this worker started (its first reads failed meanwhile): honoured.
                log.info("restart requested: finishing running jobs, then exiting 0 for the supervisor to restart")
                self.control.stop("restart requested")
        elif controls.restart_at != self._restart_seen and controls.restart_at is not None:
            self._restart_seen = controls.restart_at
            log.info("restart requested: finishing running jobs, then exiting 0 for the supervisor to restart")
            self.control.stop("restart requested")
        info = workers.WorkerInfo(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            version=__version__,
            started_at=self.started_at,
            last_seen=now,
            jobs_done=self._processed(),
            current=self._running(),
            status="stopping" if self.control.stopping else ("paused" if paused else "running"),
            paused=sorted(paused),
        )
        workers.beat(store, info, self.app.settings.worker_beat * _BEAT_LIFETIME_TICKS)


def _missing_table(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return bool(code == "ResourceNotFoundException")

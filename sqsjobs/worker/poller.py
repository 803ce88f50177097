"""The poller: receive in priority order, run on threads, apply the runner's decisions.

It only moves messages. What a message *means* is decided by the runner core;
this module receives, hands out work, deletes in batches, heartbeats
visibility, enforces timeouts and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import threading
import time
from types import FrameType

from ..app import App
from ..connections.base import ReceivedMessage
from ..decisions import Decision, Release, deletes_source, drops_payload
from ..errors import ConfigurationError
from ..job import Job
from .housekeeping import Housekeeper
from .options import WorkerOptions
from .timeouts import TimeoutEnforcer

log = logging.getLogger("sqsjobs.worker")

EXIT_OK = 0
EXIT_WEDGED = 1
EXIT_MEMORY = 12
#: Longest the receive loop waits for a full batch of free slots while jobs are running.
_BATCH_LINGER_S = 0.05


class Worker:
    """Runs jobs from one or more queues until told to stop or a limit is reached."""

    def __init__(self, app: App, options: WorkerOptions | None = None) -> None:
        self.app = app
        self.options = options or WorkerOptions(queues=[app.settings.default_queue])
        self.connection = app.connection
        self.processed = 0
        self.exit_code = EXIT_OK
        self._stop = threading.Event()
        lock = threading.RLock()
        # Two conditions on one lock: only the receive loop waits on `_cond` (a slot freed),
        # only job threads wait on `_work` (a message to start), so no wake-up is wasted.
        self._cond = threading.Condition(lock)
        self._work = threading.Condition(lock)
        self._held: collections.deque[ReceivedMessage] = collections.deque()
        self._running = 0
        self._enforcer = TimeoutEnforcer()
        self._housekeeper = Housekeeper(self)
        self._threads: list[threading.Thread] = []
        self._started = time.monotonic()
        self.stop_reason = ""

    # -- lifecycle ---------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        """Work until stopped; return the process exit code (0, 1 wedged, 12 memory)."""
        self._check_queues()
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        log.info(
            "worker started: queues=%s concurrency=%d prefetch=%d mode=%s",
            ",".join(self.options.queues),
            self.options.concurrency,
            self.options.prefetch,
            "asyncio" if self.options.event_loop else "threads",
        )
        self._housekeeper.start()
        if self.options.event_loop:
            from .event_loop import run_event_loop

            self._threads.append(
                threading.Thread(target=run_event_loop, args=(self,), name="sqsjobs-loop", daemon=True)
            )
        else:
            self._threads.extend(
                threading.Thread(target=self._job_loop, name=f"sqsjobs-job-{index}", daemon=True)
                for index in range(self.options.concurrency)
            )
        for thread in self._threads:
            thread.start()
        try:
            self._receive_loop()
        finally:
            self._shutdown()
        log.info(
            "worker stopped (%s) after %d jobs, exit %d",
            self.stop_reason or "done",
            self.processed,
            self.exit_code,
        )
        return self.exit_code

    def stop(self, reason: str = "stop requested", exit_code: int | None = None) -> None:
        """Stop taking work; running jobs finish. Safe from any thread or a signal handler."""
        if exit_code is not None and self.exit_code == EXIT_OK:
            self.exit_code = exit_code
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()
        with self._cond:
            self._cond.notify_all()
            self._work.notify_all()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stop.is_set():
            log.warning("%s again: still finishing %d running job(s)", name, self._running)
            return
        log.info("%s received: finishing %d running job(s), returning held messages", name, self._running)
        self.stop(name)

    def _check_queues(self) -> None:
        """Resolve every queue once, and refuse to start where failed jobs would be lost."""
        for queue in self.options.queues:
            info = self.connection.queue_info(queue)
            if info.dlq_url is None and self.connection.name == "sqs":
                raise ConfigurationError(
                    f"queue {queue!r} has no dead-letter queue, so failed jobs would be lost; "
                    "run `sqsjobs provision` or give it a RedrivePolicy (see `sqsjobs check`)"
                )

    # -- receiving ---------------------------------------------------------------------
    def _free_slots(self) -> int:
        capacity = self.options.concurrency + self.options.prefetch
        return capacity - self._running - len(self._held)

    def _wanted(self) -> int:
        """How many messages to ask for now, or 0 to wait for running jobs first.

        Asking only when half the capacity is free keeps receives full (10 per call)
        under load without ever holding more than the worker can start.
        """
        free = self._free_slots()
        capacity = self.options.concurrency + self.options.prefetch
        if free <= 0:
            return 0
        if self._running + len(self._held) == 0 or free >= max(1, min(10, capacity) // 2):
            return min(10, free)
        return 0

    def _receive_loop(self) -> None:
        opts = self.options
        queues = opts.queues
        single = len(queues) == 1
        # Never below 1 s: an empty queue must cost one call per second, not a busy loop.
        long_wait = max(1, min(20, round(opts.sleep if single else opts.sleep / len(queues))))
        errors = 0
        empty_checks = 0
        while not self._stop.is_set():
            with self._cond:
                while not self._stop.is_set() and (wanted := self._wanted()) == 0:
                    self._cond.wait(0.5)
                # Jobs still running and less than a full batch free: wait a moment for more
                # slots, so short jobs fill one receive instead of two half-empty ones.
                full = min(10, self.options.concurrency + self.options.prefetch)
                linger_until = time.monotonic() + _BATCH_LINGER_S
                while not self._stop.is_set() and wanted < full and (self._running or self._held):
                    left = linger_until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                    wanted = max(wanted, self._wanted())
            if self._stop.is_set():
                break
            self._check_limits()
            if self._stop.is_set():
                break
            try:
                got = False
                if not single:
                    got = self._receive_first(queues, wanted, 0)
                if not got:
                    got = self._receive_first(queues, wanted, long_wait)
                errors = 0
            except Exception:
                errors += 1
                log.exception("receive failed (%d in a row); trying again", errors)
                self._stop.wait(min(30.0, 0.5 * 2**errors))
                continue
            if got or not self._idle():
                empty_checks = 0
            elif opts.once:
                self.stop("no job to run")
            elif opts.stop_when_empty and self._queues_empty():
                # Queue counts are approximate (and not one atomic snapshot even on moto):
                # only two empty looks in a row, one long poll apart, end the worker.
                empty_checks += 1
                if empty_checks >= 2:
                    self.stop("queues empty")

    def _receive_first(self, queues: list[str], wanted: int, wait: int) -> bool:
        """Receive from the first queue (in priority order) that has messages."""
        for queue in queues:
            if self._stop.is_set():
                return False
            messages = self.connection.receive(queue, wanted, wait)
            if messages:
                if self._stop.is_set():
                    self._return_to_queue(messages)
                    return False
                self._housekeeper.track(messages)
                with self._cond:
                    self._held.extend(messages)
                    self._work.notify(len(messages))
                return True
        return False

    def _idle(self) -> bool:
        with self._cond:
            return self._running == 0 and not self._held

    def _queues_empty(self) -> bool:
        for queue in self.options.queues:
            counts = self.connection.counts(queue)
            if any(counts.values()):
                return False
        return True

    def _check_limits(self) -> None:
        opts = self.options
        if opts.max_jobs is not None and self.processed >= opts.max_jobs:
            self.stop("max jobs reached")
        elif opts.max_time is not None and time.monotonic() - self._started >= opts.max_time:
            self.stop("max time reached")

    # -- running -----------------------------------------------------------------------
    def _take(self) -> ReceivedMessage | None:
        """Block until a held message may start; None once the worker is stopping."""
        with self._cond:
            while not self._stop.is_set() and (not self._held or self._running >= self.options.concurrency):
                self._work.wait(0.5)
            if self._stop.is_set() or (
                self.options.max_jobs is not None and self.processed + self._running >= self.options.max_jobs
            ):
                return None
            self._running += 1
            return self._held.popleft()

    def _job_loop(self) -> None:
        while (message := self._take()) is not None:
            self._housekeeper.claim(message)
            try:
                decision = self.app.runner.process(message, self.connection, self._guard)
            except BaseException:
                # The runner never raises for a job's own errors; this is our bug or an
                # interpreter exit. Leave the message to its visibility timeout.
                log.exception("runner crashed on message %s; it will be redelivered", message.message_id)
                self._housekeeper.untrack([message])
                self._finish()
                continue
            self._done(message, decision)

    def _done(self, message: ReceivedMessage, decision: Decision) -> None:
        self._housekeeper.untrack([message])
        self._settle(message, decision)
        self._finish()

    def _finish(self) -> None:
        with self._cond:
            self._running -= 1
            self.processed += 1
            self._cond.notify()
            if self._held:
                self._work.notify()
        if self.options.memory_mb is not None and _rss_mb() >= self.options.memory_mb:
            self.stop(f"memory above {self.options.memory_mb} MB", EXIT_MEMORY)
        if self.options.max_jobs is not None and self.processed >= self.options.max_jobs:
            self.stop("max jobs reached")

    def timeout_of(self, job: Job) -> float:
        return float(type(job).timeout or self.options.timeout or self.app.settings.timeout)

    def _guard(self, job: Job) -> contextlib.AbstractContextManager[None]:
        return self._enforcer.guard(type(job).job_name, self.timeout_of(job), time.monotonic())

    def _settle(self, message: ReceivedMessage, decision: Decision) -> None:
        if deletes_source(decision):
            self._housekeeper.delete_later(message, drops_payload(decision))
        elif isinstance(decision, Release):
            try:
                self.connection.change_visibility(message.queue, [(message, decision.delay)])
            except Exception:
                log.exception("could not release %s; it returns after its visibility timeout", message.message_id)

    # -- stopping ----------------------------------------------------------------------
    def _shutdown(self) -> None:
        self.stop(self.stop_reason or "done")
        with self._cond:
            held = list(self._held)
            self._held.clear()
            self._cond.notify_all()
            self._work.notify_all()
        self._return_to_queue(held)
        for thread in self._threads:
            while thread.is_alive():
                thread.join(0.2)
                if self._housekeeper.wedged and self._housekeeper.wedged_thread_alive(thread):
                    break
        self._housekeeper.stop()

    def _return_to_queue(self, messages: list[ReceivedMessage]) -> None:
        """Make held-but-unstarted messages visible at once, so a stop strands nothing."""
        self._housekeeper.untrack(messages)
        by_queue: dict[str, list[tuple[ReceivedMessage, int]]] = {}
        for message in messages:
            by_queue.setdefault(message.queue, []).append((message, 0))
        for queue, items in by_queue.items():
            try:
                self.connection.change_visibility(queue, items)
                log.info("returned %d unstarted message(s) to %s", len(items), queue)
            except Exception:
                log.exception(
                    "could not return %d message(s) to %s; they reappear after the visibility timeout",
                    len(items),
                    queue,
                )


def _rss_mb() -> float:
    """Current resident memory (Linux /proc), falling back to the peak elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 1_048_576
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

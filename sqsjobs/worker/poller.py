"""The poller: `Worker` wires the parts that receive, hold, run and settle messages.

It only moves messages; what a message *means* is decided by the runner core. The parts, each
with one job and importing only downwards:

    control      the stop switch and the exit code
    lanes        held and running messages; FIFO groups run one at a time, in order
    heartbeat    keeps held and running messages hidden (its own thread, short timeouts)
    deleter      batched deletes and S3 body deletes (its own thread)
    timeouts     the interrupt at a job's timeout and the watchdog for jobs that ignore it
    apply        a decision: out of the heartbeat, through the settler, to the deleter
    receiver     long polls in priority order (this thread)
    reporting    metrics, beats in the table, `restart` / `pause`, worker_starting / worker_stopping
    threads      the thread job loop       event_loop  the asyncio job loop (`--async`)
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from ..app import App
from ..errors import ConfigurationError
from ..job_class import Job
from ..runner import Call
from ..runner.core import RETRY_DELAY_S
from .apply import Applier
from .control import EXIT_CONFIG, EXIT_MEMORY, EXIT_OK, EXIT_WEDGED, Control
from .deleter import Deleter
from .event_loop import AsyncJobs
from .heartbeat import Heartbeat, quick_connection
from .lanes import Lanes
from .options import WorkerOptions
from .receiver import Receiver
from .reporting import Reporter
from .threads import ThreadJobs
from .timeouts import RunningJob, TimeoutEnforcer, Watchdog

if TYPE_CHECKING:
    from ..executors import ProcessExecutor

log = logging.getLogger("sqsjobs.worker")

__all__ = ["EXIT_CONFIG", "EXIT_MEMORY", "EXIT_OK", "EXIT_WEDGED", "Worker"]

#: How long a job waits, unspent, when the process executor could not run it (its processes cannot
#: start, or do not know the job): the worker stops with exit 2 and the next one, fixed, runs it.
CONFIG_RETRY_S = RETRY_DELAY_S


class Worker:
    """Runs jobs from one or more queues until told to stop or a limit is reached."""

    def __init__(self, app: App, options: WorkerOptions | None = None) -> None:
        self.app = app
        self.options = opts = options or WorkerOptions(queues=[app.settings.default_queue])
        if opts.timeout is not None and opts.timeout != app.settings.timeout:
            # One timeout rule (policy.timeout): the runner's claims and keys must expire after the same
            # timeout this worker interrupts jobs at, so the worker's --timeout becomes the app's default.
            app.settings = app.settings.model_copy(update={"timeout": opts.timeout})
        self.connection = app.connection
        self._executor: ProcessExecutor | None = None
        self._control = Control()
        self._started = time.monotonic()
        self._lanes = Lanes(self._control, opts.concurrency, opts.prefetch or 0, opts.max_jobs)
        self._heartbeat = Heartbeat(quick_connection(self.connection, app.settings), app.clock, opts.heartbeat)
        self._deleter = Deleter(self.connection, app.payloads, opts.delete_flush_s)
        self._enforcer = TimeoutEnforcer(opts.timeout, app.settings.timeout)
        self._watchdog = Watchdog(self._enforcer, opts.timeout_grace, self._on_wedged)
        self._applier = Applier(app.settler, self._heartbeat, self._deleter, self._lanes, self._after_job)
        #: The visibility each queue's receives ask for, read once at start (see `_check_queues`).
        self._visibility: dict[str, int] = {}
        self._receiver = Receiver(
            self.connection,
            opts,
            self._visibility,
            self._control,
            self._lanes,
            self._heartbeat,
            self._applier,
            self._check_limits,
        )
        self._reporter = Reporter(
            app,
            opts.queues,
            self._control,
            lambda: self._lanes.finished,
            self._enforcer.running_names,
            lambda queues: self._applier.give_back(self._lanes.take_held(queues), "the queue is paused"),
        )
        #: How thread jobs call `handle()`: in a child with `--executor process`, else on their thread.
        self._call: Call | None = self._process_call() if opts.executor == "process" else None
        self._jobs: ThreadJobs | AsyncJobs
        if opts.event_loop:
            self._jobs = AsyncJobs(
                app.runner,
                self.connection,
                self._lanes,
                self._applier,
                self._enforcer,
                opts.concurrency,
                self._watchdog.holds_message,
            )
        else:
            self._jobs = ThreadJobs(
                app.runner,
                self.connection,
                self._lanes,
                self._applier,
                self._enforcer,
                opts.concurrency,
                self._call,
            )

    def _process_call(self) -> Call:
        """`--executor process`: each job's handle() runs in a pooled child, killed at its timeout."""
        from ..executors import ProcessExecutor  # only workers that ask for it pay for multiprocessing

        modules = [m for m in (self.app.settings.app or "").split(",") if m.strip()]
        self._executor = executor = ProcessExecutor(modules, app_factory=functools.partial(App, self.app.settings))
        enforcer = self._enforcer

        def call(job: Job) -> object:
            try:
                executor.run(job, enforcer.timeout_of(job))
            except ConfigurationError as exc:
                # The job did not run: its process could not start, or does not know it (the executor
                # left it unmarked as run). That is the worker's setup, not the job: no try spent (a
                # release before it ran is a Postpone), and this worker stops (exit 2) instead of
                # putting back every job it receives.
                job.release(CONFIG_RETRY_S)
                log.error(
                    "%s could not run in a job process: %s. Fix SQSJOBS_APP (--app) or the job modules; "
                    "the worker stops with exit 2 and the message is tried again in %ds without spending a try.",
                    type(job).job_name,
                    exc,
                    CONFIG_RETRY_S,
                )
                self.stop(f"job processes cannot run {type(job).job_name}", EXIT_CONFIG)
            return None

        return call

    # -- what callers read ---------------------------------------------------------------
    @property
    def processed(self) -> int:
        """Jobs run to a decision (or to a runner crash) so far."""
        return self._lanes.finished

    @property
    def exit_code(self) -> int:
        return self._control.exit_code

    @property
    def stop_reason(self) -> str:
        return self._control.reason

    @property
    def held(self) -> int:
        """Messages received and not yet started."""
        return self._lanes.held

    # -- lifecycle -----------------------------------------------------------------------
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
        self._reporter.start()
        self._heartbeat.start()
        self._deleter.start()
        self._watchdog.start()
        self._jobs.start()
        try:
            self._receiver.run()
        finally:
            self._shutdown()
            self._reporter.stop(self.stop_reason or "done", self.processed, self.exit_code)
        log.info(
            "worker stopped (%s) after %d jobs, exit %d", self.stop_reason or "done", self.processed, self.exit_code
        )
        return self.exit_code

    def poll_once(self, wait_seconds: int = 0) -> int:
        """One receive (up to 10 messages), each run on this thread and settled, deletes flushed.

        For tests and harnesses that want one deterministic round of the real parts without the
        worker's threads; returns how many messages were received. A receive error propagates.
        """
        self._check_queues()
        if not self._receiver.receive(10, wait_seconds):
            return 0
        received = self._lanes.held
        jobs = ThreadJobs(self.app.runner, self.connection, self._lanes, self._applier, self._enforcer, 0, self._call)
        while (message := self._lanes.take(block=False)) is not None:
            jobs.run_one(message)
        self._deleter.flush(force=True)
        self._deleter.settle_retries()  # a delete SQS failed on its side: its few seconds of retries
        return received

    def stop(self, reason: str = "stop requested", exit_code: int | None = None) -> None:
        """Stop taking work; running jobs finish. Safe from any thread or a signal handler."""
        self._control.stop(reason, exit_code)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._control.stopping:
            log.warning("%s again: still finishing %d running job(s)", name, self._lanes.running)
            return
        log.info("%s received: finishing %d running job(s), returning held messages", name, self._lanes.running)
        self.stop(name)

    def _check_queues(self) -> None:
        """Resolve every queue once, refuse to start where failed jobs would be lost, and fix the
        visibility every receive asks for (the heartbeat counts on it)."""
        for queue in self.options.queues:
            info = self.connection.queue_info(queue)
            if info.dlq_url is None and self.connection.name == "sqs":
                raise ConfigurationError(
                    f"queue {queue!r} has no dead-letter queue, so failed jobs would be lost; "
                    "run `sqsjobs provision` or give it a RedrivePolicy (see `sqsjobs check`)"
                )
            self._visibility.setdefault(queue, max(1, info.visibility_timeout))

    # -- limits --------------------------------------------------------------------------
    def _check_limits(self) -> None:
        opts = self.options
        if opts.max_jobs is not None and self.processed >= opts.max_jobs:
            self.stop("max jobs reached")
        elif opts.max_time is not None and time.monotonic() - self._started >= opts.max_time:
            self.stop("max time reached")

    def _after_job(self) -> None:
        if self.options.memory_mb is not None and _rss_mb() >= self.options.memory_mb:
            self.stop(f"memory above {self.options.memory_mb} MB", EXIT_MEMORY)
        if self.options.max_jobs is not None and self.processed >= self.options.max_jobs:
            self.stop("max jobs reached")

    def _on_wedged(self, running: RunningJob) -> None:
        if running.message is not None:
            # Stop extending its message: it becomes visible again and counts an attempt.
            self._heartbeat.untrack([running.message])
        log.error(
            "%s ignored its timeout of %gs for %gs (%s); the worker stops taking "
            "work and exits 1 so it can be replaced. Its message returns after the visibility timeout "
            "and counts as an attempt.",
            running.job_name,
            running.timeout,
            self.options.timeout_grace,
            "blocked outside Python?"
            if running.interruptible
            else "a blocking call inside `async def`, or it swallowed its cancellation?",
        )
        self.stop(f"{running.job_name} could not be interrupted", EXIT_WEDGED)

    # -- stopping ------------------------------------------------------------------------
    def _shutdown(self) -> None:
        self.stop(self.stop_reason or "done")
        self._applier.give_back(self._lanes.close(), "the worker is stopping")
        self._jobs.join(self._watchdog.holds_thread)
        if self._executor is not None:
            self._executor.close()
        self._watchdog.stop()
        self._heartbeat.stop()
        self._deleter.stop()


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

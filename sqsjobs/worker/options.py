"""The poller's knobs, as one value object (Laravel's WorkerOptions)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigurationError

#: The most messages one SQS ReceiveMessage returns.
_RECEIVE_MAX = 10


@dataclass(slots=True)
class WorkerOptions:
    """How a worker polls, runs and stops.

    Parameters:
        queues: logical queue names in strict priority order.
        concurrency: jobs run at once (one thread each).
        prefetch: messages held beyond `concurrency` so the next job starts without a
            round trip. None (the default) holds enough to fill every receive to SQS's 10
            (`10 - concurrency`, at least 0), so a receive, and a delete batch, carries ten jobs
            at any concurrency; held messages are kept hidden by the heartbeat and handed back,
            without spending a try, when the worker stops. With several queues the default is 0:
            a held message of a lower queue would otherwise run before a higher queue's newer one.
            0 means a worker never holds a message it cannot start (long jobs and many workers: a
            held message waits behind running ones).
        sleep: seconds to long-poll when every queue was empty (SQS allows up to 20).
        timeout: seconds a job may run when it does not set `timeout`; None uses SQSJOBS_TIMEOUT.
        timeout_grace: seconds a timed-out job gets to stop after being interrupted; past
            that the worker stops taking work and exits 1 so its supervisor replaces it.
        memory_mb: stop (exit 12) once resident memory exceeds this, after the current jobs.
        max_jobs / max_time: stop (exit 0) after this many jobs / seconds.
        stop_when_empty: stop once every queue is empty (including delayed and in-flight).
        once: run at most one job, then stop.
        heartbeat: extend visibility while a job runs, so long jobs never run twice.
        event_loop: run jobs as tasks on one asyncio event loop (`--async`): `async def handle`
            jobs run concurrently and are really cancelled at their timeout; plain `def handle`
            jobs run in a thread pool beside the loop.
        delete_flush_s: longest a finished message waits to be deleted in a batch.
        executor: `thread` (handle() on the job thread, interrupted at its timeout) or `process`
            (handle() in a pooled child process, killed at its timeout: for CPU-bound jobs and
            code that ignores interrupts; see docs/executors.md). Not with `event_loop`.
    """

    queues: list[str] = field(default_factory=lambda: ["default"])
    concurrency: int = 1
    prefetch: int | None = None
    sleep: float = 10.0
    timeout: float | None = None
    timeout_grace: float = 10.0
    memory_mb: int | None = None
    max_jobs: int | None = None
    max_time: float | None = None
    stop_when_empty: bool = False
    once: bool = False
    heartbeat: bool = True
    event_loop: bool = False
    delete_flush_s: float = 0.2
    executor: str = "thread"

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.prefetch is None:
            # Without the heartbeat nothing keeps a held message hidden: hold none. With several queues,
            # a held message of a lower queue would run before a higher queue's newer one: strict
            # priority holds none either.
            single = len(self.queues) == 1
            self.prefetch = max(0, _RECEIVE_MAX - self.concurrency) if self.heartbeat and single else 0
        if self.prefetch < 0:
            raise ValueError("prefetch must be >= 0")
        if not 1 <= self.sleep <= 20:
            raise ValueError("sleep (the long-poll wait) must be between 1 and 20 seconds")
        if not self.queues:
            raise ValueError("at least one queue is needed")
        if self.timeout_grace <= 0:  # with none, a job is called stuck before it could see its interrupt
            raise ValueError("timeout_grace must be more than 0 seconds (--timeout-grace: at least 1)")
        if self.executor not in ("thread", "process"):
            raise ConfigurationError(f"--executor is thread or process, not {self.executor!r}")
        if self.executor == "process" and self.event_loop:
            raise ConfigurationError("--executor process runs jobs in child processes; drop --async to use it")
        if self.once:
            self.max_jobs = 1

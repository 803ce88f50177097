"""`sqsjobs work --async`: jobs as tasks on one event loop, everything else as in the thread worker.

Receiving, FIFO lanes, heartbeats, batched deletes, limits and shutdown are the same parts the
thread worker uses; only *running* differs. The runner core still decides everything: `begin()`
and `finish()` run in a pool beside the loop (they may write to the DLQ), and only `handle()` is
awaited here. An `async def handle` past its timeout is cancelled for real; a plain `def handle`
runs in the pool under the same interrupt the thread worker uses, so a sync job stuck past its
timeout is noticed by the same watchdog, and the worker exits 1 instead of hanging. The watchdog
(its own thread) watches coroutine jobs too: one that blocks the loop (`time.sleep` inside
`async def`) or swallows its cancellation is still running past its timeout and the grace, and the
worker exits 1 the same way, without waiting for a loop that no longer turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import context
from ..connections.base import Connection, ReceivedMessage
from ..errors import JobTimeoutError
from ..job_class import Job
from ..runner import Run, Runner
from ..runner.tracing_span import run_span
from .apply import Applier
from .daemon_pool import DaemonPool
from .lanes import Lanes
from .timeouts import TimeoutEnforcer

log = logging.getLogger("sqsjobs.worker")

T = TypeVar("T")

#: Pool threads besides the `concurrency` sync jobs: taking the next message, begin/finish, settling.
_SPARE_THREADS = 4
#: How often the loop says it is turning, and how long without a word means it no longer does.
_BEAT_S = 0.1
_STALLED_S = 1.0


class AsyncJobs:
    """One loop thread; `stuck` says which message's job ignored its timeout (never waited for)."""

    def __init__(
        self,
        runner: Runner,
        connection: Connection,
        lanes: Lanes,
        applier: Applier,
        enforcer: TimeoutEnforcer,
        concurrency: int,
        stuck: Callable[[ReceivedMessage], bool],
    ) -> None:
        self._runner = runner
        self._connection = connection
        self._lanes = lanes
        self._applier = applier
        self._enforcer = enforcer
        self._concurrency = concurrency
        self._stuck = stuck
        self._thread = threading.Thread(target=self._main, name="sqsjobs-loop", daemon=True)
        self._pool = DaemonPool(concurrency + _SPARE_THREADS, "sqsjobs-pool")
        #: When the loop last turned (set on the loop while it serves; see `join`).
        self._beat = time.monotonic()

    def start(self) -> None:
        self._beat = time.monotonic()
        self._thread.start()

    def join(self, abandoned: Callable[[threading.Thread], bool]) -> None:
        """Wait for the loop; it returns by itself once only stuck jobs are left.

        Except when a coroutine job on it ignored its timeout (`abandoned` says the watchdog holds
        the loop's thread) and the loop no longer turns: that job blocks it, or only stuck jobs are
        left and asyncio would wait for their cancellation for ever. Its thread is a daemon, left behind.
        """
        while self._thread.is_alive():
            if abandoned(self._thread) and time.monotonic() - self._beat > _STALLED_S:
                log.warning("the event loop is held by a job that ignored its timeout; leaving it behind")
                return
            self._thread.join(0.2)

    def _main(self) -> None:
        # The worker's app is current on the loop, and so in the pool calls that copy its context.
        context.activate(self._runner.app)
        try:
            asyncio.run(self._serve())
        finally:
            self._pool.shutdown()

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        copied = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._pool, copied.run, fn, *args)

    async def _serve(self) -> None:
        beat = asyncio.create_task(self._beating())
        try:
            await self._serve_messages()
        finally:
            beat.cancel()  # from here on the loop only cancels what is left: `join` may stop waiting

    async def _beating(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(_BEAT_S)

    async def _serve_messages(self) -> None:
        running: dict[asyncio.Task[None], ReceivedMessage] = {}
        while (message := await self._next()) is not None:
            task = asyncio.create_task(self._run(message))
            running[task] = message
            task.add_done_callback(running.pop)
        # Stopping: running jobs finish, except those stuck past their timeout (their messages
        # return after the visibility timeout; asyncio.run cancels their tasks on the way out).
        while live := [task for task, message in running.items() if not self._stuck(message)]:
            await asyncio.wait(live, timeout=0.2)

    async def _next(self) -> ReceivedMessage | None:
        """The next message that may start: taken on the loop when one is held (a lock, no wait), else
        waited for in the pool (a blocking wait must not hold the loop)."""
        message = self._lanes.take(block=False)
        if message is not None:
            return message
        return await self._in_pool(self._lanes.take)

    async def _run(self, message: ReceivedMessage) -> None:
        """One job, with as few hops to the pool as it needs: a plain `def handle` job is begun, run,
        finished and settled in one; an `async def handle` one is begun there, awaited here, then
        finished and settled in a second."""
        step = await self._in_pool(self._begin, message)
        if step is None:
            return
        timeout = self._enforcer.timeout_of(step.job)
        started = time.perf_counter()
        error: Exception | None = None
        try:
            # Watched, not interrupted: the loop cancels it at its timeout, the watchdog reports it if
            # it is still running `timeout_grace` later (it blocks the loop, or ignores the cancellation).
            with (
                self._enforcer.watch(type(step.job).job_name, timeout, message),
                run_span(step.delivery.context, type(step.job).job_name)
                if step.delivery.context is not None
                else contextlib.nullcontext(),
            ):
                await asyncio.wait_for(_entered(step.job), timeout)
        except asyncio.CancelledError:
            return  # only a stuck job's task is cancelled, when the loop closes
        except TimeoutError:
            error = JobTimeoutError(f"{type(step.job).job_name} ran longer than its timeout of {timeout:g}s")
        except Exception as exc:
            error = exc
        await self._in_pool(self._finish, message, step, error, time.perf_counter() - started)

    def _begin(self, message: ReceivedMessage) -> Run | None:
        """In the pool: begin; a job that is not a coroutine job runs and is settled right here. The
        coroutine job's step is returned, for the loop to await."""
        try:
            step = self._runner.begin(message, self._connection)
            if isinstance(step, Run) and _on_loop(step.job):
                return step
            if isinstance(step, Run):
                started = time.perf_counter()
                error: Exception | None = None
                try:
                    self._run_sync(step.job, message)
                except Exception as exc:
                    error = exc
                step = self._runner.finish(step, error, time.perf_counter() - started)
        except Exception:
            log.exception("runner crashed on message %s; it will be redelivered", message.message_id)
            self._applier.crashed(message)
            return None
        self._applier.done(message, step)
        return None

    def _finish(self, message: ReceivedMessage, step: Run, error: Exception | None, runtime_s: float) -> None:
        try:
            decision = self._runner.finish(step, error, runtime_s)
        except Exception:
            log.exception("runner crashed on message %s; it will be redelivered", message.message_id)
            self._applier.crashed(message)
            return
        self._applier.done(message, decision)

    def _run_sync(self, job: Job, message: ReceivedMessage) -> None:
        # Middleware is synchronous, so a job with middleware runs it here, in the pool
        # (an `async def handle` inside it then gets a private loop and no real cancellation).
        with self._enforcer.guard_for(message)(job):
            self._runner.run_handle(job)


def _on_loop(job: Job) -> bool:
    """An `async def handle` without middleware is awaited on the loop; anything else runs in the pool
    (middleware is synchronous: an `async def handle` inside it gets a private loop there)."""
    return inspect.iscoroutinefunction(job.handle) and not job.middleware()


def _entered(job: Job) -> Awaitable[object]:
    """`job.handle()` entered as `Runner.run_handle` enters it — marked as run, so a `self.release()`
    inside it spends a try (a release before `handle()` means "held back before it ran", no try) —
    but not run: its coroutine is awaited on this loop. Only for jobs without middleware."""
    entered: list[Awaitable[object]] = []
    Runner.run_handle(job, lambda job: entered.append(job.handle()), traced=False)  # the loop holds the span
    return entered[0]

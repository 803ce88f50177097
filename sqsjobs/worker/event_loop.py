"""`sqsjobs work --async`: jobs as tasks on one event loop, everything else as in the thread worker.

Receiving, heartbeats, batched deletes, limits and shutdown are the Worker's own;
only *running* differs. The runner core still decides everything: `begin()` and
`finish()` run in the loop's thread pool (they may write to the DLQ), and only
`handle()` is awaited here. An `async def handle` past its timeout is cancelled
for real; a plain `def handle` runs in the pool under the same interrupt the
thread worker uses.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..connections.base import ReceivedMessage
from ..decisions import Decision
from ..errors import JobTimeoutError
from ..job import Job
from ..runner import Run

if TYPE_CHECKING:
    from .poller import Worker

log = logging.getLogger("sqsjobs.worker")


def run_event_loop(worker: Worker) -> None:
    """The body of the worker's loop thread."""
    asyncio.run(_serve(worker))


async def _serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    # Sync jobs, begin/finish and settling all use this pool; size it so that
    # `concurrency` sync jobs can run while the core still has threads to decide.
    loop.set_default_executor(ThreadPoolExecutor(worker.options.concurrency + 4, "sqsjobs-pool"))
    tasks: set[asyncio.Task[None]] = set()
    while (message := await asyncio.to_thread(worker._take)) is not None:
        task = asyncio.create_task(_run(worker, message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def _run(worker: Worker, message: ReceivedMessage) -> None:
    worker._housekeeper.claim(message)
    try:
        decision = await _decide(worker, message)
    except BaseException:
        log.exception("runner crashed on message %s; it will be redelivered", message.message_id)
        worker._housekeeper.untrack([message])
        worker._finish()
        return
    await asyncio.to_thread(worker._done, message, decision)


async def _decide(worker: Worker, message: ReceivedMessage) -> Decision:
    runner = worker.app.runner
    step = await asyncio.to_thread(runner.begin, message, worker.connection)
    if not isinstance(step, Run):
        return step
    timeout = worker.timeout_of(step.job)
    started = time.perf_counter()
    error: Exception | None = None
    try:
        if inspect.iscoroutinefunction(step.job.handle) and not step.job.middleware():
            await asyncio.wait_for(step.job.handle(), timeout)
        else:
            await asyncio.to_thread(_run_sync, worker, step.job)
    except TimeoutError:
        error = JobTimeoutError(f"{type(step.job).job_name} ran longer than its timeout of {timeout:g}s")
    except Exception as exc:
        error = exc
    return await asyncio.to_thread(runner.finish, step, error, time.perf_counter() - started)


def _run_sync(worker: Worker, job: Job) -> None:
    # Middleware is synchronous, so a job with middleware runs it here, in the pool
    # (an `async def handle` inside it then gets a private loop and no real cancellation).
    with worker._guard(job):
        worker.app.runner.run_handle(job)

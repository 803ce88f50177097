"""Which jobs the asyncio worker awaits on its loop, and how one is entered there."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable

from ..job_class import Job, JobContext
from ..runner import Runner

#: Job class -> whether its `handle` is `async def` (asked once per class, not per job).
_COROUTINE_HANDLES: dict[type[Job], bool] = {}


def awaited_on_loop(job: Job) -> bool:
    """An `async def handle` without middleware is awaited on the loop; anything else runs in the pool
    (middleware is synchronous: an `async def handle` inside it gets a private loop there)."""
    cls = type(job)
    coroutine = _COROUTINE_HANDLES.get(cls)
    if coroutine is None:
        coroutine = _COROUTINE_HANDLES[cls] = inspect.iscoroutinefunction(cls.handle)
    return coroutine and not job.middleware()


def entered(job: Job, ctx: JobContext | None) -> Awaitable[object]:
    """`job.handle()` entered as `Runner.run_handle` enters it — marked as run, so a `self.release()`
    inside it spends a try (a release before `handle()` means "held back before it ran", no try) —
    but not run: its coroutine is awaited on the loop. Only for jobs without middleware."""
    handles: list[Awaitable[object]] = []
    # The loop holds the span.
    Runner.run_handle(job, lambda job: handles.append(job.handle()), traced=False, context=ctx)
    return handles[0]

"""Entering `handle()`: through the job's middleware, inside its span, an `async def handle` on a loop of
its own. The one place that marks a job as run, which decides whether a decision spends a try."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ..job_class import Job, JobContext
from ..middleware import run_through
from .tracing_span import run_span

#: Calls `handle()` where an executor wants it (a child process); by default, here.
Call = Callable[[Job], object]


def run_handle(job: Job, call: Call | None, traced: bool, context: JobContext | None) -> None:
    """See `Runner.run_handle`."""
    ctx = context if context is not None else job._ctx
    span = run_span(ctx, type(job).job_name) if traced and ctx is not None else None
    if span is None:
        _handle(job, ctx, call)
    else:
        with span:
            _handle(job, ctx, call)


def _handle(job: Job, ctx: JobContext | None, call: Call | None) -> None:
    middleware = job.middleware()
    if middleware:
        run_through(middleware, job, lambda: _enter(job, ctx, call))
    else:
        _enter(job, ctx, call)


def _enter(job: Job, ctx: JobContext | None, call: Call | None) -> None:
    """The innermost step: from here on the job counts as run."""
    if ctx is not None:
        ctx.handled = True
    result = job.handle() if call is None else call(job)
    if result is not None and inspect.isawaitable(result):
        import asyncio  # only async jobs pay for it (Lambda cold starts)

        asyncio.run(_await(result))


async def _await(awaitable: object) -> None:
    await awaitable  # type: ignore[misc]

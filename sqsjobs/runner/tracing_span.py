"""The span of one run (sqsjobs.tracing) from what the runner knows of it: one place for both job loops."""

from __future__ import annotations

import contextlib

from .. import tracing
from ..job_class import JobContext


def run_span(ctx: JobContext, job_name: str) -> contextlib.AbstractContextManager[None] | None:
    """None when the run is not traced: the caller runs it without a `with`."""
    parent = ctx.envelope.trace if ctx.envelope is not None else None
    span = tracing.run_span(job_name, ctx.queue, ctx.job_id, ctx.attempts, parent)
    return None if span is tracing.UNTRACED else span

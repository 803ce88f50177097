"""The span of one run (sqsjobs.tracing) from what the runner knows of it: one place for both job loops."""

from __future__ import annotations

import contextlib

from .. import tracing
from ..job_class import JobContext


def run_span(ctx: JobContext, job_name: str) -> contextlib.AbstractContextManager[None]:
    parent = ctx.envelope.trace if ctx.envelope is not None else None
    return tracing.run_span(job_name, ctx.queue, ctx.job_id, ctx.attempts, parent)

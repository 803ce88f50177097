"""sqsjobs: background jobs on Amazon SQS that survive production.

The public API is what this module exports; everything else is private. Chains, batches and
`dispatch_many`, and schedules are loaded on first use: a Lambda function that only runs plain jobs never imports
the workflow modules (its cold start is billed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__
from .app import App, cancel, current_app, job_status, use
from .connections.base import Connection, OutgoingMessage, ReceivedMessage, Undeleted
from .decisions import Ack, Decision, Defer, Fail, Postpone, Release
from .dispatched import Dispatched
from .errors import (
    BadMessageError,
    ConfigurationError,
    DispatchError,
    JobFailedError,
    JobTimeoutError,
    MaxAttemptsExceededError,
    NeverRanError,
    PermanentError,
    RetryUntilPassedError,
    SqsJobsError,
)
from .events import JobEvent
from .job_class import Job, dispatched_at
from .middleware import (
    FailOnException,
    Limit,
    Middleware,
    RateLimited,
    Skip,
    SkipIfBatchCancelled,
    ThrottlesExceptions,
    WithoutOverlapping,
    rate_limiter,
)
from .registry import Registry, default_registry
from .settings import Settings, load_settings

if TYPE_CHECKING:
    from .after_commit import Hold, hold_dispatches
    from .batches import Batch, PendingBatch, batch, find_batch
    from .chains import PendingChain, chain
    from .cron import Cron
    from .dispatching import dispatch_many
    from .function_jobs import FunctionJob, current_job, job
    from .schedules import Schedule, schedule, scheduled_for
    from .schemas import envelope_schema

#: Exported names whose module is imported when the name is first read.
_LAZY = {
    "Batch": "batches",
    "PendingBatch": "batches",
    "batch": "batches",
    "find_batch": "batches",
    "PendingChain": "chains",
    "chain": "chains",
    "dispatch_many": "dispatching",
    "FunctionJob": "function_jobs",
    "current_job": "function_jobs",
    "job": "function_jobs",
    "Hold": "after_commit",
    "hold_dispatches": "after_commit",
    "Cron": "cron",
    "Schedule": "schedules",
    "schedule": "schedules",
    "scheduled_for": "schedules",
    "envelope_schema": "schemas",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sqsjobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Ack",
    "App",
    "BadMessageError",
    "Batch",
    "ConfigurationError",
    "Connection",
    "Cron",
    "Decision",
    "Defer",
    "DispatchError",
    "Dispatched",
    "Fail",
    "FailOnException",
    "FunctionJob",
    "Hold",
    "Job",
    "JobEvent",
    "JobFailedError",
    "JobTimeoutError",
    "Limit",
    "MaxAttemptsExceededError",
    "Middleware",
    "NeverRanError",
    "OutgoingMessage",
    "PendingBatch",
    "PendingChain",
    "PermanentError",
    "Postpone",
    "RateLimited",
    "ReceivedMessage",
    "Registry",
    "Release",
    "RetryUntilPassedError",
    "Schedule",
    "Settings",
    "Skip",
    "SkipIfBatchCancelled",
    "SqsJobsError",
    "ThrottlesExceptions",
    "Undeleted",
    "WithoutOverlapping",
    "batch",
    "cancel",
    "chain",
    "current_app",
    "current_job",
    "default_registry",
    "dispatch_many",
    "dispatched_at",
    "envelope_schema",
    "find_batch",
    "hold_dispatches",
    "job",
    "job_status",
    "load_settings",
    "rate_limiter",
    "schedule",
    "scheduled_for",
    "use",
]

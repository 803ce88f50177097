"""sqsjobs: background jobs on Amazon SQS that survive production.

The public API is what this module exports; everything else is private.
"""

from ._version import __version__ as __version__
from .app import App, current_app, use
from .batches import Batch, PendingBatch, batch, find_batch
from .chains import PendingChain, chain
from .connections.base import Connection, OutgoingMessage, ReceivedMessage
from .decisions import Ack, Decision, Defer, Fail, Postpone, Release
from .dispatched import Dispatched
from .dispatching import dispatch_many
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
from .job import Job
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

__all__ = [
    "Ack",
    "App",
    "BadMessageError",
    "Batch",
    "ConfigurationError",
    "Connection",
    "Decision",
    "Defer",
    "DispatchError",
    "Dispatched",
    "Fail",
    "FailOnException",
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
    "Settings",
    "Skip",
    "SkipIfBatchCancelled",
    "SqsJobsError",
    "ThrottlesExceptions",
    "WithoutOverlapping",
    "batch",
    "chain",
    "current_app",
    "default_registry",
    "dispatch_many",
    "find_batch",
    "load_settings",
    "rate_limiter",
    "use",
]

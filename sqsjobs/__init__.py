"""sqsjobs: background jobs on Amazon SQS that survive production.

The public API is what this module exports; everything else is private.
"""

from .app import App, current_app, use
from .connections.base import Connection, OutgoingMessage, ReceivedMessage
from .decisions import Ack, Decision, Defer, Fail, Release
from .dispatching import Dispatched, dispatch_many
from .errors import (
    BadMessageError,
    ConfigurationError,
    DispatchError,
    JobFailedError,
    JobTimeoutError,
    MaxAttemptsExceededError,
    PermanentError,
    RetryUntilPassedError,
    SqsJobsError,
)
from .events import JobEvent
from .job import Job
from .registry import Registry, default_registry
from .settings import Settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "Ack",
    "App",
    "BadMessageError",
    "ConfigurationError",
    "Connection",
    "Decision",
    "Defer",
    "DispatchError",
    "Dispatched",
    "Fail",
    "Job",
    "JobEvent",
    "JobFailedError",
    "JobTimeoutError",
    "MaxAttemptsExceededError",
    "OutgoingMessage",
    "PermanentError",
    "ReceivedMessage",
    "Registry",
    "Release",
    "RetryUntilPassedError",
    "Settings",
    "SqsJobsError",
    "current_app",
    "default_registry",
    "dispatch_many",
    "load_settings",
    "use",
]

"""The long-running poller: `Worker(app, WorkerOptions(...)).run()` or `sqsjobs work`."""

from .options import WorkerOptions
from .poller import Worker

__all__ = ["Worker", "WorkerOptions"]

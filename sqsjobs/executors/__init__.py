"""Executors: what runs a job's `handle()` once the runner has decided it should run.

The thread worker runs it on a worker thread under an interrupt, the asyncio worker awaits it on
its loop, the sync connection and Lambda run it inline; this package adds the process executor,
which runs it in a child process that can be killed (docs/executors.md says when to use which).
Executors never decide anything: they raise what `handle()` raised and the runner decides.
"""

from __future__ import annotations

from .process import ChildJobError, ChildPermanentError, ProcessExecutor

__all__ = ["ChildJobError", "ChildPermanentError", "ProcessExecutor"]

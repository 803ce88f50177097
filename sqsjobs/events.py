"""Events for every step of a job's life, so observability hangs off listeners, not worker edits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("sqsjobs")


@dataclass(slots=True)
class JobEvent:
    """One step: `processing`, `processed`, `released`, `failed`, `deferred` or `rejected`.

    `rejected` is a message that could not become a job (malformed, unknown job,
    invalid payload, bad signature); it went to the DLQ without running.
    """

    kind: str
    job_id: str
    job_name: str
    queue: str
    attempt: int
    dispatched_at: str = ""
    wait_s: float = 0.0
    runtime_s: float = 0.0
    error_type: str = ""
    error: str = ""
    delay: int = 0


Listener = Callable[[JobEvent], None]


class Events:
    """A list of listeners; a failing listener is logged and never breaks a job."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> Listener:
        self._listeners.append(listener)
        return listener

    def forget(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def emit(self, event: JobEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("sqsjobs event listener %r failed", listener)

"""Events for every step of a job's life and of the workers around it, so observability (logs,
metrics, a Slack message) hangs off listeners, not worker edits.

Two kinds of event share one bus:

- `JobEvent`, one step of one job: `queued`, `processing`, `processed`, `released`, `failed`,
  `deferred`, `rejected`, and `new_failure` (the first failure of its exception type for this job,
  when an `alert_new` triage rule asks for it), `cancelled` (acknowledged unrun: `cancel(job_id)`).
  `Events.listen` receives all of these (it is what
  the job log and the metrics use).
- `QueueEvent`, something about a queue or a worker: `worker_starting`, `worker_stopping`,
  `queue_busy` (a `sqsjobs monitor` threshold was crossed), `circuit_opened` (a job's exception
  throttle opened), `schedule_missed` (ticks of a schedule passed with no runner to dispatch them;
  `detail` names the schedule, how many, the first and last, and its catch-up). Only listeners
  registered for the kind with `Events.on` receive them, so a listener written for job events
  never sees a shape it does not know.

A listener runs in the thread that emitted the event (a job thread, the poller, the Lambda handler):
keep it short, or hand the event to a queue of your own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger("sqsjobs")

#: The kinds of JobEvent, in the order a job meets them.
JOB_KINDS = (
    "queued",
    "processing",
    "processed",
    "released",
    "failed",
    "deferred",
    "rejected",
    "new_failure",
    "cancelled",
)
#: The kinds of QueueEvent.
QUEUE_KINDS = ("worker_starting", "worker_stopping", "queue_busy", "circuit_opened", "schedule_missed")
_KNOWN = frozenset(JOB_KINDS + QUEUE_KINDS)


@dataclass(slots=True)
class JobEvent:
    """One step of one job (see the module docstring for the kinds).

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


@dataclass(slots=True)
class QueueEvent:
    """Something about a queue or a worker. `detail` holds what the kind knows (a worker's host and
    pid, a queue's depth and its threshold, the job whose circuit opened), JSON-ready."""

    kind: str
    queue: str
    detail: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[JobEvent], None]
#: A listener's "would you take an event of this kind now?" (see `Events.listen`).
Wants = Callable[[str], bool]
AnyListener = Callable[[Any], None]
F = TypeVar("F", bound=AnyListener)


class Events:
    """Listeners by kind; a failing listener is logged and never breaks a job or a worker.

    Every job's run emits two or more events, so the runner asks `wants(kind)` before it builds one:
    an event no listener takes costs nothing."""

    def __init__(self) -> None:
        #: JobEvent listeners and the kinds each takes (None: every JobEvent, kinds of its own included).
        self._listeners: list[tuple[Listener, frozenset[str] | None, Wants | None]] = []
        self._by_kind: dict[str, tuple[AnyListener, ...]] = {}
        self._job_by_kind: dict[str, tuple[Listener, ...]] = {}
        self._every: tuple[Listener, ...] = ()
        #: Kinds some listener always takes, and for the others the listeners' `when` to ask.
        self._wanted: frozenset[str] = frozenset()
        self._maybe: dict[str, tuple[Wants, ...]] = {}
        # Registering rebuilds the indexes emit reads; two registrations at once must not lose one.
        self._changing = threading.Lock()

    def listen(self, listener: Listener, kinds: Iterable[str] | None = None, when: Wants | None = None) -> Listener:
        """Receive every JobEvent, or only those of `kinds` (job kinds).

        `when(kind)`, if given, is asked before an event is built for this listener alone: False means it
        would drop the event anyway (a log line below its logger's level), so none is built for it. It
        still receives every event of its kinds that another listener had built."""
        wanted = None if kinds is None else frozenset(kinds)
        if wanted is not None and (not wanted or not wanted <= set(JOB_KINDS)):
            raise ValueError(
                f"unknown job event kind(s) {sorted(wanted - set(JOB_KINDS)) or '(none given)'}; "
                f"known: {', '.join(JOB_KINDS)}"
            )
        with self._changing:
            self._listeners.append((listener, wanted, when))
            self._index()
        return listener

    def on(self, *kinds: str) -> Callable[[F], F]:
        """Decorator: receive the events of these kinds only (job or queue kinds), e.g.

        @app.events.on("failed", "queue_busy")
        def page(event): ...
        """
        unknown = [k for k in kinds if k not in JOB_KINDS and k not in QUEUE_KINDS]
        if unknown or not kinds:
            raise ValueError(
                f"unknown event kind(s) {unknown or '(none given)'}; known: {', '.join(JOB_KINDS + QUEUE_KINDS)}"
            )

        def register(listener: F) -> F:
            with self._changing:
                for kind in kinds:
                    self._by_kind[kind] = (*self._by_kind.get(kind, ()), listener)
                self._index()
            return listener

        return register

    def forget(self, listener: AnyListener) -> None:
        """Remove a listener wherever it was registered (no error when it was not)."""
        with self._changing:
            self._listeners = [entry for entry in self._listeners if entry[0] != listener]
            self._by_kind = {
                kind: tuple(known for known in listeners if known != listener)
                for kind, listeners in self._by_kind.items()
            }
            self._index()

    def wants(self, kind: str) -> bool:
        """Whether any listener takes events of `kind` now (else there is no need to build one)."""
        if kind in self._wanted:
            return True
        maybe = self._maybe.get(kind)
        if maybe is not None:
            for when in maybe:  # noqa: SIM110 (not any(): no generator per job)
                if when(kind):
                    return True
            return False
        return kind not in _KNOWN and bool(self._every)

    def emit(self, event: JobEvent | QueueEvent) -> None:
        # Every job emits at least one event: the listeners are called here, not through a helper.
        listeners: tuple[AnyListener, ...] = (
            self._job_by_kind.get(event.kind, self._every) if isinstance(event, JobEvent) else ()
        )
        by_kind = self._by_kind.get(event.kind)
        for listener in (*listeners, *by_kind) if by_kind else listeners:
            try:
                listener(event)
            except Exception:
                log.exception("sqsjobs event listener %r failed", listener)

    def _index(self) -> None:
        self._every = tuple(listener for listener, kinds, _ in self._listeners if kinds is None)
        taking = {
            kind: [(listener, when) for listener, kinds, when in self._listeners if kinds is None or kind in kinds]
            for kind in JOB_KINDS
        }
        self._job_by_kind = {kind: tuple(listener for listener, _ in entries) for kind, entries in taking.items()}
        always = [kind for kind, entries in taking.items() if any(when is None for _, when in entries)]
        self._wanted = frozenset(always + [kind for kind, listeners in self._by_kind.items() if listeners])
        self._maybe = {
            kind: tuple(when for _, when in entries if when is not None)
            for kind, entries in taking.items()
            if entries and kind not in self._wanted
        }

"""Workers you can see and steer, through the coordination table.

Each poller writes a beat (`workers` partition, one item per worker, expiring unless renewed) and
reads the controls (`control` partition) on a short interval:

- `restart` holds a time: a worker that sees it change after it started finishes its running jobs
  and exits 0, for its supervisor (ECS, systemd) to start a fresh one with the new code: Laravel's
  `queue:restart`, with no deploy hook into each host and no clock that must agree with another.
- `pause#<queue>` stops every poller taking jobs from that queue (running jobs finish) until it is
  deleted (`sqsjobs continue`). A queue consumed by Lambda is paused by disabling its event source
  mapping instead (sqsjobs.pausing), since no poller reads it.

Reading the controls is one Query per interval per worker; a beat is one PutItem. Nothing here is
trusted beyond the table: the table is written by workers and operators of this deployment only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .stores.base import Store

WORKERS = "workers"
CONTROL = "control"
RESTART = "restart"
_PAUSE = "pause#"
#: A paused queue stays paused until `continue` (the item must outlive any pause a team means).
PAUSE_TTL_S = 365 * 86400
#: A restart request only matters to workers started before it; it is kept long enough for any of them.
RESTART_TTL_S = 30 * 86400
#: Running jobs listed per worker (the beat is one item of at most 400 KB).
MAX_CURRENT = 20


@dataclass
class WorkerInfo:
    """One worker's beat, as `sqsjobs workers` lists it."""

    worker_id: str
    host: str
    pid: int
    queues: list[str]
    version: str
    started_at: float
    last_seen: float
    jobs_done: int = 0
    current: list[str] = field(default_factory=list)
    status: str = "running"
    paused: list[str] = field(default_factory=list)

    def to_attrs(self) -> dict[str, Any]:
        return {
            "host": self.host[:255],
            "pid": self.pid,
            "queues": list(self.queues),
            "version": self.version,
            # DynamoDB takes no float (boto3 refuses them): times as whole milliseconds.
            "started_ms": _ms(self.started_at),
            "last_seen_ms": _ms(self.last_seen),
            "jobs_done": self.jobs_done,
            "current": [name[:256] for name in self.current[:MAX_CURRENT]],
            "status": self.status,
            "paused": list(self.paused),
        }

    @classmethod
    def from_item(cls, worker_id: str, attrs: dict[str, Any]) -> WorkerInfo:
        return cls(
            worker_id=worker_id,
            host=str(attrs.get("host", "?")),
            pid=int(attrs.get("pid", 0)),
            queues=[str(q) for q in attrs.get("queues") or []],
            version=str(attrs.get("version", "?")),
            started_at=int(attrs.get("started_ms", 0)) / 1000,
            last_seen=int(attrs.get("last_seen_ms", 0)) / 1000,
            jobs_done=int(attrs.get("jobs_done", 0)),
            current=[str(c) for c in attrs.get("current") or []],
            status=str(attrs.get("status", "running")),
            paused=[str(q) for q in attrs.get("paused") or []],
        )


def beat(store: Store, info: WorkerInfo, ttl: float) -> None:
    """This worker is alive (or, with status `stopped`, just left); the item expires after `ttl`."""
    store.put((WORKERS, info.worker_id), info.to_attrs(), ttl)


def gone(store: Store, worker_id: str) -> None:
    store.delete((WORKERS, worker_id))


def list_workers(store: Store) -> list[WorkerInfo]:
    """Workers whose beat has not expired, oldest first."""
    found = [WorkerInfo.from_item(sk, attrs) for sk, attrs in store.query(WORKERS)]
    return sorted(found, key=lambda w: (w.started_at, w.worker_id))


@dataclass(frozen=True)
class Controls:
    """What operators asked for, read in one Query."""

    #: When the standing restart request was made; a worker restarts when this changes after it started.
    restart_at: float | None = None
    paused: frozenset[str] = frozenset()


def read_controls(store: Store) -> Controls:
    restart_at: float | None = None
    paused: set[str] = set()
    for sk, attrs in store.query(CONTROL):
        if sk == RESTART:
            at = attrs.get("at_ms")
            if isinstance(at, int):
                restart_at = at / 1000
        elif sk.startswith(_PAUSE):
            paused.add(sk[len(_PAUSE) :])
    return Controls(restart_at, frozenset(paused))


def request_restart(store: Store, now: float, by: str) -> None:
    store.put((CONTROL, RESTART), {"at_ms": _ms(now), "by": by[:256]}, RESTART_TTL_S)


def pause_key(queue: str) -> str:
    return _PAUSE + queue


def pause(store: Store, queue: str, now: float, by: str, mappings: list[str] | None = None) -> None:
    """`mappings`: the Lambda event source mappings the pause disabled (continue enables those only)."""
    attrs: dict[str, Any] = {"at_ms": _ms(now), "by": by[:256]}
    if mappings:
        attrs["mappings"] = mappings
    store.put((CONTROL, pause_key(queue)), attrs, PAUSE_TTL_S)


def paused_queues(store: Store) -> dict[str, dict[str, Any]]:
    """Every paused queue with its item (when, by whom)."""
    return {sk[len(_PAUSE) :]: attrs for sk, attrs in store.query(CONTROL) if sk.startswith(_PAUSE)}


def resume(store: Store, queue: str) -> bool:
    """True when the queue was paused."""
    return store.delete((CONTROL, pause_key(queue)))


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def ago(seconds: float) -> str:
    """How long ago a worker started or was last seen, as `sqsjobs workers` and the dashboard show it."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"

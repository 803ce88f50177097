"""Idempotency keys: a completed key is never run again; a key in progress is run by one message.

2 store calls per job with a key: add "in progress", then put "completed" (or delete it if the run
did not complete). The owner of an "in progress" mark is the job id *and* the message that holds it,
with the time the run started. That same message coming back after the run's timeout has passed means
the run died (its worker was killed; a live run is interrupted at its timeout), so it takes the key
over; back sooner (a heartbeat that lapsed while the run goes on), it waits out the rest of the
timeout. Any other message — a duplicate copy of the job, or another job with the same key — waits
until the holder is done or its mark expires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from .timing import seconds

if TYPE_CHECKING:
    from .stores.base import Key, Store

#: An "in progress" mark outlives the run by this much, then frees the key.
IN_PROGRESS_MARGIN_S = 60

State = Literal["run", "done", "busy"]


@dataclass(frozen=True, slots=True)
class Claim:
    state: State
    #: For "busy": who holds the key (job id and message id), for the log line...
    holder: str = ""
    #: ... and the seconds worth waiting before looking again.
    wait: float = 0.0


def item(job_name: str, key: str) -> Key:
    return ("idempotency", f"{job_name}:{key}")


def owner(job_id: str, message_id: str) -> str:
    return f"{job_id}:{message_id}"


def claim(store: Store, clock: Callable[[], float], job_name: str, key: str, holder: str, timeout: float) -> Claim:
    """Mark `key` in progress for `holder` (see `owner`)."""
    where = item(job_name, key)
    ttl = timeout + IN_PROGRESS_MARGIN_S
    for _ in range(2):  # a mark that expires between our two calls is tried once more
        mark = {"status": "in_progress", "owner": holder, "started": round(clock(), 3)}
        if store.add(where, mark, ttl=ttl):
            return Claim("run")
        current = store.get(where)
        if current is None:
            continue
        if current.get("status") == "completed":
            return Claim("done")
        left = float(current.get("started", 0) or 0) + timeout - clock()
        if current.get("owner") == holder and left <= 0:
            # The same message again, after its run's timeout: the run that took the key did not live to free it.
            store.put(where, mark, ttl=ttl)
            return Claim("run")
        return Claim("busy", str(current.get("owner", "?")), max(1.0, left) if left > 0 else ttl)
    return Claim("busy", "?", ttl)


def complete(store: Store, job_name: str, key: str, ttl: float | timedelta) -> None:
    store.put(item(job_name, key), {"status": "completed"}, ttl=seconds(ttl))


def abandon(store: Store, job_name: str, key: str, holder: str) -> None:
    """A run that did not complete clears its mark, so the retry may run."""
    store.delete(item(job_name, key), owner=holder)

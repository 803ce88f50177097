"""Idempotency keys: a completed key is never run again; a key in progress is run by one message.

2 store calls per job with a key: add "in progress", then put "completed" (or delete it if the run
did not complete). The owner of an "in progress" mark is the job id *and* the message that holds it:
that same message coming back means the run holding it died (its worker was killed, or it outlived
the message's visibility), so it takes the key over at once; any other message — a duplicate copy
of the job, or another job with the same key — waits until the holder is done or its mark expires.
"""

from __future__ import annotations

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
    #: For "busy": who holds the key (job id and message id), for the log line.
    holder: str = ""


def item(job_name: str, key: str) -> Key:
    return ("idempotency", f"{job_name}:{key}")


def owner(job_id: str, message_id: str) -> str:
    return f"{job_id}:{message_id}"


def claim(store: Store, job_name: str, key: str, holder: str, timeout: float) -> Claim:
    """Mark `key` in progress for `holder` (see `owner`)."""
    where = item(job_name, key)
    ttl = timeout + IN_PROGRESS_MARGIN_S
    for _ in range(2):  # a mark that expires between our two calls is tried once more
        if store.add(where, {"status": "in_progress", "owner": holder}, ttl=ttl):
            return Claim("run")
        current = store.get(where)
        if current is None:
            continue
        if current.get("status") == "completed":
            return Claim("done")
        if current.get("owner") == holder:
            # The same message again: the run that took the key did not live to free it.
            store.put(where, {"status": "in_progress", "owner": holder}, ttl=ttl)
            return Claim("run")
        return Claim("busy", str(current.get("owner", "?")))
    return Claim("busy", "?")


def complete(store: Store, job_name: str, key: str, ttl: float | timedelta) -> None:
    store.put(item(job_name, key), {"status": "completed"}, ttl=seconds(ttl))


def abandon(store: Store, job_name: str, key: str, holder: str) -> None:
    """A run that did not complete clears its mark, so the retry may run."""
    store.delete(item(job_name, key), owner=holder)

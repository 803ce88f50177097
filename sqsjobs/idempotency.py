"""Idempotency keys: a completed key is never run again; a key in progress is run by one message.

2 store calls per job with a key: add "in progress", then put "completed" (or delete it if the run
did not complete). An "in progress" mark names the job id and the message holding it, and when the
run started. A delivery of the *same job id* (the message back after its worker was killed, or the copy
a postponement sent) takes the key over once the run's timeout has passed — a live run is interrupted at
its timeout, so by then the holder is dead; sooner (a lapsed heartbeat, an SQS duplicate while the run
goes on) it waits out the rest of that timeout. "Passed" is judged on the taker's clock, so it allows
for the store's clock skew: the holder started on its own clock, which may be behind ours. Another job
with the same key waits until the holder is done or its mark expires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from . import runs
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


def owner(job_id: str, message_id: str, token: str = "") -> str:
    """The job and the delivery holding a key (`runs.delivery_token`): two live deliveries of one
    message hold different marks."""
    return f"{job_id}:{runs.holder(message_id, token)}"


def claim(store: Store, clock: Callable[[], float], job_name: str, key: str, holder: str, timeout: float) -> Claim:
    """Mark `key` in progress for `holder` (see `owner`)."""
    where = item(job_name, key)
    ttl = timeout + IN_PROGRESS_MARGIN_S
    for _ in range(2):  # a mark that expires between our two calls is tried once more
        mark = {"status": "in_progress", "owner": holder, "started_ms": int(clock() * 1000)}  # DynamoDB: no floats
        if store.add(where, mark, ttl=ttl):
            return Claim("run")
        current = store.get(where)
        if current is None:
            continue
        if current.get("status") == "completed":
            return Claim("done")
        if current.get("owner") == holder:
            return Claim("run")  # our own mark: the add's answer was lost and botocore's retry found it
        # `started_ms` is the holder's clock, ours may run ahead of it by up to the store's skew: the
        # holder's run is only surely over once its timeout has passed by that much more.
        left = int(current.get("started_ms", 0) or 0) / 1000 + timeout + store.skew - clock()
        if _job_of(str(current.get("owner", ""))) == _job_of(holder) and left <= 0:
            # The same job again, after its run's timeout: the run that took the key did not live to free it.
            # Taken over only if nobody else just did (two receipts of one message may race here).
            if store.delete(where, owner=str(current.get("owner", ""))) and store.add(where, mark, ttl=ttl):
                return Claim("run")
            continue
        return Claim("busy", str(current.get("owner", "?")), max(1.0, left) if left > 0 else ttl)
    return Claim("busy", "?", ttl)


def _job_of(holder: str) -> str:
    return holder.rpartition(":")[0]


def complete(store: Store, job_name: str, key: str, ttl: float | timedelta) -> None:
    store.put(item(job_name, key), {"status": "completed"}, ttl=seconds(ttl))


def abandon(store: Store, job_name: str, key: str, holder: str) -> None:
    """A run that did not complete clears its mark, so the retry may run."""
    store.delete(item(job_name, key), owner=holder)

"""The store-backed parts of a job's life: unique locks, exception counts, idempotency, steps.

Algorithms only; the state lives in the app's store (DynamoDB or memory). Each
function costs the minimum number of store calls its guarantee needs:

| feature | store calls per job |
| --- | --- |
| unique job | 2 — add the lock at dispatch, delete it (owner-checked) when the job ends |
| `max_exceptions` | 0 on success; 1 per raised exception |
| idempotency key | 2 — add "in progress", then put "completed" (or delete it if the run failed) |
| step | 1 read, +1 write the first time it completes |
| dispatch once (next chain link, batch callback) | 2 — add "sending", put "sent" |
| a chain link, batch job or callback | 3 — read "ended" (every delivery), claim "running", put "ended" |
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, TypeVar

from .stores.base import Key

if TYPE_CHECKING:
    from .app import App
    from .envelope import Envelope
    from .job import Job

log = logging.getLogger("sqsjobs.coordination")
T = TypeVar("T")

#: Exception counts outlive any sensible retry schedule, and then expire.
_EXCEPTIONS_TTL_S = 14 * 24 * 3600
#: An "in progress" idempotency mark outlives the run by this much, then frees the key.
_IN_PROGRESS_MARGIN_S = 60
#: "Sent" marks of chains and batches outlive any queue's retention (14 days) with room to spare.
_ONCE_TTL_S = 30 * 24 * 3600


def seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


# -- unique jobs ------------------------------------------------------------------------------
def unique_key(job: Job) -> str | None:
    cls = type(job)
    return f"{cls.job_name}:{job.unique_id()}" if cls.unique_for is not None else None


def acquire_unique(app: App, envelope: Envelope, ttl: float | timedelta) -> bool:
    """Take the unique lock for a dispatch; the owner is the job id, so only this job frees it.

    A job sent again under the same id (a chain link or batch member re-sent after a crash)
    already owns the lock: that is not a duplicate of some other job.
    """
    assert envelope.unique_key is not None
    key = ("unique", envelope.unique_key)
    if app.store.add(key, {"owner": envelope.id}, ttl=seconds(ttl)):
        return True
    held = app.store.get(key)
    return held is not None and held.get("owner") == envelope.id


def release_unique(app: App, envelope: Envelope | None) -> None:
    """Free a job's unique lock on a terminal path (owner-checked: never someone else's)."""
    if envelope is None or envelope.unique_key is None:
        return
    try:
        app.store.delete(("unique", envelope.unique_key), owner=envelope.id)
    except Exception:
        log.exception("could not release unique lock %s; it expires by itself", envelope.unique_key)


# -- max_exceptions ---------------------------------------------------------------------------
def count_exception(app: App, job: Job) -> int:
    """Raised exceptions of this job so far, this one included (releases are not counted)."""
    return app.store.incr(("exceptions", job.job_id or ""), 1, ttl=_EXCEPTIONS_TTL_S) or 0


# -- idempotency ------------------------------------------------------------------------------
Claim = Literal["run", "done", "busy"]


def _idempotency_item(job: Job, key: str) -> tuple[str, str]:
    return ("idempotency", f"{type(job).job_name}:{key}")


def claim(app: App, job: Job, key: str, owner: str, timeout: float) -> Claim:
    """Mark `key` in progress: `run` if we got it, `done` if it completed before, `busy` if running."""
    item = _idempotency_item(job, key)
    if app.store.add(item, {"status": "in_progress", "owner": owner}, ttl=timeout + _IN_PROGRESS_MARGIN_S):
        return "run"
    current = app.store.get(item)
    if current is None:  # it expired between our two calls: try once more
        return claim(app, job, key, owner, timeout) if app.store.get(item) is None else "busy"
    return "done" if current.get("status") == "completed" else "busy"


def complete(app: App, job: Job, key: str) -> None:
    app.store.put(_idempotency_item(job, key), {"status": "completed"}, ttl=seconds(type(job).idempotency_ttl))


def abandon(app: App, job: Job, key: str, owner: str) -> None:
    """A run that did not complete clears its mark, so the retry may run."""
    app.store.delete(_idempotency_item(job, key), owner=owner)


# -- steps ------------------------------------------------------------------------------------
def run_step(job: Job, name: str, fn: Callable[[], T]) -> T:
    assert job._ctx is not None and job._ctx.app is not None
    store = job._ctx.app.store
    item = ("step", f"{job.job_id}:{name}")
    done = store.get(item)
    if done is not None:
        return json.loads(done["result"])  # type: ignore[no-any-return]
    result = fn()
    store.put(item, {"result": json.dumps(result)}, ttl=seconds(type(job).idempotency_ttl))
    return result


# -- once, whoever races ----------------------------------------------------------------------
#: How long a "sending" mark is trusted before another run may take the send over: longer than a
#: send takes (creating a batch of thousands of jobs included), short enough to recover promptly.
SEND_LEASE_S = 60


#: How long to watch someone else's fresh "sending" mark turn "sent" before coming back later: the
#: usual race (the last two jobs of a batch finishing together) settles in milliseconds.
WATCH_S = 3.0


class SendInProgress(Exception):
    """Another run claimed this send moments ago and has not finished it; look again later."""


def dispatch_once(app: App, key: Key, owner: str, send: Callable[[], object]) -> bool:
    """Call `send` once for `key`: the next link of a chain, a batch's `then`, ...

    The first caller marks the key "sending", sends, then marks it "sent"; whoever finds
    "sent" does nothing. Whoever finds a fresh "sending" mark watches it for a moment and,
    if it is still not "sent", raises SendInProgress, so its message comes back later rather
    than being settled on a promise that may not be kept. A failed send frees its mark. A
    "sending" mark older than SEND_LEASE_S means its sender died in between: the next caller
    takes it over (atomically: delete-if-unchanged, then add) and sends. A duplicate is
    possible only if a live sender needs longer than the lease; a loss is not.
    True if this call sent.
    """
    now = app.clock()
    claim = {"state": "sending", "owner": f"{owner}@{now:.3f}", "claimed_ms": int(now * 1000)}
    if not _claim(app, key, claim):
        return False
    try:
        send()
    except BaseException:
        # Nothing (or not all) was sent: free the key at once, so the retry need not wait out the lease.
        app.store.delete(key, owner=str(claim["owner"]))
        raise
    app.store.put(key, {"state": "sent", "owner": claim["owner"]}, ttl=_ONCE_TTL_S)
    return True


def _claim(app: App, key: Key, claim: dict[str, object]) -> bool:
    """True when this run now holds the "sending" mark; False when the thing was sent already."""
    store = app.store
    deadline = time.monotonic() + WATCH_S
    pause = 0.02
    while True:
        if store.add(key, claim, ttl=_ONCE_TTL_S):
            return True
        mark = store.get(key)
        if mark is not None and mark.get("state") == "sent":
            return False
        if mark is not None and app.clock() * 1000 - int(mark.get("claimed_ms", 0)) >= SEND_LEASE_S * 1000:
            # Its sender died between the mark and the send: take over, unless someone else just did.
            if store.delete(key, owner=str(mark.get("owner"))) and store.add(key, claim, ttl=_ONCE_TTL_S):
                return True
            raise SendInProgress(f"{key[0]}/{key[1]} was taken over by another run")
        if time.monotonic() >= deadline:
            owner = mark.get("owner") if mark else "?"
            raise SendInProgress(f"{key[0]}/{key[1]} is being sent by {owner}")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


# -- the end of a job in a chain or batch -----------------------------------------------------
def mark_ended(app: App, envelope: Envelope, outcome: dict[str, str]) -> None:
    """Remember that this job's run is decided (`{"outcome": "ok"}` or failed with its reason),
    before its chain/batch bookkeeping, so a redelivery redoes the bookkeeping, never the job."""
    app.store.put(("ended", envelope.id), outcome, ttl=_ONCE_TTL_S)


def ended(app: App, envelope: Envelope) -> dict[str, str] | None:
    return app.store.get(("ended", envelope.id))


def claim_run(app: App, envelope: Envelope, message_id: str, timeout: float) -> float:
    """One copy of a chain/batch job runs at a time: 0 when this message may run it, else the seconds
    until another message's claim on the job id expires. The same message coming back (its worker
    died) takes its own claim over, with a fresh expiry."""
    key = ("running", envelope.id)
    ttl = timeout + _IN_PROGRESS_MARGIN_S
    if app.store.add(key, {"owner": message_id, "until": math.ceil(app.clock() + ttl)}, ttl=ttl):
        return 0.0
    held = app.store.get(key)
    if held is None or held.get("owner") == message_id:
        app.store.put(key, {"owner": message_id, "until": math.ceil(app.clock() + ttl)}, ttl=ttl)
        return 0.0
    return max(1.0, float(held.get("until", 0) or 0) - app.clock()) if held.get("until") else ttl


def forget_failure(app: App, job_id: str) -> None:
    """A failed job retried from the DLQ is undecided again (a job that succeeded stays decided:
    its retry only redoes the bookkeeping)."""
    mark = app.store.get(("ended", job_id))
    if mark is not None and mark.get("outcome") != "ok":
        app.store.delete(("ended", job_id))
        app.store.delete(("running", job_id))

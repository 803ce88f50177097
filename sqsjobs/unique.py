"""Unique jobs (Laravel's ShouldBeUnique): one lock per `unique_id()`, owned by the job id.

2 store calls per unique job: add the lock at dispatch, delete it (owner-checked) when the job ends.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from .timing import seconds

if TYPE_CHECKING:
    from .envelope import Envelope
    from .stores.base import Store

log = logging.getLogger("sqsjobs.unique")


def acquire(store: Store, envelope: Envelope, ttl: float | timedelta) -> bool:
    """Take the unique lock for a dispatch; the owner is the job id, so only this job frees it.

    A job sent again under the same id (a chain link or batch member re-sent after a crash)
    already owns the lock: that is not a duplicate of some other job.
    """
    assert envelope.unique_key is not None
    key = ("unique", envelope.unique_key)
    if store.add(key, {"owner": envelope.id}, ttl=seconds(ttl)):
        return True
    held = store.get(key)
    return held is not None and held.get("owner") == envelope.id


def release(store: Store, envelope: Envelope | None) -> None:
    """Free a job's unique lock on a terminal path (owner-checked: never someone else's)."""
    if envelope is None or envelope.unique_key is None:
        return
    try:
        store.delete(("unique", envelope.unique_key), owner=envelope.id)
    except Exception:
        log.exception("could not release unique lock %s; it expires by itself", envelope.unique_key)

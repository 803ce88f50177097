"""A chain link, batch member or callback runs once per job id, however many copies arrive.

3 store calls per such job: read "ended" (every delivery), claim "running", put "ended".
Its decided run is written down (`mark_ended`) before its chain/batch bookkeeping, so a
redelivery redoes the bookkeeping, never the job; a `running` claim holds back a copy that
arrives while another copy runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stores.base import Store

#: A claim outlives the run by this much, then frees the job id for a copy.
CLAIM_MARGIN_S = 60
#: "Ended" marks outlive any queue's retention (14 days) with room to spare.
_TTL_S = 30 * 24 * 3600


def mark_ended(store: Store, job_id: str, outcome: dict[str, str]) -> None:
    """Remember that this job's run is decided (`{"outcome": "ok"}` or failed with its reason)."""
    store.put(("ended", job_id), outcome, ttl=_TTL_S)


def ended(store: Store, job_id: str) -> dict[str, str] | None:
    return store.get(("ended", job_id))


def claim_run(store: Store, clock: Callable[[], float], job_id: str, message_id: str, timeout: float) -> float:
    """0 when this message may run the job, else the seconds until another message's claim on the
    job id expires. The same message coming back (its worker died) takes its own claim over."""
    key = ("running", job_id)
    ttl = timeout + CLAIM_MARGIN_S
    if store.add(key, {"owner": message_id, "until": math.ceil(clock() + ttl)}, ttl=ttl):
        return 0.0
    held = store.get(key)
    if held is None or held.get("owner") == message_id:
        store.put(key, {"owner": message_id, "until": math.ceil(clock() + ttl)}, ttl=ttl)
        return 0.0
    # `until` is on the holder's clock: the claim is only surely over once ours has passed it by the skew.
    return max(1.0, float(held.get("until", 0) or 0) + store.skew - clock()) if held.get("until") else ttl + store.skew


def free_claim(store: Store, job_id: str, message_id: str) -> None:
    """A run that did not happen (postponed) lets a copy of its message claim the job id at once."""
    store.delete(("running", job_id), owner=message_id)


def forget_failure(store: Store, job_id: str) -> None:
    """A failed job retried from the DLQ is undecided again (a job that succeeded stays decided:
    its retry only redoes the bookkeeping)."""
    mark = store.get(("ended", job_id))
    if mark is not None and mark.get("outcome") != "ok":
        store.delete(("ended", job_id))
        store.delete(("running", job_id))

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


def claim_run(
    store: Store,
    clock: Callable[[], float],
    job_id: str,
    message_id: str,
    timeout: float,
    receive_count: int = 1,
) -> float:
    """0 when this delivery may run the job, else the seconds worth waiting before looking again.

    A claim names the message and the receive that took it. A later receive of the same message takes
    it over once the claimed run's timeout has passed (a live run is interrupted at its timeout, so its
    worker died). Two receipts of one message alive at once — the message became visible while its
    first receiver still held it — are told apart by their receive counts, so only one of them runs.
    """
    key = ("running", job_id)
    ttl = timeout + CLAIM_MARGIN_S
    now = clock()
    mark = {"owner": message_id, "rc": receive_count, "since": math.floor(now), "until": math.ceil(now + ttl)}
    if store.add(key, mark, ttl=ttl):
        return 0.0
    held = store.get(key)
    if held is None:
        store.put(key, mark, ttl=ttl)
        return 0.0
    if held.get("owner") == message_id:
        held_rc = int(held.get("rc", 0) or 0)
        # Times in the claim are on its holder's clock: trusted for the skew longer.
        run_over = float(held.get("since", 0) or 0) + timeout + store.skew - now
        if held_rc == receive_count or (held_rc < receive_count and run_over <= 0):
            store.put(key, mark, ttl=ttl)
            return 0.0
        if held_rc < receive_count:
            return max(1.0, run_over)
    return max(1.0, float(held.get("until", 0) or 0) + store.skew - now) if held.get("until") else ttl + store.skew


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

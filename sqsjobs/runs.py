"""A chain link, batch member or callback runs once per job id, however many copies arrive.

3 store calls per such job: read "ended" (every delivery), claim "running", put "ended".
Its decided run is written down (`mark_ended`) before its chain/batch bookkeeping, so a
redelivery redoes the bookkeeping, never the job; a `running` claim holds back a copy that
arrives while another copy runs.
"""

from __future__ import annotations

import math
import secrets
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
    token: str = "",
) -> float:
    """0 when this delivery may run the job, else the seconds worth waiting before looking again.

    A claim names the delivery that took it (`holder`: the message and a `token` drawn per delivery).
    Another delivery of the same message takes it over only once the claimed run's timeout has passed
    (a live run is interrupted at its timeout, so its worker died) and only if its receive is not
    older. SQS may hand out one message twice at once — a later receive after a lapsed visibility, a
    duplicate of the same receive (standard queues are at-least-once; moto's server races the same
    way), or Lambda invoking again with the very same event and receipt handle — so neither the message
    id, the receive count nor the receipt tells two live deliveries apart; the token does. The same
    delivery asking again (a claim whose answer was lost and whose retry found it) keeps its claim.
    """
    key = ("running", job_id)
    ttl = timeout + CLAIM_MARGIN_S
    me = holder(message_id, token)
    for _ in range(3):  # a claim that is freed or expires between our calls is tried again
        now = clock()
        mark = {"owner": me, "rc": receive_count, "since": math.floor(now), "until": math.ceil(now + ttl)}
        if store.add(key, mark, ttl=ttl):
            return 0.0
        held = store.get(key)
        if held is None:
            continue
        owner = str(held.get("owner", ""))
        if owner == me:
            return 0.0
        until = float(held.get("until", 0) or 0) + store.skew - now if held.get("until") else ttl + store.skew
        if owner.partition("/")[0] != message_id or int(held.get("rc", 0) or 0) > receive_count:
            return max(1.0, until)
        # Times in the claim are on its holder's clock: trusted for the skew longer.
        run_over = float(held.get("since", 0) or 0) + timeout + store.skew - now
        if run_over > 0:
            return max(1.0, run_over)
        # Its run is over and it never ended: take it over, unless another receipt just did.
        if not store.delete(key, owner=owner):
            continue  # it expired, or another delivery took it over: look again
        if store.add(key, mark, ttl=ttl):
            return 0.0
    return 1.0


def holder(message_id: str, token: str) -> str:
    """Who holds a claim or key: the message, and the delivery by its token (`delivery_token`)."""
    return f"{message_id}/{token or 'none'}"


def delivery_token() -> str:
    """Drawn once per delivery (hooks keep it in `Delivery.notes`): two deliveries of one message —
    even with the same receipt handle — never share it."""
    return secrets.token_hex(8)


def free_claim(store: Store, job_id: str, message_id: str, token: str = "") -> None:
    """A run that did not happen (postponed) lets a copy of its message claim the job id at once."""
    store.delete(("running", job_id), owner=holder(message_id, token))


def forget_failure(store: Store, job_id: str) -> None:
    """A failed job retried from the DLQ is undecided again (a job that succeeded stays decided:
    its retry only redoes the bookkeeping)."""
    mark = store.get(("ended", job_id))
    if mark is not None and mark.get("outcome") != "ok":
        store.delete(("ended", job_id))
        store.delete(("running", job_id))

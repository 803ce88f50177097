"""What a chain or a batch does when one of its jobs ends: send the next link, count the member,
fire the callbacks — each once, whoever races (design §7).

Chains and batches nest (a chain's link may be a batch; a batch's member may be a chain), so the
steps that call each other live together here; `sqsjobs.chains` and `sqsjobs.batches` are the
user-facing builders and records on top. Everything here runs *before* the ending job's message is
deleted and is safe to run again for a redelivered message (dispatch-once marks, per-member counting).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from . import once
from .context import Services
from .dispatching import Planned, send_planned
from .envelope import Envelope
from .errors import ConfigurationError, DispatchError
from .links import Link, callback_id, link_id, to_job
from .timing import utc_iso

log = logging.getLogger("sqsjobs.workflow")

#: Batch items expire this long after they are written (DynamoDB TTL): a batch record 30 days after its
#: creation, finished or not. Prune sooner with the CLI.
BATCH_TTL_S = 30 * 24 * 3600


# -- chains -------------------------------------------------------------------------------------
def start(
    app: Services,
    chain_id: str,
    pos: int,
    links: list[Link],
    catch: Link | None,
    *,
    batch_id: str | None = None,
) -> None:
    """Send `links[0]` as link number `pos`, carrying `links[1:]` and the catch job."""
    first, rest = links[0], links[1:]
    state = {"id": chain_id, "pos": pos, "next": rest, "catch": catch}
    if "batch" in first:
        if batch_id is not None:
            raise ConfigurationError("a chain inside a batch cannot contain a batch")
        create(app, first["batch"], batch_id=link_id(chain_id, pos), continuation=state)
        return
    planned = Planned(
        to_job(app.registry, first),
        first.get("queue"),
        first.get("delay"),
        batch_id=batch_id,
        chain=state,
        job_id=link_id(chain_id, pos),
    )
    (sent,) = send_planned(app, [planned])
    if not sent.queued:
        # An equal unique job is queued or running: this link will not run, so the chain cannot go on.
        log.warning("chain %s stops at link %d: %s is unique and already queued or running", chain_id, pos, sent.job)
        send_catch(app, state, sent.job_id)
        if batch_id is not None:
            error = f"link {pos} ({sent.job}) was dropped: an equal unique job is queued or running"
            record_member(app, batch_id, chain_id, sent.job_id, sent.job, False, sent.job_id, error)


def advance(app: Services, state: dict[str, Any] | None, owner: str, batch_id: str | None = None) -> bool:
    """After link `state["pos"]` is done (a job succeeded, or a batch finished): send the next
    link, once per chain position. False when there is no next link."""
    if not state or not state.get("next"):
        return False
    pos = int(state["pos"]) + 1
    once.dispatch_once(
        app.store,
        app.clock,
        (f"chain#{state['id']}", f"link#{pos}"),
        owner,
        lambda: start(app, state["id"], pos, state["next"], state.get("catch"), batch_id=batch_id),
    )
    return True


def send_catch(app: Services, state: dict[str, Any], owner: str) -> None:
    """The chain's catch job, once per chain, whichever link failed."""
    catch = state.get("catch")
    if catch:
        send_once(app, (f"chain#{state['id']}", "catch"), owner, catch, {"for_chain": state["id"]})


def send_once(app: Services, key: tuple[str, str], owner: str, link: Link, extra: dict[str, Any]) -> None:
    """A callback job (a chain's catch, a batch's then/catch/finally), sent once per `key`.

    Its id derives from the key, so even a duplicate send in a crash window is the same job.
    """
    job_id = callback_id(key)
    once.dispatch_once(
        app.store,
        app.clock,
        key,
        owner,
        lambda: send_planned(app, [Planned(to_job(app.registry, link), link.get("queue"), job_id=job_id, extra=extra)]),
    )


# -- batches ----------------------------------------------------------------------------------
def create(app: Services, spec: dict[str, Any], *, batch_id: str | None = None, continuation: Any = None) -> str:
    """Store the record, then send the members. Member ids derive from the batch id, so sending
    again after a crash (a chain link redelivered) is counted once."""
    batch_id = batch_id or str(uuid.uuid4())
    members = spec["jobs"]
    attrs = {
        "name": spec.get("name") or "",
        "total": len(members),
        "processed": 0,
        "failed": 0,
        "created_at": utc_iso(app.clock()),
        "allow_failures": bool(spec.get("allow_failures")),
        "callbacks": json.dumps(spec.get("callbacks") or {}),
    }
    if spec.get("queue"):
        attrs["queue"] = spec["queue"]
    if continuation is not None:
        attrs["continuation"] = json.dumps(continuation)
    app.store.add(meta(batch_id), attrs, ttl=BATCH_TTL_S)
    ids = [str(uuid.uuid5(uuid.UUID(batch_id), str(i))) for i in range(len(members))]
    send_members(app, batch_id, members, ids, shrink_on_failure=continuation is None)
    if not members:
        _settle(app, batch_id, app.store.get(meta(batch_id)) or {}, owner=batch_id)
    return batch_id


def send_members(
    app: Services, batch_id: str, members: list[dict[str, Any]], ids: list[str], *, shrink_on_failure: bool
) -> None:
    planned = []
    for member, member_id in zip(members, ids, strict=True):
        if "chain" in member:
            links = member["chain"]
            state = {"id": member_id, "pos": 0, "next": links[1:], "catch": None}
            first = links[0]
            planned.append(
                Planned(
                    to_job(app.registry, first),
                    first.get("queue"),
                    batch_id=batch_id,
                    chain=state,
                    job_id=link_id(member_id, 0),
                )
            )
        else:
            planned.append(
                Planned(to_job(app.registry, member), member.get("queue"), batch_id=batch_id, job_id=member_id)
            )
    try:
        sent = send_planned(app, planned)
    except DispatchError as exc:
        if shrink_on_failure:
            # Members that never reached SQS will never finish: take them out of the total. (A
            # job or chain link that creates or adds is retried instead, sending the same ids.)
            shrunk = app.store.update(meta(batch_id), add={"total": -len(exc.not_queued)})
            # The members that were sent may all have finished already: nobody else would see
            # that the lowered total is reached, so look now.
            if shrunk is not None:
                try:
                    _settle(app, batch_id, shrunk, owner=batch_id)
                except Exception:  # the dispatcher must hear why its members were not queued, not this
                    log.exception("batch %s: could not send what its end calls for", batch_id)
        raise
    member_by_job = {p.job_id: member_id for p, member_id in zip(planned, ids, strict=True)}
    chains = {link_id(mid, 0) for entry, mid in zip(members, ids, strict=True) if "chain" in entry}
    for dropped in (d for d in sent if not d.queued):
        # An equal unique job is queued or running. A lone job's work is in hand: count it done (else
        # the batch would wait for a job that never comes). A chain cannot go on without its first link.
        whose = member_by_job[dropped.job_id]
        if dropped.job_id in chains:
            error = f"link 0 ({dropped.job}) was dropped: an equal unique job is queued or running"
            record_member(app, batch_id, whose, dropped.job_id, dropped.job, False, batch_id, error)
        else:
            record_member(app, batch_id, whose, dropped.job_id, dropped.job, True, batch_id)


def member_of(envelope: Envelope) -> str:
    """What a batch counts: the chain a link belongs to, or the job itself."""
    return str(envelope.chain["id"]) if envelope.chain else envelope.id


def record(app: Services, envelope: Envelope, succeeded: bool, error: str = "") -> None:
    """Count a member's outcome (once, whatever the redeliveries), then fire what is due."""
    assert envelope.batch_id is not None
    record_member(app, envelope.batch_id, member_of(envelope), envelope.id, envelope.job, succeeded, envelope.id, error)


def record_member(
    app: Services,
    batch_id: str,
    member: str,
    job_id: str,
    job: str,
    succeeded: bool,
    owner: str,
    error: str = "",
) -> None:
    outcome = "processed" if succeeded else "failed"
    marker = {"outcome": outcome, "job_id": job_id, "job": job, "error": error[:1000]}
    app.store.add_and_count((pk(batch_id), f"job#{member}"), marker, meta(batch_id), {outcome: 1}, BATCH_TTL_S)
    # Read after our own write (consistent read): a redelivery of the member that crashed
    # after counting still gets here and sends what is due.
    state = app.store.get(meta(batch_id))
    if state is None:
        log.warning("batch %s of job %s no longer exists; its outcome was not recorded", batch_id, job_id)
        return
    _settle(app, batch_id, state, owner=owner)


def _settle(app: Services, batch_id: str, state: dict[str, Any], owner: str) -> None:
    callbacks: dict[str, Link] = json.loads(state.get("callbacks") or "{}")
    failed, total = int(state.get("failed", 0)), int(state.get("total", 0))
    cancelled = "cancelled_at" in state
    if failed:
        if not state.get("allow_failures") and not cancelled:
            app.store.update(meta(batch_id), set={"cancelled_at": utc_iso(app.clock())}, unless="cancelled_at")
            cancelled = True
        _callback(app, batch_id, "catch", callbacks, owner)
    if int(state.get("processed", 0)) + failed < total:
        return
    if app.store.update(meta(batch_id), set={"finished_at": utc_iso(app.clock())}, unless="finished_at"):
        log.info(
            "batch %s (%s) finished: %d processed, %d failed%s",
            batch_id,
            state.get("name") or "unnamed",
            int(state.get("processed", 0)),
            failed,
            ", cancelled" if cancelled else "",
        )
    if not failed and not cancelled:
        _callback(app, batch_id, "then", callbacks, owner)
    _callback(app, batch_id, "finally", callbacks, owner)
    if state.get("continuation"):
        _continue_chain(json.loads(state["continuation"]), app, cancelled, owner)


def _callback(app: Services, batch_id: str, kind: str, callbacks: dict[str, Link], owner: str) -> None:
    link = callbacks.get(kind)
    if link:
        send_once(app, (pk(batch_id), kind), owner, link, {"for_batch": batch_id})


def _continue_chain(state: dict[str, Any], app: Services, cancelled: bool, owner: str) -> None:
    """The batch was a link of a chain: go on with the chain, or (cancelled) run its catch."""
    if cancelled:
        send_catch(app, state, owner)
    else:
        advance(app, state, owner)


def pk(batch_id: str) -> str:
    return f"batch#{batch_id}"


def meta(batch_id: str) -> tuple[str, str]:
    return (pk(batch_id), "meta")


# -- the end of a job ---------------------------------------------------------------------------
def involved(envelope: Envelope | None) -> bool:
    """Whether the job belongs to a chain or a batch, or is one's callback: such a job runs once per
    job id however many copies of its message arrive (plain jobs skip all of this)."""
    return envelope is not None and bool(
        envelope.chain or envelope.batch_id or envelope.extra.get("for_batch") or envelope.extra.get("for_chain")
    )


def succeeded(app: Services, envelope: Envelope) -> None:
    """The job succeeded: send the chain's next link; count the batch member if this ended it."""
    if advance(app, envelope.chain, envelope.id, envelope.batch_id):
        return  # the chain goes on; its member is counted when its last link succeeds
    if envelope.batch_id:
        record(app, envelope, succeeded=True)


def failed(app: Services, envelope: Envelope, error: BaseException) -> None:
    """The job failed for good: the chain's catch runs once; the batch counts a failure."""
    if envelope.chain:
        send_catch(app, envelope.chain, envelope.id)
    if envelope.batch_id:
        record(app, envelope, succeeded=False, error=f"{type(error).__name__}: {error}")

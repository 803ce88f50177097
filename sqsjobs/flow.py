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
from collections import Counter
from contextvars import ContextVar
from typing import Any, NamedTuple

from . import batch_shards, once
from .batch_shards import meta, pk
from .context import Services
from .dispatching import Planned, send_planned
from .envelope import Envelope
from .errors import ConfigurationError, DispatchError
from .links import Link, at_rest, callback_id, check_item_size, link_id, open_at_rest, seal_at_rest, to_job
from .timing import utc_iso

log = logging.getLogger("sqsjobs.workflow")

#: Batch items expire this long after they are written (DynamoDB TTL): a batch record 30 days after its
#: creation, finished or not. Prune sooner with the CLI.
BATCH_TTL_S = 30 * 24 * 3600


class MemberSend(NamedTuple):
    """Members of `batch_id` being sent: `new`, the batch was made by this very dispatch;
    `shrink_on_failure`, members that are not queued leave its total (see `send_members`)."""

    batch_id: str
    new: bool
    shrink_on_failure: bool


#: Set while `send_members` sends, for a transaction that holds the members until it commits
#: (sqsjobs.after_commit): its rollback or refused send must undo exactly what a direct send would.
sending_members: ContextVar[MemberSend | None] = ContextVar("sqsjobs_sending_members", default=None)


# -- chains -------------------------------------------------------------------------------------
def start(
    app: Services,
    chain_id: str,
    pos: int,
    links: list[Link],
    catch: Link | None,
    *,
    batch_id: str | None = None,
    shard: int | None = None,
) -> None:
    """Send `links[0]` as link number `pos`, carrying `links[1:]` and the catch job (and, in a sharded
    batch, the member's shard)."""
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
        extra=_shard_field(shard),
    )
    (sent,) = send_planned(app, [planned])
    if not sent.queued:
        # An equal unique job is queued or running: this link will not run, so the chain cannot go on.
        log.warning("chain %s stops at link %d: %s is unique and already queued or running", chain_id, pos, sent.job)
        send_catch(app, state, sent.job_id)
        if batch_id is not None:
            error = f"link {pos} ({sent.job}) was dropped: an equal unique job is queued or running"
            record_member(app, batch_id, chain_id, sent.job_id, sent.job, False, sent.job_id, error, shard=shard)


def advance(
    app: Services,
    state: dict[str, Any] | None,
    owner: str,
    batch_id: str | None = None,
    *,
    sealed: str = "",
    shard: int | None = None,
) -> bool:
    """After link `state["pos"]` is done (a job succeeded, or a batch finished): send the next
    link, once per chain position. False when there is no next link. `sealed`: the carrier the
    state's links were sealed for in a batch record (`links.at_rest`), opened only to be sent."""
    if not state or not state.get("next"):
        return False
    pos = int(state["pos"]) + 1

    def send() -> None:
        opened = open_at_rest(app, state, sealed) if sealed else state
        start(app, opened["id"], pos, opened["next"], opened.get("catch"), batch_id=batch_id, shard=shard)

    once.dispatch_once(app.store, app.clock, (f"chain#{state['id']}", f"link#{pos}"), owner, send)
    return True


def send_catch(app: Services, state: dict[str, Any], owner: str, *, sealed: str = "") -> None:
    """The chain's catch job, once per chain, whichever link failed."""
    catch = state.get("catch")
    if catch:
        send_once(app, (f"chain#{state['id']}", "catch"), owner, catch, {"for_chain": state["id"]}, sealed=sealed)


def send_once(
    app: Services, key: tuple[str, str], owner: str, link: Link, extra: dict[str, Any], *, sealed: str = ""
) -> None:
    """A callback job (a chain's catch, a batch's then/catch/finally), sent once per `key`.

    Its id derives from the key, so even a duplicate send in a crash window is the same job. A link
    kept sealed in a batch record (`sealed`: its carrier) is opened only to be sent, and the message
    that carries it is sealed again (`dispatch_plan.seal`).
    """
    job_id = callback_id(key)

    def send() -> None:
        opened = open_at_rest(app, link, sealed) if sealed else link
        send_planned(app, [Planned(to_job(app.registry, opened), opened.get("queue"), job_id=job_id, extra=extra)])

    once.dispatch_once(app.store, app.clock, key, owner, send)


# -- batches ----------------------------------------------------------------------------------
def create(app: Services, spec: dict[str, Any], *, batch_id: str | None = None, continuation: Any = None) -> str:
    """Store the record, then send the members. Member ids derive from the batch id, so sending
    again after a crash (a chain link redelivered) is counted once. The record keeps the payloads of
    encrypted job classes (callbacks, the rest of the chain waiting on it) sealed (`links.seal_at_rest`).
    A big batch spreads its counters over shards (`batch_shards`), each created here with its total."""
    batch_id = batch_id or str(uuid.uuid4())
    members = spec["jobs"]
    shards = batch_shards.shards_for(len(members), spec.get("shards"))
    callbacks = {
        kind: seal_at_rest(app, link, at_rest(batch_id, kind)) for kind, link in (spec.get("callbacks") or {}).items()
    }
    check_item_size(callbacks, "its callbacks")  # checked in clear at dispatch; a sealed payload is larger
    attrs = {
        "name": spec.get("name") or "",
        "total": len(members),
        "processed": 0,
        "failed": 0,
        "created_at": utc_iso(app.clock()),
        "allow_failures": bool(spec.get("allow_failures")),
        "callbacks": json.dumps(callbacks),
    }
    placed = batch_shards.assign(len(members), shards) if shards > 1 else None
    if placed is not None:
        attrs.update(shards=shards, sharded=len(members), shards_done=0)
    if spec.get("queue"):
        attrs["queue"] = spec["queue"]
    if continuation is not None:
        waiting = seal_at_rest(app, continuation, at_rest(batch_id, "continuation"))
        check_item_size(waiting, "the rest of the chain after it")
        attrs["continuation"] = json.dumps(waiting)
    if placed is not None:  # first: a batch record never names shards that do not exist
        batch_shards.create(app.store, batch_id, placed, BATCH_TTL_S)
    app.store.add(meta(batch_id), attrs, ttl=BATCH_TTL_S)
    ids = [str(uuid.uuid5(uuid.UUID(batch_id), str(i))) for i in range(len(members))]
    send_members(app, batch_id, members, ids, shrink_on_failure=continuation is None, shards=placed, new=True)
    if not members:
        _settle(app, batch_id, app.store.get(meta(batch_id)) or {}, owner=batch_id)
    return batch_id


def send_members(
    app: Services,
    batch_id: str,
    members: list[dict[str, Any]],
    ids: list[str],
    *,
    shrink_on_failure: bool,
    shards: list[int] | None = None,
    new: bool = False,
) -> None:
    """Send members (`shards`: each one's shard, in a sharded batch; None: counted on the batch item;
    `new`: the batch was just made for them)."""
    planned = []
    placed = shards if shards is not None else [None] * len(members)
    for member, member_id, shard in zip(members, ids, placed, strict=True):
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
                    extra=_shard_field(shard),
                )
            )
        else:
            planned.append(
                Planned(
                    to_job(app.registry, member),
                    member.get("queue"),
                    batch_id=batch_id,
                    job_id=member_id,
                    extra=_shard_field(shard),
                )
            )
    shard_of_job = {p.job_id: shard for p, shard in zip(planned, placed, strict=True)}
    token = sending_members.set(MemberSend(batch_id, new, shrink_on_failure))
    try:
        sent = send_planned(app, planned)
    except DispatchError as exc:
        if shrink_on_failure:
            # Members that never reached SQS will never finish: take them out of the total (of their
            # shard). (A job or chain link that creates or adds is retried instead, sending the same ids.)
            shrink_batch(app, batch_id, Counter(shard_of_job.get(job_id) for job_id, _, _ in exc.not_queued))
        raise
    finally:
        sending_members.reset(token)
    member_by_job = {p.job_id: member_id for p, member_id in zip(planned, ids, strict=True)}
    chains = {link_id(mid, 0) for entry, mid in zip(members, ids, strict=True) if "chain" in entry}
    for dropped in (d for d in sent if not d.queued):
        # An equal unique job is queued or running. A lone job's work is in hand: count it done (else
        # the batch would wait for a job that never comes). A chain cannot go on without its first link.
        whose, shard = member_by_job[dropped.job_id], shard_of_job.get(dropped.job_id)
        if dropped.job_id in chains:
            error = f"link 0 ({dropped.job}) was dropped: an equal unique job is queued or running"
            record_member(app, batch_id, whose, dropped.job_id, dropped.job, False, batch_id, error, shard=shard)
        else:
            record_member(app, batch_id, whose, dropped.job_id, dropped.job, True, batch_id, shard=shard)


def shrink_batch(app: Services, batch_id: str, lost: Counter[int | None]) -> None:
    """Lower the totals by the members that were not queued. The members that were sent may all have
    finished already: nobody else would see that a lowered total is reached, so look now."""
    shrunk = []
    for shard, count in lost.items():
        key = meta(batch_id) if shard is None else batch_shards.count_key(batch_id, shard)
        shrunk.append((shard, app.store.update(key, add={"total": -count})))
    try:
        for shard, state in shrunk:
            if state is not None and shard is None:
                _settle(app, batch_id, state, owner=batch_id)
            elif state is not None and shard is not None:
                _counted(app, batch_id, shard, state, owner=batch_id)
    except Exception:  # the dispatcher must hear why its members were not queued, not this
        log.exception("batch %s: could not send what its end calls for", batch_id)


def member_of(envelope: Envelope) -> str:
    """What a batch counts: the chain a link belongs to, or the job itself."""
    return str(envelope.chain["id"]) if envelope.chain else envelope.id


def shard_of(envelope: Envelope) -> int | None:
    """The shard of a sharded batch this job's member is counted in (None: on the batch item)."""
    return batch_shards.shard_of(envelope.extra.get(batch_shards.FIELD))


def _shard_field(shard: int | None) -> dict[str, Any] | None:
    return {batch_shards.FIELD: shard} if shard is not None else None


def record(app: Services, envelope: Envelope, succeeded: bool, error: str = "") -> None:
    """Count a member's outcome (once, whatever the redeliveries), then fire what is due."""
    assert envelope.batch_id is not None
    member, shard = member_of(envelope), shard_of(envelope)
    record_member(app, envelope.batch_id, member, envelope.id, envelope.job, succeeded, envelope.id, error, shard=shard)


def record_member(
    app: Services,
    batch_id: str,
    member: str,
    job_id: str,
    job: str,
    succeeded: bool,
    owner: str,
    error: str = "",
    *,
    shard: int | None = None,
) -> None:
    outcome = "processed" if succeeded else "failed"
    marker = {"outcome": outcome, "job_id": job_id, "job": job, "error": error[:1000]}
    if shard is not None:
        counted = batch_shards.count(app.store, batch_id, shard, member, marker, outcome, BATCH_TTL_S)
        if counted is None:
            log.warning("batch %s of job %s no longer exists; its outcome was not recorded", batch_id, job_id)
            return
        _counted(app, batch_id, shard, counted, owner)
        return
    app.store.add_and_count((pk(batch_id), f"job#{member}"), marker, meta(batch_id), {outcome: 1}, BATCH_TTL_S)
    # Read after our own write (consistent read): a redelivery of the member that crashed
    # after counting still gets here and sends what is due.
    state = app.store.get(meta(batch_id))
    if state is None:
        log.warning("batch %s of job %s no longer exists; its outcome was not recorded", batch_id, job_id)
        return
    _settle(app, batch_id, state, owner=owner)


def _counted(app: Services, batch_id: str, shard: int, state: dict[str, Any], owner: str) -> None:
    """After a count in a shard (read back, consistently): tell the batch of the shard's first failure,
    and once all its members have run, roll the shard up and settle the batch. Each step is marked on
    the shard only when done (`reported`, `settled`), so a redelivery redoes what a crash cut short,
    and a later one leaves the batch item alone."""
    if state.get("settled"):
        return
    key = batch_shards.count_key(batch_id, shard)
    if int(state.get("failed", 0)) and not state.get("reported"):
        batch = app.store.get(meta(batch_id))
        if batch is None:
            log.warning("batch %s no longer exists; the failure in its shard %d was not reported", batch_id, shard)
            return
        _failed(app, batch_id, batch, owner)
        app.store.update(key, set={"reported": True})
    if batch_shards.done(state):
        batch_shards.roll_up(app.store, batch_id, shard, state, BATCH_TTL_S)
        batch = app.store.get(meta(batch_id))
        if batch is not None:
            _settle(app, batch_id, batch, owner=owner)
            app.store.update(key, set={"settled": True})


def _settle(app: Services, batch_id: str, state: dict[str, Any], owner: str) -> None:
    processed, failed = batch_shards.outcomes(state)
    cancelled = "cancelled_at" in state
    if failed:
        cancelled = _failed(app, batch_id, state, owner)
    if not batch_shards.all_counted(state):
        return
    if app.store.update(meta(batch_id), set={"finished_at": utc_iso(app.clock())}, unless="finished_at"):
        log.info(
            "batch %s (%s) finished: %d processed, %d failed%s",
            batch_id,
            state.get("name") or "unnamed",
            processed,
            failed,
            ", cancelled" if cancelled else "",
        )
    callbacks: dict[str, Link] = json.loads(state.get("callbacks") or "{}")
    if not failed and not cancelled:
        _callback(app, batch_id, "then", callbacks, owner)
    _callback(app, batch_id, "finally", callbacks, owner)
    if state.get("continuation"):
        _continue_chain(json.loads(state["continuation"]), app, cancelled, owner, at_rest(batch_id, "continuation"))


def _failed(app: Services, batch_id: str, state: dict[str, Any], owner: str) -> bool:
    """A member failed: cancel the batch (unless it allows failures) and send `catch`, once each.
    True when the batch is cancelled."""
    cancelled = "cancelled_at" in state
    if not state.get("allow_failures") and not cancelled:
        app.store.update(meta(batch_id), set={"cancelled_at": utc_iso(app.clock())}, unless="cancelled_at")
        cancelled = True
    _callback(app, batch_id, "catch", json.loads(state.get("callbacks") or "{}"), owner)
    return cancelled


def _callback(app: Services, batch_id: str, kind: str, callbacks: dict[str, Link], owner: str) -> None:
    link = callbacks.get(kind)
    if link:
        send_once(app, (pk(batch_id), kind), owner, link, {"for_batch": batch_id}, sealed=at_rest(batch_id, kind))


def _continue_chain(state: dict[str, Any], app: Services, cancelled: bool, owner: str, sealed: str) -> None:
    """The batch was a link of a chain: go on with the chain, or (cancelled) run its catch."""
    if cancelled:
        send_catch(app, state, owner, sealed=sealed)
    else:
        advance(app, state, owner, sealed=sealed)


# -- the end of a job ---------------------------------------------------------------------------
def succeeded(app: Services, envelope: Envelope) -> None:
    """The job succeeded: send the chain's next link; count the batch member if this ended it."""
    if advance(app, envelope.chain, envelope.id, envelope.batch_id, shard=shard_of(envelope)):
        return  # the chain goes on; its member is counted when its last link succeeds
    if envelope.batch_id:
        record(app, envelope, succeeded=True)


def failed(app: Services, envelope: Envelope, error: BaseException) -> None:
    """The job failed for good: the chain's catch runs once; the batch counts a failure."""
    if envelope.chain:
        send_catch(app, envelope.chain, envelope.id)
    if envelope.batch_id:
        record(app, envelope, succeeded=False, error=f"{type(error).__name__}: {error}")

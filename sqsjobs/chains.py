"""Chains (Laravel's `Bus::chain`): jobs that run one after another.

Only the first link is sent at dispatch; the rest travel in its envelope
(`chain.next`). When a link succeeds, the runner sends the next one *before*
the link's message is deleted, through `dispatch_once` keyed by chain position:
a crash in between redelivers the link, and its second success finds the next
link already sent. When a link fails for good, the chain's `catch` job is sent
once and the links after it never run. A link may be a batch: the rest of the
chain then waits for that batch to finish (see sqsjobs.batches).

    chain([Download(url=u), Transcode(id=i), Publish(id=i)]).catch(NotifyFailure(id=i)).dispatch()
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .app import App, current_app
from .coordination import dispatch_once
from .errors import ConfigurationError
from .timing import DelayLike, delay_seconds

if TYPE_CHECKING:
    from .batches import PendingBatch
    from .job import Job

log = logging.getLogger("sqsjobs.chains")

#: A link as it travels: {"job": name, "payload": {...}, "queue"?, "delay"?} or {"batch": spec}.
Link = dict[str, Any]


def chain(jobs: Iterable[Job | PendingBatch]) -> PendingChain:
    """A chain of jobs (and batches) to dispatch; nothing is sent until `.dispatch()`."""
    return PendingChain(list(jobs))


@dataclass
class PendingChain:
    jobs: list[Any]
    catch_job: Job | None = None
    queue: str | None = None
    delay: DelayLike | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def catch(self, job: Job) -> PendingChain:
        """A job dispatched once if any link fails for good (the rest of the chain does not run)."""
        self.catch_job = job
        return self

    def on_queue(self, queue: str) -> PendingChain:
        """Send every link (and the catch job) to this queue instead of each job's own."""
        self.queue = queue
        return self

    def with_delay(self, delay: DelayLike) -> PendingChain:
        """Delay the first link; later links start as soon as the one before them succeeds."""
        self.delay = delay
        return self

    def links(self, app: App) -> list[Link]:
        if not self.jobs:
            raise ConfigurationError("a chain needs at least one job")
        out = [to_link(app, job, self.queue) for job in self.jobs]
        if self.delay is not None:
            out[0]["delay"] = delay_seconds(self.delay, app.clock())
        return out

    def dispatch(self, app: App | None = None) -> str:
        """Send the first link; returns the chain id."""
        from .batches import check_item_size

        app = app or current_app()
        catch = to_link(app, self.catch_job, self.queue) if self.catch_job is not None else None
        links = self.links(app)
        if self.delay is not None and "batch" in links[0]:
            raise ConfigurationError("a chain that starts with a batch cannot be delayed; delay its first job")
        for pos, link in enumerate(links):
            if "batch" in link:  # the rest of the chain waits on that batch's item
                check_item_size([links[pos + 1 :], catch], "the rest of the chain after it")
        start(app, self.id, 0, links, catch)
        return self.id


def to_link(app: App, job: Any, queue: str | None = None) -> Link:
    from .batches import PendingBatch

    if isinstance(job, PendingBatch):
        return {"batch": job.spec(app, default_queue=queue)}
    if isinstance(job, PendingChain | list):
        raise ConfigurationError("a chain cannot contain a chain; list its jobs in this one")
    link: Link = {"job": type(job).job_name, "payload": job.model_dump(mode="json")}
    if queue:
        link["queue"] = queue
    return link


def to_job(app: App, link: Link) -> Job:
    """The job a link names, validated again by its model (a renamed job resolves by alias)."""
    return app.registry.get(link["job"]).model_validate(link["payload"])


def link_id(chain_id: str, pos: int) -> str:
    """Link ids are derived, so a link sent twice after a crash is recognisably the same job."""
    return str(uuid.uuid5(uuid.UUID(chain_id), f"link:{pos}"))


def start(
    app: App,
    chain_id: str,
    pos: int,
    links: list[Link],
    catch: Link | None,
    *,
    batch_id: str | None = None,
) -> None:
    """Send `links[0]` as link number `pos`, carrying `links[1:]` and the catch job."""
    from .dispatching import Planned, send_planned

    first, rest = links[0], links[1:]
    state = {"id": chain_id, "pos": pos, "next": rest, "catch": catch}
    if "batch" in first:
        from .batches import create

        if batch_id is not None:
            raise ConfigurationError("a chain inside a batch cannot contain a batch")
        create(app, first["batch"], batch_id=link_id(chain_id, pos), continuation=state)
        return
    planned = Planned(
        to_job(app, first),
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
            from .batches import record_member

            error = f"link {pos} ({sent.job}) was dropped: an equal unique job is queued or running"
            record_member(app, batch_id, chain_id, sent.job_id, sent.job, False, sent.job_id, error)


def advance(app: App, state: dict[str, Any] | None, owner: str, batch_id: str | None = None) -> bool:
    """After link `state["pos"]` is done (a job succeeded, or a batch finished): send the next
    link, once per chain position. False when there is no next link."""
    if not state or not state.get("next"):
        return False
    pos = int(state["pos"]) + 1
    dispatch_once(
        app,
        (f"chain#{state['id']}", f"link#{pos}"),
        owner,
        lambda: start(app, state["id"], pos, state["next"], state.get("catch"), batch_id=batch_id),
    )
    return True


def send_catch(app: App, state: dict[str, Any], owner: str) -> None:
    """The chain's catch job, once per chain, whichever link failed."""
    catch = state.get("catch")
    if catch:
        send_once(app, (f"chain#{state['id']}", "catch"), owner, catch, {"for_chain": state["id"]})


def send_once(app: App, key: tuple[str, str], owner: str, link: Link, extra: dict[str, Any]) -> None:
    """A callback job (a chain's catch, a batch's then/catch/finally), sent once per `key`.

    Its id derives from the key, so even a duplicate send in a crash window is the same job.
    """
    from .dispatching import Planned, send_planned

    job_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sqsjobs:{key[0]}/{key[1]}"))
    dispatch_once(
        app,
        key,
        owner,
        lambda: send_planned(app, [Planned(to_job(app, link), link.get("queue"), job_id=job_id, extra=extra)]),
    )

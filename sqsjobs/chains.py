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

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import context, flow
from .batches import PendingBatch
from .context import Services
from .errors import ConfigurationError
from .job_class import Job
from .links import Link, check_item_size, to_link
from .timing import DelayLike, delay_seconds

__all__ = ["Link", "PendingChain", "chain"]


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

    def links(self, app: Services) -> list[Link]:
        if not self.jobs:
            raise ConfigurationError("a chain needs at least one job")
        out = [to_link(app, job, self.queue) for job in self.jobs]
        if self.delay is not None:
            out[0]["delay"] = delay_seconds(self.delay, app.clock())
        return out

    def dispatch(self, app: Services | None = None) -> str:
        """Send the first link; returns the chain id."""
        app = app or context.current()
        catch = to_link(app, self.catch_job, self.queue) if self.catch_job is not None else None
        links = self.links(app)
        if self.delay is not None and "batch" in links[0]:
            raise ConfigurationError("a chain that starts with a batch cannot be delayed; delay its first job")
        for pos, link in enumerate(links):
            if "batch" in link:  # the rest of the chain waits on that batch's item
                check_item_size([links[pos + 1 :], catch], "the rest of the chain after it")
        flow.start(app, self.id, 0, links, catch)
        return self.id

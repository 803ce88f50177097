"""Links: a job as data inside a chain or a batch (name + payload), and the ids derived from them.

A chain carries the rest of its links, and a batch record its callbacks, as plain JSON; a link
becomes a job again only when its turn comes, validated by its registered class (a renamed job
resolves by alias). Ids derive from positions, so a link sent twice after a crash is the same job.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import ConfigurationError
from .job import Job

if TYPE_CHECKING:
    from .context import Services
    from .registry import Registry

#: A link as it travels: {"job": name, "payload": {...}, "queue"?, "delay"?} or {"batch": spec}.
Link = dict[str, Any]

#: What a batch item may carry in callbacks and a chain's rest: DynamoDB items stop at 400 KB.
_ITEM_BUDGET = 350_000


@runtime_checkable
class AsSpec(Protocol):
    """A batch still to be sent (`PendingBatch`): it describes itself as data."""

    def spec(self, app: Services, default_queue: str | None = None) -> dict[str, Any]: ...


def to_link(app: Services, job: Any, queue: str | None = None) -> Link:
    if isinstance(job, AsSpec):
        return {"batch": job.spec(app, default_queue=queue)}
    if not isinstance(job, Job):
        raise ConfigurationError("a chain cannot contain a chain; list its jobs in this one")
    link: Link = {"job": type(job).job_name, "payload": job.model_dump(mode="json")}
    if queue:
        link["queue"] = queue
    return link


def to_job(registry: Registry, link: Link) -> Job:
    """The job a link names, validated again by its model (a renamed job resolves by alias)."""
    job: Job = registry.get(link["job"]).model_validate(link["payload"])
    return job


def link_id(chain_id: str, pos: int) -> str:
    """Link ids are derived, so a link sent twice after a crash is recognisably the same job."""
    return str(uuid.uuid5(uuid.UUID(chain_id), f"link:{pos}"))


def callback_id(key: tuple[str, str]) -> str:
    """A callback's id derives from its dispatch-once key: even a duplicate send is the same job."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sqsjobs:{key[0]}/{key[1]}"))


def check_item_size(value: Any, what: str) -> None:
    """Refuse at dispatch what the batch's DynamoDB item could not hold later, in a worker."""
    size = len(json.dumps(value))
    if size > _ITEM_BUDGET:
        raise ConfigurationError(
            f"a batch would store {what} ({size} bytes) on its DynamoDB item, over the 400 KB item limit; "
            "pass references (ids, S3 keys) in those jobs instead of data"
        )

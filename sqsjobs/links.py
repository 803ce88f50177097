"""Links: a job as data inside a chain or a batch (name + payload), and the ids derived from them.

A chain carries the rest of its links, and a batch record its callbacks, as JSON; a link becomes a
job again only when its turn comes, validated by its registered class (a renamed job resolves by
alias). Ids derive from positions, so a link sent twice after a crash is the same job.

The payload of a link of an encrypted job class (`encrypted = True`) is sealed wherever it rests:
in a message (`dispatch_plan.seal`, bound to the message) and in a batch record (`seal_at_rest`,
bound to the batch id and the field). Links that name no encrypted class load no encryption code.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .envelope import has_sealed
from .errors import ConfigurationError, DispatchError
from .job_class import Job
from .payload_fields import load

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
    job: Job = load(registry.get(link["job"]), link["payload"])
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


# -- encrypted job classes --------------------------------------------------------------------------
def encrypted_names(registry: Registry) -> Callable[[str], bool]:
    """Whether a name is registered to a job class that encrypts its payload."""

    def is_encrypted(name: str) -> bool:
        return name in registry and bool(getattr(registry.get(name), "encrypted", False))

    return is_encrypted


def names_encrypted(value: Any, is_encrypted: Callable[[str], bool]) -> bool:
    """Whether links (a chain, nested batches, callbacks) name a job of an encrypted class anywhere."""
    if isinstance(value, list):
        return any(names_encrypted(item, is_encrypted) for item in value)
    if isinstance(value, dict):
        if isinstance(value.get("job"), str) and is_encrypted(value["job"]):
            return True
        return any(names_encrypted(item, is_encrypted) for key, item in value.items() if key != "payload")
    return False


def at_rest(batch_id: str, field: str) -> str:
    """What links kept in a batch record are bound to: the batch and its field (`then`, `continuation`)."""
    return f"batch#{batch_id}/{field}"


def seal_at_rest(app: Services, value: Any, carrier: str) -> Any:
    """`value` (a link, a chain's state) as a batch record keeps it: a copy with the payload of every
    link of an encrypted class sealed, bound to `carrier` (`at_rest`). `value` itself when it names no
    encrypted class, or when the record never leaves the process (an inline connection's memory store).

    Raises ConfigurationError without SQSJOBS_KMS_KEY, DispatchError when KMS refuses or cannot be
    reached: nothing is stored in plain text.
    """
    is_encrypted = encrypted_names(app.registry)
    if not names_encrypted(value, is_encrypted) or _in_process(app):
        return value
    from botocore.exceptions import BotoCoreError, ClientError

    from .encryption import seal_links  # only apps that encrypt load it

    try:
        return seal_links(app.encryptor, value, carrier, is_encrypted)
    except (ClientError, BotoCoreError) as exc:
        raise DispatchError(
            f"{carrier}: a job of an encrypted class could not be encrypted with SQSJOBS_KMS_KEY="
            f"{app.settings.kms_key} ({exc}); check that this role may call kms:GenerateDataKey on it; the batch "
            "was not stored and nothing was sent"
        ) from exc


def open_at_rest(app: Services, value: Any, carrier: str) -> Any:
    """`seal_at_rest` undone, when its turn comes (`value` itself when nothing in it is sealed).

    Raises BadMessageError("undecryptable") or EncryptionUnavailable (sqsjobs.encryption).
    """
    if not has_sealed(value):
        return value
    from .encryption import open_links

    return open_links(app.encryptor, value, carrier)


def _in_process(app: Services) -> bool:
    """An inline connection (`sync`, `null`) with the memory store: like its bodies, its batch records
    never leave the process (and an app that only runs inline needs no KMS key)."""
    if not getattr(app.connection, "runs_inline", False):
        return False
    from .stores.memory import MemoryStore

    return isinstance(app.store, MemoryStore)

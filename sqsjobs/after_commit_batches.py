"""What the end of a held dispatch does to the batch its job is a member of (sqsjobs.after_commit).

A batch's record and total are written at dispatch, in DynamoDB, outside the database transaction;
only its members' send waits. So when the transaction ends, the batch must be made to agree with what
was sent: a rollback deletes a batch made inside the transaction (none of its jobs left it) and takes
the members added to any other batch out of its total; a commit whose send SQS partly refuses takes
the refused members out of the total, as a direct dispatch does (`flow.send_members`). Which batches a
hold made, and which members may leave a total, is noted when they are held (`flow.sending_members`),
never guessed from the counts later: a running batch whose other members all finished looks the same.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from . import batch_shards
from .batch_shards import meta
from .connections.base import OutgoingMessage
from .context import Services
from .dispatch_plan import Grouped
from .envelope import Envelope
from .flow import sending_members, shard_of, shrink_batch

log = logging.getLogger("sqsjobs.dispatch")

#: One held dispatch: the app it was made on, its logical queue, its envelope and its message.
Held = tuple[Services, str, Envelope, OutgoingMessage]


def note_members(grouped: Grouped, created: set[str], shrinkable: set[str]) -> None:
    """While `flow.send_members` sends: note the batch it made (`created`) and the members that leave its
    total when SQS refuses them (`shrinkable`: their job ids; not when the job that added them is
    retried instead, sending the same ids again)."""
    sending = sending_members.get()
    if sending is None:
        return
    ids = [env.id for entries in grouped.values() for env, _ in entries if env.batch_id == sending.batch_id]
    if not ids:
        return
    if sending.new:
        created.add(sending.batch_id)
    if sending.shrink_on_failure:
        shrinkable.update(ids)


def undo(items: Iterable[Held], created: set[str]) -> None:
    """A rollback dropped `items`: delete the batches made in the transaction, shrink the others."""
    lost: dict[tuple[int, str], tuple[Services, Counter[int | None]]] = {}
    for app, _, env, _ in items:
        if env.batch_id:
            lost.setdefault((id(app), env.batch_id), (app, Counter()))[1][shard_of(env)] += 1
    for (_, batch_id), (app, counts) in lost.items():
        try:
            if batch_id in created:
                _delete(app, batch_id)
            else:
                shrink_batch(app, batch_id, counts)
        except Exception:
            log.exception("batch %s: could not take out the members a rollback dropped", batch_id)


def shrink_unqueued(items: Iterable[Held], not_queued: list[tuple[str, str, str]], shrinkable: set[str]) -> None:
    """Members SQS refused at the commit will never finish: take them out of their batch's total."""
    refused = {job_id for job_id, _, _ in not_queued} & shrinkable
    lost: dict[tuple[int, str], tuple[Services, Counter[int | None]]] = {}
    for app, _, env, _ in items:
        if env.batch_id and env.id in refused:
            lost.setdefault((id(app), env.batch_id), (app, Counter()))[1][shard_of(env)] += 1
    for (_, batch_id), (app, counts) in lost.items():
        shrink_batch(app, batch_id, counts)  # logs what it cannot send; raises only for the store


def _delete(app: Services, batch_id: str) -> None:
    store = app.store
    item = store.get(meta(batch_id))
    if item is None:
        return
    shards = int(item.get("shards", 0))
    for partition in reversed(batch_shards.partitions(batch_id, shards)):
        for sk, _ in store.query(partition):
            if (partition, sk) != meta(batch_id):
                store.delete((partition, sk))
    store.delete(meta(batch_id))

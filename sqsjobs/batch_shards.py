"""A big batch's counters, spread over shards, so no single DynamoDB item takes every member's count.

DynamoDB serves at most 1,000 write units and 3,000 read units a second per partition key
(docs/scaling.md). A batch keeps one record (`batch#<id>` / `meta`); counting every finished member
on it — a transaction, 2 write units on each of its 2 items — caps a batch at ~250 finishes a second.
A batch of `SHARD_FROM` members or more (or one that asks, `PendingBatch.shards(n)`) spreads its members
over shards instead: member `i` belongs to shard `i % n`, and each shard is a partition key of its own:

| item | pk / sk |
| --- | --- |
| shard `k`'s counters | `batch#<id>#<k>` / `count`: `total`, `processed`, `failed`; `reported`, `settled` |
| a finished member of shard `k` | `batch#<id>#<k>` / `job#<member>` (as unsharded: outcome, job id, error) |
| an add by a job of shard `k` | `batch#<id>#<k>` / `add#<origin>` |
| shard `k` rolled up into the batch item (once) | `batch#<id>#<k>` / `rolled` |

A member's message carries its shard (`batch_shard`); its count goes to its shard only (the member
item and the counter in one transaction, as before: counted once whatever the redeliveries). A shard
whose members have all run is rolled up once into the batch item (`shards_done`, `shard_processed`,
`shard_failed`): N writes in all on the hot item. The batch has run when every shard is rolled up and
the batch item's own members (added from outside the batch's jobs) have run too. Its counts are the
batch item's own plus the sum of its shards, read when asked (one read per shard). A shard's first
failure is reported to the batch (`catch`, the cancel) before `reported` is set on the shard, and the
batch is settled after its roll-up before `settled` is: a redelivery after a crash redoes what was cut
short, a later one leaves the batch item alone (`sqsjobs.flow`).

The batch item keeps `total` = every member it was created with (`sharded` of them live in shards), so a
worker that knows nothing of shards never sees such a batch finish early.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .stores.base import Key, Store

#: The envelope field naming a member's shard.
FIELD = "batch_shard"
#: A batch is sharded by default from this many members on, one shard per this many ...
SHARD_FROM = 500
MEMBERS_PER_SHARD = 250
#: ... up to this many shards (a million members at 5,000 finishes/s: ~80 a second per shard).
MAX_SHARDS = 64
#: The most shards a batch may ask for (`PendingBatch.shards`); reading its counts reads each one.
SHARDS_LIMIT = 1000


def pk(batch_id: str) -> str:
    return f"batch#{batch_id}"


def meta(batch_id: str) -> Key:
    return (pk(batch_id), "meta")


def shard_pk(batch_id: str, shard: int) -> str:
    return f"batch#{batch_id}#{shard}"


def count_key(batch_id: str, shard: int) -> Key:
    return (shard_pk(batch_id, shard), "count")


def partitions(batch_id: str, shards: int) -> list[str]:
    """Every partition key a batch's items live under: the batch's own, then its shards'."""
    return [pk(batch_id), *(shard_pk(batch_id, k) for k in range(shards))]


def shards_for(members: int, asked: Any = None) -> int:
    """How many shards a batch of `members` gets: `asked` (1 = none), else by its size; never more
    shards than members. 1 means the batch item counts everything, as unsharded batches always did."""
    if asked is not None and (type(asked) is not int or not 1 <= asked <= SHARDS_LIMIT):
        raise ConfigurationError(f"a batch's shards must be a whole number from 1 to {SHARDS_LIMIT}, not {asked!r}")
    if asked is not None:
        wanted = int(asked)
    elif members >= SHARD_FROM:
        wanted = min(MAX_SHARDS, members // MEMBERS_PER_SHARD)
    else:
        wanted = 1
    return max(1, min(wanted, members))


def assign(members: int, shards: int) -> list[int]:
    """Each member's shard: member `i` in shard `i % shards` (the shards differ by one member at most)."""
    return [i % shards for i in range(members)]


def shard_of(value: Any) -> int | None:
    """The shard a message names (`FIELD`), or None (not a sharded batch's member, or not a shard)."""
    return int(value) if type(value) is int and 0 <= value < SHARDS_LIMIT else None


def create(store: Store, batch_id: str, placed: list[int], ttl: float) -> None:
    """Each shard's counters, its total = its members. Run again (a creating link redelivered), it
    changes nothing."""
    totals = Counter(placed)
    for shard in range(max(placed) + 1):
        store.add(count_key(batch_id, shard), {"total": totals[shard], "processed": 0, "failed": 0}, ttl)


def count(
    store: Store, batch_id: str, shard: int, member: str, marker: dict[str, Any], outcome: str, ttl: float
) -> dict[str, Any] | None:
    """Count a member's outcome in its shard (once per member), then the shard's counters as they are
    now (None: the shard, so the batch, no longer exists)."""
    key = count_key(batch_id, shard)
    store.add_and_count((shard_pk(batch_id, shard), f"job#{member}"), marker, key, {outcome: 1}, ttl)
    return store.get(key)


def add(store: Store, batch_id: str, shard: int, origin: str, members: int, ttl: float) -> bool:
    """Raise a shard's total for members added by a job of that shard, once per `origin`."""
    return store.add_and_count(
        (shard_pk(batch_id, shard), f"add#{origin}"),
        {"count": members},
        count_key(batch_id, shard),
        {"total": members},
        ttl,
    )


def done(state: dict[str, Any]) -> bool:
    """Every member of the shard has run (succeeded or failed)."""
    return int(state.get("processed", 0)) + int(state.get("failed", 0)) >= int(state.get("total", 0))


def roll_up(store: Store, batch_id: str, shard: int, state: dict[str, Any], ttl: float) -> bool:
    """Add a finished shard's outcomes to the batch item, once per shard. True if this call did."""
    processed, failed = int(state.get("processed", 0)), int(state.get("failed", 0))
    return store.add_and_count(
        (shard_pk(batch_id, shard), "rolled"),
        {"processed": processed, "failed": failed},
        meta(batch_id),
        {"shards_done": 1, "shard_processed": processed, "shard_failed": failed},
        ttl,
    )


def own(item: dict[str, Any]) -> tuple[int, int, int]:
    """The batch item's own members: (total, processed, failed) — all of them in an unsharded batch."""
    total = int(item.get("total", 0)) - int(item.get("sharded", 0))
    return total, int(item.get("processed", 0)), int(item.get("failed", 0))


def outcomes(item: dict[str, Any]) -> tuple[int, int]:
    """(processed, failed) the batch item knows of: its own members' and its rolled-up shards'."""
    processed = int(item.get("processed", 0)) + int(item.get("shard_processed", 0))
    return processed, int(item.get("failed", 0)) + int(item.get("shard_failed", 0))


def all_counted(item: dict[str, Any]) -> bool:
    """Every member has run: each shard is rolled up and the batch item's own members are counted."""
    total, processed, failed = own(item)
    return int(item.get("shards_done", 0)) >= int(item.get("shards", 0)) and processed + failed >= total


def sums(store: Store, batch_id: str, shards: int) -> tuple[int, int, int]:
    """(total, processed, failed) over a batch's shards: one read each."""
    total = processed = failed = 0
    for shard in range(shards):
        state = store.get(count_key(batch_id, shard)) or {}
        total += int(state.get("total", 0))
        processed += int(state.get("processed", 0))
        failed += int(state.get("failed", 0))
    return total, processed, failed

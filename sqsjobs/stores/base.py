"""The store protocol: a handful of atomic operations on expiring items.

Items are addressed by `(pk, sk)` and carry `expires_at` (epoch seconds, by the writer's clock).
DynamoDB deletes expired items lazily (hours to days later; moto never does),
so every operation treats an item whose `expires_at` has passed as absent.

"Passed" allows for clock skew: an item is live until its `expires_at` is more than `skew`
seconds behind *this* worker's clock. `expires_at` was computed by whichever worker wrote the item,
on its own clock; a worker whose clock runs up to `skew` seconds ahead of the writer's would
otherwise see a lock, claim or key expire up to `skew` seconds early and take it while its holder
still relies on it. Every operation — conditional writes and reads alike — judges liveness the same
way, so a caller that reads after a refused write (is it mine? is it done?) sees the item the write
saw. The price: an item outlives its ttl by up to `skew` for everyone (docs/coordination.md).
"""

from __future__ import annotations

from typing import Any, Protocol

Key = tuple[str, str]


class Store(Protocol):
    #: Seconds past its `expires_at` that an item is still live (the workers' clock skew).
    skew: float

    def add(self, key: Key, attrs: dict[str, Any], ttl: float) -> bool:
        """Create the item unless a live one exists; True if this call created it."""
        ...

    def get(self, key: Key) -> dict[str, Any] | None:
        """The live item's attributes (without pk/sk/expires_at), or None."""
        ...

    def put(self, key: Key, attrs: dict[str, Any], ttl: float) -> None:
        """Create or replace the item."""
        ...

    def delete(self, key: Key, *, owner: str | None = None) -> bool:
        """Delete the item — only if its `owner` attribute equals `owner`, when given."""
        ...

    def incr(self, key: Key, by: int, ttl: float, *, limit: int | None = None) -> int | None:
        """Add `by` to the item's counter, starting at 0 when absent or expired (new ttl).

        Returns the new value, or None (and changes nothing) when it would exceed `limit`.
        The ttl is set when the counter starts, so a counter is a fixed window.
        """
        ...

    def add_and_count(
        self, marker: Key, attrs: dict[str, Any], counter: Key, deltas: dict[str, int], ttl: float
    ) -> bool:
        """Create `marker` unless a live one exists *and* add `deltas` to the live `counter` item's
        fields — both or neither, atomically. True if this call did it.

        This is what makes a counter exact under at-least-once delivery: the marker names
        the thing counted, so a redelivery finds it and counts nothing.
        """
        ...

    def update(
        self, key: Key, *, set: dict[str, Any] | None = None, add: dict[str, int] | None = None, unless: str = ""
    ) -> dict[str, Any] | None:
        """Change a live item (set fields, add to counters) and return all its attributes after.

        None (and nothing changed) when the item is absent or expired, or when `unless`
        names a field the item already has — a change that happens once, whoever races.
        """
        ...

    def query(
        self, pk: str, *, limit: int | None = None, newest_first: bool = False, consistent: bool = True
    ) -> list[tuple[str, dict[str, Any]]]:
        """Every live item of a partition as (sk, attributes), in sk order (descending with `newest_first`).

        `limit`: read at most that many items (one request; expired ones among them are then left out).
        `consistent=False` halves a DynamoDB read's cost where a write of the last second may be missed.
        """
        ...

    def scan(self, pk_prefix: str, sk: str) -> list[tuple[str, dict[str, Any]]]:
        """Every live item whose pk starts with `pk_prefix` and whose sk is `sk`, as (pk, attributes).

        A full-table read on DynamoDB: for admin commands (`sqsjobs batches list`), never a hot path.
        """
        ...

    def scan_at_most(self, pk_prefix: str, sk: str, items: int) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """`scan`, reading at most `items` items of the table (matching or not), and whether that was all of
        it: a bounded look for a page people open (the dashboard), eventually consistent."""
        ...

"""How hot does a batch's hottest DynamoDB item get? A simulation on the memory store (docs/scaling.md).

DynamoDB serves at most 1,000 write units and 3,000 read units a second per partition key ("Best
practices for designing and using partition keys effectively in DynamoDB"): a write costs 1 unit per KB
of the item, a refused conditional write too, each item of a transaction twice that; a consistent read
1 unit per 4 KB. `Meter` charges every store call that way, per partition key and simulated second,
while the members of a batch finish at 5,000 a second on a movable clock, through the flow functions
the workers call (`flow.succeeded` / `flow.failed`), out of order and with duplicate deliveries.

A batch's per-item rates depend on the finishing rate and its shard count alone, not on its size: a
16,000-member batch gets the 64 shards a million-member one gets, so 3.2 simulated seconds of it show
the rates of the million's 200 seconds. The million itself is then replayed in aggregate with the
write units per finish measured here.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

from sqsjobs import App, Job, batch, flow
from sqsjobs.batch_shards import shards_for
from sqsjobs.envelope import Envelope, decode
from sqsjobs.stores.base import Key
from sqsjobs.stores.memory import MemoryStore
from tests.helpers import FakeClock

RATE = 5_000  # members finishing per second
#: Members of the big simulation: 16,000 in `make test`; SQSJOBS_SIM_MEMBERS=1000000 runs the million itself
#: (minutes and a few GB; docs/scaling.md says what it gave). At least 16,000: fewer get fewer than 64 shards.
MEMBERS = int(os.environ.get("SQSJOBS_SIM_MEMBERS", "16000"))
WRITE_UNITS = 1_000  # per partition key per second
READ_UNITS = 3_000


class Row(Job, name="sim.row"):
    n: int

    def handle(self) -> None:  # never run: the simulation calls what runs after it
        pass


class Report(Job, name="sim.report"):
    kind: str


class Meter:
    """The memory store, charged per partition key and simulated second as DynamoDB would charge."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.inner = MemoryStore(clock)
        self.skew = self.inner.skew
        self.clock = clock
        self.writes: Counter[tuple[int, str]] = Counter()
        self.reads: Counter[tuple[int, str]] = Counter()

    def _size(self, key: Key, attrs: dict[str, Any] | None = None) -> int:
        attrs = attrs if attrs is not None else (self.inner._live(key) or {})
        return len(key[0]) + len(key[1]) + len(json.dumps(attrs))

    def _write(self, key: Key, attrs: dict[str, Any] | None = None, times: int = 1) -> None:
        self.writes[(int(self.clock()), key[0])] += times * max(1, math.ceil(self._size(key, attrs) / 1024))

    def _read(self, pk: str, size: int) -> None:
        self.reads[(int(self.clock()), pk)] += max(1, math.ceil(size / 4096))

    def add(self, key: Key, attrs: dict[str, Any], ttl: float) -> bool:
        self._write(key, attrs)
        return self.inner.add(key, attrs, ttl)

    def put(self, key: Key, attrs: dict[str, Any], ttl: float) -> None:
        self._write(key, attrs)
        self.inner.put(key, attrs, ttl)

    def get(self, key: Key) -> dict[str, Any] | None:
        self._read(key[0], self._size(key))
        return self.inner.get(key)

    def delete(self, key: Key, *, owner: str | None = None) -> bool:
        self._write(key)
        return self.inner.delete(key, owner=owner)

    def incr(self, key: Key, by: int, ttl: float, *, limit: int | None = None) -> int | None:
        self._write(key)
        return self.inner.incr(key, by, ttl, limit=limit)

    def add_and_count(
        self, marker: Key, attrs: dict[str, Any], counter: Key, deltas: dict[str, int], ttl: float
    ) -> bool:
        self._write(marker, attrs, times=2)
        self._write(counter, times=2)
        return self.inner.add_and_count(marker, attrs, counter, deltas, ttl)

    def update(
        self, key: Key, *, set: dict[str, Any] | None = None, add: dict[str, int] | None = None, unless: str = ""
    ) -> dict[str, Any] | None:
        self._write(key)
        return self.inner.update(key, set=set, add=add, unless=unless)

    def query(self, pk: str) -> list[tuple[str, dict[str, Any]]]:
        found = self.inner.query(pk)
        self._read(pk, sum(self._size((pk, sk), attrs) for sk, attrs in found))
        return found

    def scan(self, pk_prefix: str, sk: str) -> list[tuple[str, dict[str, Any]]]:
        return self.inner.scan(pk_prefix, sk)

    def hottest(self, units: Counter[tuple[int, str]]) -> tuple[int, str]:
        """(units, partition key) of the busiest partition key in its busiest simulated second."""
        (_, pk), most = max(units.items(), key=lambda item: item[1])
        return most, pk


class Simulation:
    """A batch whose members finish at RATE a second, in a shuffled order, some delivered twice."""

    reports: ClassVar[tuple[str, ...]] = ("then", "catch", "finally")

    def __init__(self, members: int, *, shards: int | None = None, failing: frozenset[int] = frozenset()) -> None:
        self.clock = FakeClock()
        self.app = App(connection="memory", clock=self.clock)
        self.store = Meter(self.clock)
        self.app.store = self.store
        self.failing = failing
        with self.app.activate():
            pending = batch([Row(n=i) for i in range(members)]).allow_failures()
            for kind in self.reports:
                getattr(pending, "finally_" if kind == "finally" else kind)(Report(kind=kind))
            if shards is not None:
                pending.shards(shards)
            self.batch = pending.dispatch(self.app)
        received = self.app.connection.receive("default", members + 1, 0)
        self.envelopes = [decode(m.body) for m in received]
        assert len(self.envelopes) == members
        # Gone from the queue, as the workers' deletes would take them: a million take 200 simulated seconds,
        # past the visibility, and `sent()` would otherwise find members there beside the callbacks.
        assert self.app.connection.delete("default", received) == []

    def run(self, duplicates: float = 0.02, seed: int = 5, limit: int | None = None) -> None:
        rng = random.Random(seed)
        stream: list[Envelope] = self.envelopes + rng.sample(self.envelopes, int(len(self.envelopes) * duplicates))
        rng.shuffle(stream)
        for envelope in stream[:limit]:
            self.clock.now += 1 / RATE
            if envelope.payload["n"] in self.failing:
                flow.failed(self.app, envelope, RuntimeError("row refused"))
            else:
                flow.succeeded(self.app, envelope)

    def sent(self) -> Counter[str]:
        """The callbacks sent, by kind."""
        messages = self.app.connection.receive("default", 100, 0)
        return Counter(decode(m.body).payload["kind"] for m in messages)


def test_a_million_member_batch_at_5000_a_second_keeps_every_partition_under_dynamodbs_limits() -> None:
    assert shards_for(MEMBERS) == shards_for(1_000_000) == 64, "the same shards, so the same per-item rates"
    failing = frozenset(range(7, MEMBERS, 211))
    sim = Simulation(MEMBERS, failing=failing)
    sim.store.writes.clear()  # creating the batch is not what is measured
    sim.run()

    found = sim.batch.fresh()
    assert (found.shards, found.total, found.processed, found.failed, found.pending) == (
        64,
        MEMBERS,
        MEMBERS - len(failing),
        len(failing),
        0,
    )
    assert found.finished and not found.cancelled
    assert sim.sent() == Counter({"catch": 1, "finally": 1}), "each once; `then` never (members failed)"
    most, pk = sim.store.hottest(sim.store.writes)
    assert most < WRITE_UNITS / 2, f"{pk} took {most} write units in one second"
    most_read, pk_read = sim.store.hottest(sim.store.reads)
    assert most_read < READ_UNITS / 2, f"{pk_read} took {most_read} read units in one second"
    meta = f"batch#{found.id}"
    on_meta = sum(units for (_, pk), units in sim.store.writes.items() if pk == meta)
    assert on_meta < 64 * 12, f"the batch item's partition took {on_meta} write units in all"

    # The million, in aggregate: its members finish in a random order at RATE a second, member i in
    # shard i % 64, each finish costing its shard's partition what it cost here.
    per_finish = sum(units for (_, pk), units in sim.store.writes.items() if pk != meta) / (MEMBERS * 1.02)
    order = list(range(1_000_000))
    random.Random(11).shuffle(order)
    per_second = Counter((at // RATE, member % 64) for at, member in enumerate(order))
    assert per_finish * max(per_second.values()) < WRITE_UNITS / 2


def test_a_big_batch_whose_members_all_succeed_sends_then_and_finally_once() -> None:
    sim = Simulation(2_000)
    sim.run(duplicates=0.05)
    found = sim.batch.fresh()
    assert (found.shards, found.total, found.processed, found.failed, found.finished) == (8, 2_000, 2_000, 0, True)
    assert sim.sent() == Counter({"then": 1, "finally": 1})


def test_the_hot_item_without_shards_takes_every_count() -> None:
    """The layout every batch had before shards, for one simulated second at the same rate."""
    sim = Simulation(RATE, shards=1)
    sim.store.writes.clear()
    sim.run(limit=RATE)
    most, pk = sim.store.hottest(sim.store.writes)
    assert pk == f"batch#{sim.batch.id}" and most > 10 * WRITE_UNITS, f"{pk}: {most} write units in one second"

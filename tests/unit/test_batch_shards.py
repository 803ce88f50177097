"""Sharded batches: a big batch's counters spread over items of their own (sqsjobs.batch_shards),
on SQS and DynamoDB (moto in-process) unless a test says otherwise. docs/scaling.md says why.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from sqsjobs import (
    App,
    ConfigurationError,
    DispatchError,
    Job,
    PermanentError,
    Postpone,
    Release,
    SkipIfBatchCancelled,
    aws,
    batch,
    chain,
    find_batch,
)
from sqsjobs.batch_shards import count, count_key, roll_up, shard_of, shards_for
from sqsjobs.batches import list_batches, prune_batches
from sqsjobs.envelope import Envelope, decode
from sqsjobs.flow import BATCH_TTL_S, record, record_member
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions


class Journal(Job, abstract=True):
    runs: ClassVar[list[tuple[str, Any]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def write(self, what: Any = None) -> None:
        with Journal.lock:
            Journal.runs.append((type(self).job_name, what))


def ran(name: str) -> list[Any]:
    return [what for job, what in Journal.runs if job == name]


class Part(Journal, name="shards.part"):
    n: int
    broken: bool = False

    def handle(self) -> None:
        self.write(self.n)
        if self.broken:
            raise PermanentError(f"part {self.n} broke")


class Done(Journal, name="shards.then"):
    label: str = ""

    def handle(self) -> None:
        found = self.batch
        assert found is not None
        self.write((self.label, found.total, found.processed, found.failed))


class Caught(Journal, name="shards.catch"):
    def handle(self) -> None:
        self.write()


class Last(Journal, name="shards.finally"):
    def handle(self) -> None:
        self.write()


class AddsTwice(Journal, name="shards.adds-twice"):
    backoff = 0

    def handle(self) -> None:
        assert self.batch is not None
        self.batch.add([Part(n=100), Part(n=101)])
        self.batch.add([Part(n=102)])
        self.write(self.attempts)
        if self.attempts == 1:
            raise ConnectionError("lost the database after adding")


class Stopping(Journal, name="shards.stopping"):
    n: int

    def middleware(self) -> list[Any]:
        return [SkipIfBatchCancelled()]

    def handle(self) -> None:
        first = not ran("shards.stopping")  # whichever SQS delivers first
        self.write(self.n)
        if first:
            assert self.batch is not None
            self.batch.cancel()


@pytest.fixture(autouse=True)
def clean_journal() -> Iterator[None]:
    Journal.runs = []
    yield


@pytest.fixture
def app(moto: None, prefix: str) -> Iterator[App]:
    """SQS queues and the DynamoDB table, as production has them."""
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], table=f"{prefix}table", visibility_timeout=30)
    provision(app, ["default"], bucket=False)
    with app.activate():
        yield app


def work(app: App) -> None:
    assert Worker(app, WorkerOptions(sleep=1, concurrency=1, stop_when_empty=True)).run(install_signals=False) == 0


def process_shuffled(app: App, redeliver: set[int] = frozenset(), seed: int = 13) -> Counter[str]:  # type: ignore[assignment]
    """Run every message through the core in a shuffled order; a Part whose `n` is in `redeliver` is
    made visible again after its first run (the crash-before-delete case), so it is settled twice."""
    rng = random.Random(seed)
    runs: Counter[str] = Counter()
    redelivered: set[int] = set()
    empty_looks = 0
    while empty_looks < 2:
        messages = []
        while got := app.connection.receive("default", 10, 0):
            messages.extend(got)
        empty_looks = 0 if messages else empty_looks + 1
        rng.shuffle(messages)
        for message in messages:
            envelope = decode(message.body)
            runs[envelope.job] += 1
            decision = app.runner.process(message)
            n = envelope.payload.get("n")
            if envelope.job == "shards.part" and n in redeliver and n not in redelivered:
                redelivered.add(n)
                app.connection.change_visibility("default", [(message, 0)])
            elif isinstance(decision, Release | Postpone):
                app.connection.change_visibility("default", [(message, 0)])
            else:
                app.connection.delete("default", [message])
    return runs


def table_writes() -> Counter[tuple[str, str]]:
    """Write units each item of the table takes from now on: 1 a write, 2 an item of a transaction."""
    seen: Counter[tuple[str, str]] = Counter()

    def key(k: dict[str, Any]) -> tuple[str, str]:
        return (k["pk"]["S"], k["sk"]["S"])

    def single(params: dict[str, Any], **_: Any) -> None:
        seen[key(params.get("Key") or params["Item"])] += 1

    def transaction(params: dict[str, Any], **_: Any) -> None:
        for item in params["TransactItems"]:
            (action,) = item.values()
            seen[key(action.get("Key") or action["Item"])] += 2

    events = aws.client("dynamodb").meta.events
    for action in ("PutItem", "UpdateItem", "DeleteItem"):
        events.register(f"provide-client-params.dynamodb.{action}", single)
    events.register("provide-client-params.dynamodb.TransactWriteItems", transaction)
    return seen


def items_of(app: App, batch_id: str) -> list[tuple[str, str]]:
    found = aws.client("dynamodb").scan(TableName=app.settings.table, ConsistentRead=True)["Items"]
    return sorted((i["pk"]["S"], i["sk"]["S"]) for i in found if i["pk"]["S"].startswith(f"batch#{batch_id}"))


# -- the layout ----------------------------------------------------------------------------------
def test_batches_are_sharded_by_size_from_500_members_and_may_ask_for_a_count() -> None:
    assert [shards_for(n) for n in (0, 1, 499, 500, 1_000, 16_000, 1_000_000)] == [1, 1, 1, 2, 4, 64, 64]
    assert shards_for(10, 8) == 8 and shards_for(3, 8) == 3, "never more shards than members"
    assert shards_for(1_000_000, 200) == 200
    for wrong in (0, -1, 1001, 2.0, "8", True):
        with pytest.raises(ConfigurationError):
            batch([Part(n=1)]).shards(wrong)  # type: ignore[arg-type]
    # What a message names is trusted only when it is a shard number.
    assert [shard_of(v) for v in (0, 7, -1, 1000, "3", 2.0, True, None)] == [0, 7, None, None, None, None, None, None]


def test_a_sharded_batch_completed_out_of_order_with_duplicates_counts_exactly_and_sends_then_once(app: App) -> None:
    writes = table_writes()
    # 80 members over 8 shards (moto copies the whole table in every transaction: 200 members took 15 s).
    members, shards = 80, 8
    created = (
        batch([Part(n=i) for i in range(members)])
        .shards(shards)
        .then(Done(label="all"))
        .finally_(Last())
        .name("big")
        .dispatch()
    )
    assert (created.shards, created.total, created.pending) == (shards, members, members)

    again = set(range(0, members, 7))
    runs = process_shuffled(app, redeliver=again)

    assert runs["shards.part"] == members + len(again) and sorted(ran("shards.part")) == list(range(members))
    found = find_batch(created.id)
    assert found is not None
    assert (found.total, found.processed, found.failed, found.pending, found.progress) == (members, members, 0, 0, 100)
    assert found.finished and not found.cancelled
    assert ran("shards.then") == [("all", members, members, 0)] and len(ran("shards.finally")) == 1
    # Every member's count went to its shard: the batch item took its creation, the 8 roll-ups (2 units
    # each, in a transaction) and `finished_at` -- not 80 counts and the redeliveries' refused ones.
    key = f"batch#{created.id}"
    assert writes[(key, "meta")] == 1 + 2 * shards + 1
    # A shard's counter: 2 units per count (redeliveries' refused ones too) and its two marks.
    redelivered = Counter(i % shards for i in again)
    for shard in range(shards):
        assert writes[(f"{key}#{shard}", "count")] <= 1 + 2 * (members // shards + redelivered[shard]) + 2
    items = items_of(app, created.id)
    assert not [sk for pk, sk in items if pk == key and sk.startswith("job#")]
    assert len([sk for pk, sk in items if sk.startswith("job#")]) == members
    totals = [app.store.get(count_key(created.id, k)) for k in range(shards)]
    assert [t["total"] for t in totals if t] == [members // shards] * shards


def test_a_failure_in_a_sharded_batch_cancels_it_and_sends_catch_once(app: App) -> None:
    failing = {3, 17, 30}
    created = (
        batch([Part(n=i, broken=i in failing) for i in range(40)])
        .shards(4)
        .then(Done())
        .catch(Caught())
        .finally_(Last())
        .dispatch()
    )
    process_shuffled(app)
    found = created.fresh()
    assert (found.total, found.processed, found.failed) == (40, 37, 3)
    assert found.cancelled and found.finished
    assert len(ran("shards.catch")) == 1 and ran("shards.then") == [] and len(ran("shards.finally")) == 1
    dead = {str(uuid_of(created.id, i)) for i in failing}
    assert set(found.failed_job_ids()) == dead, "failed ids are found across the shards"


def uuid_of(batch_id: str, index: int) -> str:
    import uuid

    return str(uuid.uuid5(uuid.UUID(batch_id), str(index)))


def test_a_job_of_a_sharded_batch_adds_to_its_own_shard_once_even_when_it_runs_again(app: App) -> None:
    created = batch([AddsTwice(), *[Part(n=i) for i in range(5)]]).shards(3).then(Done(label="added")).dispatch()
    process_shuffled(app)
    assert ran("shards.adds-twice") == [1, 2]
    assert sorted(set(ran("shards.part"))) == [0, 1, 2, 3, 4, 100, 101, 102]
    found = created.fresh()
    assert (found.total, found.processed, found.failed, found.finished) == (9, 9, 0, True)
    assert ran("shards.then") == [("added", 9, 9, 0)]
    adds = [(pk, sk) for pk, sk in items_of(app, created.id) if sk.startswith("add#")]
    assert len(adds) == 2 and all(pk == f"batch#{created.id}#0" for pk, _ in adds), "in the adder's shard"


def test_an_add_from_outside_a_sharded_batch_is_counted_on_the_batch_item(app: App) -> None:
    created = batch([Part(n=i) for i in range(6)]).shards(3).then(Done(label="then")).dispatch()
    created.add([Part(n=50), Part(n=51)])
    assert created.total == 8
    work(app)
    found = created.fresh()
    assert (found.total, found.processed, found.finished) == (8, 8, True)
    assert ran("shards.then") == [("then", 8, 8, 0)]


def test_a_chain_inside_a_sharded_batch_carries_its_shard_to_every_link(app: App) -> None:
    created = (
        batch([[Part(n=1), Part(n=2), Part(n=3)], [Part(n=4), Part(n=5)], Part(n=6)]).shards(3).then(Done()).dispatch()
    )
    seen: list[Any] = []
    original = app.runner.process

    def spy(message: Any) -> Any:
        seen.append(decode(message.body).extra.get("batch_shard"))
        return original(message)

    app.runner.process = spy  # type: ignore[method-assign]
    process_shuffled(app)
    assert sorted(ran("shards.part")) == [1, 2, 3, 4, 5, 6]
    assert sorted(s for s in seen if s is not None) == [0, 0, 0, 1, 1, 2]
    found = created.fresh()
    assert (found.total, found.processed, found.finished) == (3, 3, True) and len(ran("shards.then")) == 1


def test_a_sharded_batch_in_a_chain_holds_the_rest_of_the_chain_until_it_finishes(app: App) -> None:
    chain([Part(n=0), batch([Part(n=i) for i in range(1, 7)]).shards(3), Part(n=99)]).dispatch()
    work(app)
    assert ran("shards.part")[0] == 0 and ran("shards.part")[-1] == 99
    assert sorted(ran("shards.part")) == [0, 1, 2, 3, 4, 5, 6, 99]
    (created,) = list_batches()
    assert (created.shards, created.total, created.processed, created.finished) == (3, 6, 6, True)


def test_cancelling_a_sharded_batch_stops_the_jobs_not_yet_run(app: App) -> None:
    created = batch([Stopping(n=i) for i in range(1, 9)]).shards(4).then(Done()).finally_(Last()).dispatch()
    work(app)
    # One job at a time: the first to run cancels, and none of the other seven runs.
    assert len(ran("shards.stopping")) == 1
    found = created.fresh()
    assert found.cancelled and found.finished and (found.processed, found.failed) == (8, 0)
    assert ran("shards.then") == [] and len(ran("shards.finally")) == 1


def test_members_not_queued_are_taken_out_of_their_shards_totals(app: App) -> None:
    def refuse_some(params: dict[str, Any], **_: Any) -> None:
        for entry in params.get("Entries", []):
            if '"n":5,' in entry["MessageBody"] or '"n":6,' in entry["MessageBody"]:
                entry["DelaySeconds"] = 901  # SQS rejects this entry (and only it) as the sender's fault

    aws.client("sqs").meta.events.register("provide-client-params.sqs.SendMessageBatch", refuse_some)
    with pytest.raises(DispatchError):
        batch([Part(n=i) for i in range(8)]).shards(4).then(Done(label="then")).dispatch()
    (found,) = list_batches()
    assert (found.total, found.pending) == (6, 6)
    work(app)
    found = found.fresh()
    assert (found.total, found.processed, found.finished) == (6, 6, True)
    assert ran("shards.then") == [("then", 6, 6, 0)]


def envelopes(app: App) -> list[tuple[Any, Envelope]]:
    messages = []
    while got := app.connection.receive("default", 10, 0):
        messages.extend(got)
    return [(m, decode(m.body)) for m in messages]


def test_the_last_shards_rolled_up_at_once_send_then_once_on_dynamodb(app: App) -> None:
    """The race, one step at a time: both shards are counted and rolled up before either member
    looks at the batch, so both see it finished; the dispatch-once mark lets one of them send."""
    created = batch([Part(n=1), Part(n=2)]).shards(2).then(Done(label="raced")).dispatch()
    pairs = envelopes(app)
    assert sorted(shard_of(e.extra.get("batch_shard")) for _, e in pairs) == [0, 1]
    marker = {"outcome": "processed"}
    for _, envelope in pairs:
        shard = shard_of(envelope.extra["batch_shard"])
        assert shard is not None
        state = count(app.store, created.id, shard, envelope.id, marker, "processed", BATCH_TTL_S)
        assert state is not None and roll_up(app.store, created.id, shard, state, BATCH_TTL_S)
    for _, envelope in pairs:  # ... then both settle
        record(app, envelope, succeeded=True)
    sends = [m for m in app.connection.receive("default", 10, 0) if decode(m.body).job == "shards.then"]
    assert len(sends) == 1
    assert (created.fresh().processed, created.fresh().finished) == (2, True)


def test_a_member_counted_before_a_crash_is_rolled_up_and_settled_by_its_redelivery(app: App) -> None:
    created = batch([Part(n=1), Part(n=2), Part(n=3)]).shards(2).then(Done(label="once")).dispatch()
    pairs = envelopes(app)
    for _, envelope in pairs[:-1]:
        record(app, envelope, succeeded=True)
    _, last = pairs[-1]
    shard = shard_of(last.extra["batch_shard"])
    assert shard is not None
    # The worker counted the last member, then died before it rolled its shard up.
    count(app.store, created.id, shard, last.id, {"outcome": "processed"}, "processed", BATCH_TTL_S)
    assert not created.fresh().finished
    record(app, last, succeeded=True)  # the redelivery
    record(app, last, succeeded=True)  # and one more
    found = created.fresh()
    assert (found.total, found.processed, found.failed, found.finished) == (3, 3, 0, True)
    sends = [m for m in app.connection.receive("default", 10, 0) if decode(m.body).job == "shards.then"]
    assert len(sends) == 1


def test_a_batch_record_written_before_shards_is_counted_and_finished_as_before() -> None:
    """A record from before shards has no `shards`, and its members' messages name none."""
    app = App(connection="memory", store="memory")
    with app.activate():
        app.store.add(
            ("batch#00000000-0000-4000-8000-000000000001", "meta"),
            {"name": "old", "total": 2, "processed": 0, "failed": 0, "created_at": "2026-01-01T00:00:00+00:00"},
            ttl=3600,
        )
        old = "00000000-0000-4000-8000-000000000001"
        found = find_batch(old)
        assert found is not None and (found.shards, found.total, found.pending) == (0, 2, 2)
        record_member(app, old, "m1", "m1", "shards.part", True, "m1")
        record_member(app, old, "m1", "m1", "shards.part", True, "m1")
        record_member(app, old, "m2", "m2", "shards.part", False, "m2", "broke")
        found = find_batch(old)
        assert found is not None and (found.total, found.processed, found.failed, found.finished) == (2, 1, 1, True)
        assert found.failed_job_ids() == ["m2"]


def test_reading_whether_a_sharded_batch_is_cancelled_reads_one_item_and_its_counts_one_more_per_shard() -> None:
    app = App(connection="memory", store="memory")
    with app.activate():
        created = batch([Part(n=i) for i in range(10)]).shards(5).dispatch()
        store = app.store
        before = store.calls  # type: ignore[attr-defined]
        found = find_batch(created.id)
        assert found is not None and not found.cancelled
        assert store.calls - before == 1, "what `SkipIfBatchCancelled` reads, per job"  # type: ignore[attr-defined]
        assert (found.total, found.processed, found.pending) == (10, 0, 10)
        assert store.calls - before == 1 + 5  # type: ignore[attr-defined]


def test_prune_removes_every_shard_of_a_batch(app: App) -> None:
    created = batch([Part(n=i, broken=i == 4) for i in range(12)]).shards(3).allow_failures().dispatch()
    work(app)
    found = created.fresh()
    assert (found.processed, found.failed, found.finished) == (11, 1, True)
    assert len(found.failed_job_ids()) == 1
    assert {pk for pk, _ in items_of(app, created.id)} == {
        f"batch#{created.id}",
        *(f"batch#{created.id}#{k}" for k in range(3)),
    }
    assert prune_batches(finished_hours=0) == 1
    assert items_of(app, created.id) == []

"""One contract, two stores: DynamoDB (on moto) and memory must behave the same, expiry included.

Time comes from a fake clock, so expiry is tested without waiting — and DynamoDB's
lazy TTL (moto never expires at all) is exactly the case: an expired item is still
in the table, and every operation must treat it as absent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sqsjobs import App
from sqsjobs.errors import SqsJobsError
from sqsjobs.provisioning import provision
from sqsjobs.stores import MemoryStore, Store
from sqsjobs.stores.dynamodb import DynamoDbStore
from tests.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore(clock)
        return
    request.getfixturevalue("moto")
    provision(App(connection="sqs"), [], table=True, bucket=False)
    yield DynamoDbStore("sqsjobs", clock=clock)


def test_add_creates_once_while_live_and_again_after_expiry(store: Store, clock: FakeClock) -> None:
    key = ("lock", "a")
    assert store.add(key, {"owner": "w1"}, ttl=10) is True
    assert store.add(key, {"owner": "w2"}, ttl=10) is False
    assert store.get(key) == {"owner": "w1"}
    clock.now += 11
    assert store.get(key) is None, "an expired item is absent even while it is still stored"
    assert store.add(key, {"owner": "w2"}, ttl=10) is True
    assert store.get(key) == {"owner": "w2"}


def test_delete_checks_the_owner(store: Store, clock: FakeClock) -> None:
    key = ("lock", "b")
    store.add(key, {"owner": "w1"}, ttl=10)
    assert store.delete(key, owner="w2") is False
    assert store.get(key) == {"owner": "w1"}
    assert store.delete(key, owner="w1") is True
    assert store.get(key) is None
    assert store.delete(key) is False
    store.add(key, {"owner": "w1"}, ttl=10)
    clock.now += 11
    assert store.delete(key, owner="w1") is False, "an expired lock is not ours to release any more"


def test_put_replaces_and_restarts_the_ttl(store: Store, clock: FakeClock) -> None:
    key = ("idem", "k")
    store.put(key, {"status": "in_progress"}, ttl=5)
    clock.now += 4
    store.put(key, {"status": "completed", "result": 3}, ttl=5)
    clock.now += 4
    assert store.get(key) == {"status": "completed", "result": 3}


def test_incr_counts_in_fixed_windows_and_refuses_past_the_limit(store: Store, clock: FakeClock) -> None:
    key = ("rate", "api")
    assert [store.incr(key, 1, ttl=1, limit=3) for _ in range(5)] == [1, 2, 3, None, None]
    clock.now += 1.5
    assert store.incr(key, 1, ttl=1, limit=3) == 1, "a new window starts from zero"
    assert store.incr(("exc", "j"), 1, ttl=60) == 1
    assert store.incr(("exc", "j"), 1, ttl=60) == 2


@pytest.fixture
def atomic_store(clock: FakeClock) -> Store:
    """The memory store: atomic, as DynamoDB's conditional writes are.

    moto's DynamoDB does not serialise requests, so two threads can both pass one
    condition there; racing it would test moto, not us. The conditions themselves are
    checked on moto by the tests above; atomicity is DynamoDB's guarantee.
    """
    return MemoryStore(clock)


def test_concurrent_adds_have_exactly_one_winner(atomic_store: Store) -> None:
    store = atomic_store
    wins: list[bool] = []
    barrier = threading.Barrier(10)

    def contend() -> None:
        barrier.wait()
        wins.append(store.add(("lock", "race"), {"owner": threading.current_thread().name}, ttl=30))

    threads = [threading.Thread(target=contend) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 9 + [True]


def test_concurrent_increments_never_pass_the_limit(atomic_store: Store) -> None:
    store = atomic_store
    granted: list[int | None] = []
    barrier = threading.Barrier(8)

    def take() -> None:
        barrier.wait()
        for _ in range(3):
            granted.append(store.incr(("rate", "race"), 1, ttl=60, limit=5))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(g for g in granted if g is not None) == [1, 2, 3, 4, 5]
    assert granted.count(None) == 19


def test_add_and_count_counts_each_marker_once_and_needs_a_live_counter(store: Store, clock: FakeClock) -> None:
    counter = ("batch#1", "meta")
    store.add(counter, {"total": 2, "processed": 0, "failed": 0}, ttl=100)
    assert store.add_and_count(("batch#1", "job#a"), {"outcome": "processed"}, counter, {"processed": 1}, 100)
    assert not store.add_and_count(("batch#1", "job#a"), {"outcome": "processed"}, counter, {"processed": 1}, 100)
    assert store.add_and_count(("batch#1", "job#b"), {"outcome": "failed"}, counter, {"failed": 1}, 100)
    assert store.get(counter) == {"total": 2, "processed": 1, "failed": 1}
    assert store.get(("batch#1", "job#b")) == {"outcome": "failed"}
    assert not store.add_and_count(("batch#2", "job#a"), {}, ("batch#2", "meta"), {"processed": 1}, 100)
    assert store.get(("batch#2", "job#a")) is None, "without its counter, the marker is not written either"
    clock.now += 101
    assert not store.add_and_count(("batch#1", "job#c"), {}, counter, {"processed": 1}, 100), "expired counter"


def test_update_sets_and_adds_once_and_returns_the_item(store: Store, clock: FakeClock) -> None:
    key = ("batch#9", "meta")
    assert store.update(key, add={"total": 1}) is None, "absent items are not created"
    store.add(key, {"total": 1}, ttl=100)
    assert store.update(key, set={"name": "x"}, add={"total": 2}) == {"total": 3, "name": "x"}
    assert store.update(key, set={"finished_at": "t1"}, unless="finished_at") == {
        "total": 3,
        "name": "x",
        "finished_at": "t1",
    }
    assert store.update(key, set={"finished_at": "t2"}, unless="finished_at") is None
    assert store.get(key) == {"total": 3, "name": "x", "finished_at": "t1"}
    clock.now += 101
    assert store.update(key, add={"total": 1}) is None


def test_query_and_scan_return_live_items_only(store: Store, clock: FakeClock) -> None:
    store.add(("batch#1", "meta"), {"n": 1}, ttl=100)
    store.add(("batch#1", "job#b"), {"n": 2}, ttl=100)
    store.add(("batch#1", "job#a"), {"n": 3}, ttl=5)
    store.add(("batch#2", "meta"), {"n": 4}, ttl=100)
    store.add(("other", "meta"), {"n": 5}, ttl=100)
    assert store.query("batch#1") == [("job#a", {"n": 3}), ("job#b", {"n": 2}), ("meta", {"n": 1})]
    assert sorted(store.scan("batch#", "meta")) == [("batch#1", {"n": 1}), ("batch#2", {"n": 4})]
    clock.now += 6
    assert [sk for sk, _ in store.query("batch#1")] == ["job#b", "meta"]


def test_query_and_scan_read_every_page(store: Store) -> None:
    """DynamoDB answers a Query or Scan 1 MB at a time: five items of 350 KB take three pages, and an
    item on the last page is still found."""
    for index in range(5):
        store.put(("big", f"item{index}"), {"blob": "x" * 350_000}, 100)
    assert [sk for sk, _ in store.query("big")] == [f"item{index}" for index in range(5)]
    assert [pk for pk, _ in store.scan("big", "item4")] == ["big"]


# -- clock skew: two workers on one table, one clock ahead of the other --------------------------------

SKEW = 60.0


@pytest.fixture(params=["memory", "dynamodb"])
def two_workers(request: pytest.FixtureRequest) -> tuple[Store, FakeClock, Store, FakeClock]:
    """Worker A and worker B on one table, both trusting items for SKEW s past their expiry; B's clock
    runs 59 s ahead of A's."""
    clock_a, clock_b = FakeClock(), FakeClock(1_800_000_000.0 + SKEW - 1)
    if request.param == "memory":
        a = MemoryStore(clock_a, skew=SKEW)
        return a, clock_a, a.view(clock_b), clock_b
    request.getfixturevalue("moto")
    provision(App(connection="sqs"), [], table=True, bucket=False)
    return (
        DynamoDbStore("sqsjobs", clock=clock_a, skew=SKEW),
        clock_a,
        DynamoDbStore("sqsjobs", clock=clock_b, skew=SKEW),
        clock_b,
    )


def later(seconds: float, *clocks: FakeClock) -> None:
    for clock in clocks:
        clock.now += seconds


def test_a_worker_whose_clock_runs_ahead_never_takes_a_held_item_early(
    two_workers: tuple[Store, FakeClock, Store, FakeClock],
) -> None:
    a, clock_a, b, clock_b = two_workers
    key = ("lock", "skewed")
    assert a.add(key, {"owner": "a"}, ttl=600)
    later(590, clock_a, clock_b)  # 10 s left by A's clock; 49 s past expiry by B's
    assert b.add(key, {"owner": "b"}, ttl=600) is False, "B took A's lock 10 s before it expired"
    assert b.get(key) == {"owner": "a"}, "B must see the item its refused write saw"
    assert b.delete(key, owner="b") is False
    assert b.update(key, set={"owner": "b"}, unless="owner") is None
    assert b.query("lock") == [("skewed", {"owner": "a"})]
    later(10, clock_a, clock_b)  # expired by A's clock too, but not by more than the skew for anyone
    assert b.add(key, {"owner": "b"}, ttl=600) is False
    assert a.delete(key, owner="a") is True, "its holder may still release a lock the others still honour"
    assert b.add(key, {"owner": "b"}, ttl=600) is True


def test_an_item_is_free_once_its_expiry_has_passed_by_more_than_the_skew(
    two_workers: tuple[Store, FakeClock, Store, FakeClock],
) -> None:
    a, clock_a, b, clock_b = two_workers
    key = ("lock", "abandoned")
    assert a.add(key, {"owner": "a"}, ttl=100)
    later(100 + 2, clock_a, clock_b)  # B: 61 s past expiry, more than the skew
    assert b.get(key) is None and b.add(key, {"owner": "b"}, ttl=100) is True
    assert a.get(key) == {"owner": "b"}


def test_a_counter_window_is_shared_while_any_worker_still_honours_it(
    two_workers: tuple[Store, FakeClock, Store, FakeClock],
) -> None:
    a, clock_a, b, clock_b = two_workers
    key = ("circuit", "api")
    assert a.incr(key, 1, ttl=30, limit=2) == 1
    later(20, clock_a, clock_b)  # B: past the window's end by 49 s
    assert b.incr(key, 1, ttl=30, limit=2) == 2, "B restarted a window A still counts in"
    assert b.incr(key, 1, ttl=30, limit=2) is None
    assert a.incr(key, 1, ttl=30, limit=2) is None


def test_add_and_count_honours_a_marker_within_the_skew(
    two_workers: tuple[Store, FakeClock, Store, FakeClock],
) -> None:
    a, clock_a, b, clock_b = two_workers
    counter = ("batch#s", "meta")
    a.add(counter, {"processed": 0}, ttl=3600)
    assert a.add_and_count(("batch#s", "job#1"), {}, counter, {"processed": 1}, ttl=30)
    later(10, clock_a, clock_b)
    assert not b.add_and_count(("batch#s", "job#1"), {}, counter, {"processed": 1}, ttl=30), "counted twice"
    assert b.get(counter) == {"processed": 1}


def test_an_endpoint_that_repeats_a_page_key_is_refused_not_paged_for_ever(moto: None) -> None:
    """botocore's paginator refused a LastEvaluatedKey answered twice; the store's own paging does too."""
    provision(App(connection="sqs"), [], table=True, bucket=False)
    store = DynamoDbStore("sqsjobs")
    store.put(("loop", "a"), {"n": 1}, 100)
    stuck = {"pk": {"S": "loop"}, "sk": {"S": "a"}}

    def repeat(parsed: dict[str, Any], **_: Any) -> None:
        parsed["LastEvaluatedKey"] = stuck  # what a DynamoDB-compatible endpoint that pages wrongly answers

    store.client.meta.events.register("after-call.dynamodb.Query", repeat)
    store.client.meta.events.register("after-call.dynamodb.Scan", repeat)
    with pytest.raises(SqsJobsError, match="same LastEvaluatedKey twice"):
        store.query("loop")
    with pytest.raises(SqsJobsError, match="same LastEvaluatedKey twice"):
        store.scan("loop", "a")

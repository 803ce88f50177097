"""One contract, two stores: DynamoDB (on moto) and memory must behave the same, expiry included.

Time comes from a fake clock, so expiry is tested without waiting — and DynamoDB's
lazy TTL (moto never expires at all) is exactly the case: an expired item is still
in the table, and every operation must treat it as absent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from sqsjobs import App
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

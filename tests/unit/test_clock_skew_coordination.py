"""Two workers on one table whose clocks disagree: within `clock_skew`, nothing held is ever taken.

Every lock, claim and key carries an expiry (or a start time) written on its holder's clock and judged
on another worker's. Before, a worker whose clock ran ahead judged them by its own clock alone: +120 s
let a second worker claim an idempotency key still held, +601 s let a `unique_for=600` job be
dispatched twice. Each test runs on the memory store and on DynamoDB (moto), as production does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from sqsjobs import App, Job, Postpone, Release, ThrottlesExceptions, WithoutOverlapping, idempotency, once, runs
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.provisioning import provision
from sqsjobs.stores import MemoryStore, Store
from sqsjobs.stores.dynamodb import DynamoDbStore
from tests.helpers import FakeClock

T0 = 1_800_000_000.0

#: (clock, skew) -> a store on the one shared table, seen with that clock.
StoreOn = Callable[[FakeClock, float], Store]


@pytest.fixture(params=["memory", "dynamodb"])
def store_on(request: pytest.FixtureRequest) -> StoreOn:
    if request.param == "dynamodb":
        request.getfixturevalue("moto")
        provision(App(connection="sqs"), [], table=True, bucket=False)
        return lambda clock, skew: DynamoDbStore("sqsjobs", clock=clock, skew=skew)
    shared: list[MemoryStore] = []

    def memory(clock: FakeClock, skew: float) -> Store:
        if not shared:
            shared.append(MemoryStore(clock, skew=skew))
            return shared[0]
        return shared[0].view(clock)

    return memory


def workers(store_on: StoreOn, ahead: float, skew: float) -> tuple[Store, FakeClock, Store, FakeClock]:
    """Worker A, and worker B whose clock runs `ahead` seconds ahead of A's."""
    clock_a, clock_b = FakeClock(T0), FakeClock(T0 + ahead)
    return store_on(clock_a, skew), clock_a, store_on(clock_b, skew), clock_b


def later(seconds: float, *clocks: FakeClock) -> None:
    for clock in clocks:
        clock.now += seconds


# -- idempotency keys ----------------------------------------------------------------------------


def test_an_idempotency_key_held_is_not_taken_by_a_worker_120_s_ahead(store_on: StoreOn) -> None:
    a, clock_a, b, clock_b = workers(store_on, ahead=120, skew=150)
    assert idempotency.claim(a, clock_a, "skew.charge", "order-1", "job1:m1", timeout=60).state == "run"
    # The same job's message back on B (a lapsed heartbeat) while A still runs it: its timeout has not passed.
    same = idempotency.claim(b, clock_b, "skew.charge", "order-1", "job1:m2", timeout=60)
    assert same.state == "busy" and same.holder == "job1:m1", "B took over a run that is still going"
    assert same.wait >= 60 + 150 - 120
    # Another job with the same key: the mark (timeout + 60 s) has expired only by B's clock.
    other = idempotency.claim(b, clock_b, "skew.charge", "order-1", "job2:m3", timeout=60)
    assert other.state == "busy", "B claimed a key A still holds"
    later(60 + 150 - 120, clock_a, clock_b)  # A's run ended at its timeout long ago, whichever clock is right
    assert idempotency.claim(b, clock_b, "skew.charge", "order-1", "job1:m2", timeout=60).state == "run"


# -- one run per job id --------------------------------------------------------------------------


def test_a_run_claim_is_not_taken_by_a_worker_121_s_ahead(store_on: StoreOn) -> None:
    a, clock_a, b, clock_b = workers(store_on, ahead=121, skew=150)
    assert runs.claim_run(a, clock_a, "job-1", "m1", timeout=60) == 0.0
    wait = runs.claim_run(b, clock_b, "job-1", "m2", timeout=60)
    assert wait > 0, "a second copy ran while the first one's claim still held"
    later(wait, clock_a, clock_b)
    assert runs.claim_run(b, clock_b, "job-1", "m2", timeout=60) == 0.0


# -- dispatch once -------------------------------------------------------------------------------


def test_a_send_in_progress_is_not_taken_over_by_a_worker_past_the_lease_by_its_clock(
    store_on: StoreOn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(once, "WATCH_S", 0.05)
    a, clock_a, b, clock_b = workers(store_on, ahead=once.SEND_LEASE_S + 1, skew=120)
    key = ("chain#skew", "link#2")
    sent: list[str] = []

    def slow_send_on_a() -> None:
        # While A sends, B (its clock past A's lease) sees the "sending" mark.
        with pytest.raises(once.SendInProgress):
            once.dispatch_once(b, clock_b, key, "run-b", lambda: sent.append("b"))
        sent.append("a")

    assert once.dispatch_once(a, clock_a, key, "run-a", slow_send_on_a) is True
    assert sent == ["a"], "the next link was sent twice"


# -- through two Apps: unique jobs and middleware -----------------------------------------------


class Nightly(Job, name="skew.nightly"):
    unique_for = 600

    def handle(self) -> None:
        pass


class Counted(Job, abstract=True):
    runs: ClassVar[list[str]] = []

    def handle(self) -> None:
        Counted.runs.append(type(self).job_name)


class Overlapping(Counted, name="skew.overlapping"):
    timeout = 30

    def middleware(self) -> list[Any]:
        return [WithoutOverlapping("report")]


class Throttled(Counted, name="skew.throttled"):
    fail_first: ClassVar[bool] = True

    def middleware(self) -> list[Any]:
        return [ThrottlesExceptions(max_attempts=1, decay=100)]

    def handle(self) -> None:
        super().handle()
        if Throttled.fail_first:
            Throttled.fail_first = False
            raise ConnectionError("downstream is down")


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    Counted.runs.clear()
    Throttled.fail_first = True
    yield


def two_apps(store_on: StoreOn, ahead: float, skew: float) -> tuple[App, FakeClock, App, FakeClock]:
    """Two Apps on one (memory) queue and one table; B's clock runs `ahead` of A's."""
    a, clock_a, b, clock_b = workers(store_on, ahead, skew)
    connection = MemoryConnection(visibility_timeout=30, max_receive_count=None, clock=clock_a)
    app_a = App(connection=connection, clock=clock_a, clock_skew=skew)
    app_b = App(connection=connection, clock=clock_b, clock_skew=skew)
    app_a.store, app_b.store = a, b
    return app_a, clock_a, app_b, clock_b


def run_one(app: App) -> Any:
    (message,) = app.connection.receive("default", 1, 0)
    return app.runner.process(message)


def test_a_unique_job_is_not_dispatched_twice_by_a_worker_601_s_ahead(store_on: StoreOn) -> None:
    app_a, _, app_b, _ = two_apps(store_on, ahead=601, skew=660)
    with app_a.activate():
        assert Nightly().dispatch().queued
    with app_b.activate():
        assert not Nightly().dispatch().queued, "dispatched twice: B's clock says the lock expired"


def test_with_the_default_skew_a_lock_about_to_expire_is_still_held(store_on: StoreOn) -> None:
    app_a, clock_a, app_b, clock_b = two_apps(store_on, ahead=59, skew=App().settings.clock_skew)
    with app_a.activate():
        assert Nightly().dispatch().queued
    later(545, clock_a, clock_b)  # 55 s left by A's clock, 4 s past by B's
    with app_b.activate():
        assert not Nightly().dispatch().queued
    later(600 - 545 + 2, clock_a, clock_b)  # past by more than the skew on B's clock
    with app_b.activate():
        assert Nightly().dispatch().queued


def test_an_overlap_lock_held_is_honoured_by_a_worker_whose_clock_says_it_expired(store_on: StoreOn) -> None:
    app_a, _, app_b, _ = two_apps(store_on, ahead=91, skew=120)
    # A runs a job holding the lock: timeout 30 s + 60 s, which B's clock says is over.
    assert app_a.store.add(("overlap", "skew.overlapping:report"), {"owner": "job-on-a"}, ttl=30 + 60)
    with app_b.activate():
        Overlapping().dispatch()
    decision = run_one(app_b)
    assert isinstance(decision, Postpone | Release) and Counted.runs == [], "ran alongside A's job"


def test_an_open_circuit_is_honoured_by_a_worker_whose_clock_says_it_closed(store_on: StoreOn) -> None:
    app_a, _, app_b, _ = two_apps(store_on, ahead=101, skew=120)
    with app_a.activate():
        Throttled().dispatch()
    assert isinstance(run_one(app_a), Release)  # the exception opens the circuit for 100 s on A's clock
    with app_b.activate():
        Throttled().dispatch()
    decision = run_one(app_b)
    assert isinstance(decision, Postpone | Release) and Counted.runs == ["skew.throttled"], "ran on B"
    assert decision.delay == 100 + 120 - 101, "held back until the circuit's item is gone on B's view too"


def test_the_app_gives_its_clock_skew_to_the_store() -> None:
    assert App(connection="memory", clock_skew=42).store.skew == 42
    assert App(connection="memory", store="dynamodb", clock_skew=42).store.skew == 42
    assert App(connection="memory").store.skew == App().settings.clock_skew == 60

"""Unique jobs, middleware, rate limits, overlap locks, circuits, idempotency and steps.

Concurrency tests use the memory store, which is atomic as DynamoDB's conditional
writes are (moto's DynamoDB is not: it does not serialise requests). Expiry tests run
on DynamoDB (moto) too, where an expired item is still in the table.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from sqsjobs import Ack, App, ConfigurationError, Fail, Job, Postpone, ReceivedMessage, Release
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.events import QueueEvent
from sqsjobs.middleware import (
    FailOnException,
    Limit,
    RateLimited,
    Skip,
    ThrottlesExceptions,
    WithoutOverlapping,
    rate_limiter,
)
from sqsjobs.provisioning import provision
from sqsjobs.stores.dynamodb import DynamoDbStore
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import FakeClock, wait_for, work_for


class Journal(Job, abstract=True):
    entries: ClassVar[list[tuple[str, Any]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def write(self, what: Any) -> None:
        with Journal.lock:
            Journal.entries.append((type(self).job_name, what))


class Report(Journal, name="coord.report"):
    unique_for = 3600
    tries = 2
    backoff = 0
    customer: int
    broken: bool = False

    def unique_id(self) -> str:
        return str(self.customer)

    def handle(self) -> None:
        self.write(self.customer)
        if self.broken:
            raise RuntimeError("report failed")


class Nightly(Journal, name="coord.nightly"):
    unique_for = 60
    unique_until_processing = True

    def handle(self) -> None:
        self.write("nightly")


class Limited(Journal, name="coord.limited"):
    tries = 100
    n: int

    def middleware(self) -> list[Any]:
        return [RateLimited("coord-api")]

    def handle(self) -> None:
        self.write(self.n)


class Exclusive(Journal, name="coord.exclusive"):
    tries = 50
    n: int

    def middleware(self) -> list[Any]:
        return [WithoutOverlapping("account-1", release_after=1)]

    def handle(self) -> None:
        self.write(("start", self.n, time.monotonic()))
        work_for(0.3)
        self.write(("end", self.n, time.monotonic()))


class Flaky(Journal, name="coord.flaky"):
    tries = 20
    backoff = 0

    def middleware(self) -> list[Any]:
        return [ThrottlesExceptions(max_attempts=3, decay=60, by="payments-api")]

    def handle(self) -> None:
        self.write("call")
        raise ConnectionError("payments api down")


class Charge(Journal, name="coord.charge"):
    order: int
    fail_at_step: int = 0
    backoff = 0

    def idempotency_key(self) -> str:
        return f"order-{self.order}"

    def handle(self) -> None:
        reserved = self.step("reserve", lambda: self.record_step(1))
        charged = self.step("charge", lambda: self.record_step(2))
        if self.fail_at_step == 3 and self.attempts == 1:
            raise ConnectionError("mailer down after step 2")
        self.step("email", lambda: self.record_step(3))
        self.write(("done", reserved, charged))

    def record_step(self, number: int) -> int:
        self.write(("step", number, self.attempts))
        return number * 10


class Counted(Journal, name="coord.counted"):
    tries = 10
    max_exceptions = 2
    backoff = 0
    release_first: bool = True

    def handle(self) -> None:
        if self.release_first and self.attempts <= 3:
            self.release(0)
            return
        raise ValueError("boom")


class Skippy(Journal, name="coord.skippy"):
    skip: bool

    def middleware(self) -> list[Any]:
        return [Skip.when(lambda job: job.skip), FailOnException([KeyError])]

    def handle(self) -> None:
        self.write("ran")
        raise KeyError("nope")


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    Journal.entries.clear()
    yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> App:
    return App(
        connection=MemoryConnection(visibility_timeout=30, max_receive_count=None, clock=clock),
        clock=clock,
        clock_skew=0,  # one clock: exact expiries
    )


def run_all(app: App, queue: str = "default") -> list[Any]:
    """Receive and settle every visible message once; return the decisions."""
    connection = app.connection
    decisions = []
    for message in connection.receive(queue, 10, 0):
        decision = app.runner.process(message)
        decisions.append(decision)
        if app.settler.apply(message, decision).delete:
            connection.delete(queue, [message])
    return decisions


def names(*kinds: str) -> list[Any]:
    return [what for name, what in Journal.entries if name in kinds]


# -- unique jobs ---------------------------------------------------------------------------------
def test_twenty_threads_dispatching_one_unique_job_queue_exactly_one(app: App) -> None:
    results = []
    barrier = threading.Barrier(20)

    def dispatch() -> None:
        barrier.wait()
        with app.activate():
            results.append(Report(customer=7).dispatch())

    threads = [threading.Thread(target=dispatch) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.queued for r in results) == [False] * 19 + [True]
    assert app.connection.size("default") == 1  # type: ignore[attr-defined]
    with app.activate():
        assert Report(customer=8).dispatch().queued, "another customer is another lock"


@pytest.mark.parametrize("store_kind", ["memory", "dynamodb"])
def test_the_lock_is_free_again_on_every_terminal_path(
    app: App, clock: FakeClock, store_kind: str, request: Any
) -> None:
    if store_kind == "dynamodb":
        request.getfixturevalue("moto")
        provision(App(connection="sqs"), [], table=True, bucket=False)
        app.store = DynamoDbStore("sqsjobs", clock=clock)
    with app.activate():
        assert Report(customer=1).dispatch().queued
        assert not Report(customer=1).dispatch().queued
        run_all(app)  # success
        assert Report(customer=1).dispatch().queued, "free after success"
        Journal.entries.clear()

        assert Report(customer=2, broken=True).dispatch().queued
        run_all(app)
        assert not Report(customer=2).dispatch().queued, "held while the job is being retried"
        run_all(app)  # second and final failure
        assert Report(customer=2).dispatch().queued, "free after final failure"

        assert Report(customer=3).dispatch().queued
        clock.now += 3601
        assert Report(customer=3).dispatch().queued, "free after unique_for, even with the item still stored"


def test_the_lock_is_released_when_the_dispatch_itself_fails(moto: None, prefix: str) -> None:
    app = App(connection="sqs", queue_prefix=prefix, store="memory")  # the queue does not exist
    with app.activate():
        with pytest.raises(Exception, match="does not exist"):
            Report(customer=4).dispatch()
        provision(app, ["default"], table=False, bucket=False)
        assert Report(customer=4).dispatch().queued


def test_until_processing_frees_the_lock_when_the_job_starts(app: App) -> None:
    with app.activate():
        assert Nightly().dispatch().queued
        assert not Nightly().dispatch().queued
        run_all(app)
        assert Nightly().dispatch().queued


def test_a_unique_job_with_fields_must_say_what_makes_it_unique() -> None:
    with pytest.raises(ConfigurationError, match="unique_id"):

        class Ambiguous(Job, name="coord.ambiguous"):
            unique_for = 60
            user: int

            def handle(self) -> None:
                pass


# -- max_exceptions ------------------------------------------------------------------------------
def test_max_exceptions_counts_exceptions_not_releases(app: App) -> None:
    with app.activate():
        Counted().dispatch()
    decisions = [run_all(app)[0] for _ in range(5)]
    assert [type(d) for d in decisions] == [Release, Release, Release, Release, Fail]
    assert decisions[-1].reason == "max_exceptions"  # type: ignore[union-attr]


# -- middleware ----------------------------------------------------------------------------------
def test_skip_acknowledges_without_running_and_fail_on_exception_skips_retries(app: App) -> None:
    with app.activate():
        Skippy(skip=True).dispatch()
        Skippy(skip=False).dispatch()
    decisions = run_all(app)
    assert decisions[0] == Ack()
    assert isinstance(decisions[1], Fail) and decisions[1].reason == "permanent"
    assert names("coord.skippy") == ["ran"]


def test_a_rate_limit_of_five_per_second_never_lets_a_sixth_through_under_four_workers(
    app: App, clock: FakeClock
) -> None:
    rate_limiter("coord-api", Limit.per_second(5))
    with app.activate():
        Limited.dispatch_many([Limited(n=i) for i in range(30)])
    seen: list[str] = []
    app.events.listen(lambda event: seen.append(event.kind) if event.kind in ("processed", "released") else None)

    def one_window() -> list[Any]:
        waiting = app.connection.size("default")  # type: ignore[attr-defined]
        workers = [Worker(app, WorkerOptions(sleep=1, concurrency=2)) for _ in range(4)]
        threads = [threading.Thread(target=w.run, kwargs={"install_signals": False}) for w in workers]
        for thread in threads:
            thread.start()
        # Every waiting message was decided once: run, or released until the next window.
        wait_for(lambda: len(seen) >= waiting, timeout=15, what="every message to be decided")
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(10)
        ran = names("coord.limited")
        Journal.entries.clear()
        seen.clear()
        return ran

    assert len(one_window()) == 5
    clock.now += 1
    assert len(one_window()) == 5
    assert app.connection.size("default") == 20  # type: ignore[attr-defined]


def test_without_overlapping_runs_jobs_one_after_the_other_across_two_workers(app: App) -> None:
    connection = MemoryConnection(visibility_timeout=30, max_receive_count=None)
    app = App(connection=connection)
    with app.activate():
        Exclusive.dispatch_many([Exclusive(n=i) for i in range(4)])
    workers = [Worker(app, WorkerOptions(sleep=1, concurrency=2, stop_when_empty=True)) for _ in range(2)]
    threads = [threading.Thread(target=w.run, kwargs={"install_signals": False}) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    spans = {}
    for kind, n, at in names("coord.exclusive"):
        spans.setdefault(n, {})[kind] = at
    assert sorted(spans) == [0, 1, 2, 3]
    ordered = sorted(spans.values(), key=lambda s: s["start"])
    assert all(earlier["end"] <= later["start"] for earlier, later in itertools.pairwise(ordered))


def test_a_throttled_circuit_opens_after_n_exceptions_and_closes_after_the_decay(app: App, clock: FakeClock) -> None:
    opened: list[QueueEvent] = []
    app.events.on("circuit_opened")(opened.append)
    with app.activate():
        Flaky().dispatch()
    for _ in range(3):
        assert isinstance(run_all(app)[0], Release)
    assert names("coord.flaky") == ["call"] * 3
    assert [(e.queue, e.detail["key"], e.detail["exceptions"]) for e in opened] == [("default", "payments-api", 3)]
    decision = run_all(app)[0]
    assert decision == Postpone(60, "held back before it ran"), "open: held back for the decay, not run, no try spent"
    assert names("coord.flaky") == ["call"] * 3
    clock.now += 61
    assert isinstance(run_all(app)[0], Release)
    assert names("coord.flaky") == ["call"] * 4, "closed again after the decay"
    assert len(opened) == 1, "one event per opening, not per held-back job"


# -- idempotency ---------------------------------------------------------------------------------
def test_an_idempotent_job_delivered_twice_runs_once(app: App) -> None:
    with app.activate():
        Charge(order=1).dispatch()
    (message,) = app.connection.receive("default", 1, 0)
    duplicate = ReceivedMessage("default", "other-id", "h2", message.body, 1, message.sent_at)
    assert app.runner.process(message) == Ack()
    assert app.runner.process(duplicate) == Ack("duplicate")
    assert names("coord.charge").count(("done", 10, 20)) == 1


def test_a_key_in_progress_is_postponed_not_run_concurrently(app: App, caplog: pytest.LogCaptureFixture) -> None:
    with app.activate():
        Charge(order=2).dispatch()
    (message,) = app.connection.receive("default", 1, 0)
    first = app.runner.begin(message)
    twin = ReceivedMessage("default", "twin", "h3", message.body, 1, message.sent_at)
    with caplog.at_level("INFO", logger="sqsjobs.idempotency"):
        assert isinstance(app.runner.process(twin), Postpone), "it waits, without spending a try"
    assert names("coord.charge") == []
    assert not isinstance(first, Release | Ack | Fail)
    assert any("is held by" in r.getMessage() and "waits" in r.getMessage() for r in caplog.records), (
        "every wait is logged"
    )


def test_an_idempotent_job_whose_worker_died_runs_when_its_message_comes_back(app: App, clock: FakeClock) -> None:
    """The run holding the key was killed: the same message, back after the run's timeout, takes the key
    over (before, it was released as busy, spending tries, until it landed in the DLQ never run). Back
    sooner — a heartbeat lapsed while the run goes on — it waits out the rest of that timeout, for free."""
    with app.activate():
        Charge(order=3).dispatch()
    (message,) = app.connection.receive("default", 1, 0)
    assert not isinstance(app.runner.begin(message), Release | Ack | Fail | Postpone)  # then SIGKILL
    clock.now += 20
    too_soon = dataclasses.replace(message, receipt_handle="h-soon", receive_count=2)
    waits = app.runner.process(too_soon)
    assert isinstance(waits, Postpone) and waits.delay == 40, "the rest of the run's 60 s timeout"
    clock.now += 41
    redelivered = dataclasses.replace(message, receipt_handle="h-again", receive_count=3)
    assert app.runner.process(redelivered) == Ack()
    assert names("coord.charge").count(("done", 10, 20)) == 1


def test_a_job_failing_after_step_two_of_three_resumes_at_step_three(app: App) -> None:
    with app.activate():
        Charge(order=3, fail_at_step=3).dispatch()
    assert isinstance(run_all(app)[0], Release)
    assert run_all(app)[0] == Ack()
    steps = [entry for entry in names("coord.charge") if entry[0] == "step"]
    assert steps == [("step", 1, 1), ("step", 2, 1), ("step", 3, 2)]
    assert names("coord.charge")[-1] == ("done", 10, 20)


def test_plain_jobs_never_touch_the_store(app: App) -> None:
    class Plain(Job, name="coord.plain"):
        def handle(self) -> None:
            pass

    with app.activate():
        Plain().dispatch()
    run_all(app)
    assert app._store is None

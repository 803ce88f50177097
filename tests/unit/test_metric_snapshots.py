"""Metric snapshots: a poller's per-queue, per-minute counters in the table are exact, written once per
minute (and when it stops), summed over writers, and off with SQSJOBS_SNAPSHOTS=false."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sqsjobs import App, Job, PermanentError, metric_snapshots
from sqsjobs.events import Events, JobEvent
from sqsjobs.metric_snapshots import DynamoDbWrite, Snapshots, StoreWrite, read
from sqsjobs.provisioning import provision
from sqsjobs.settings import load_settings
from sqsjobs.stores.memory import MemoryStore
from sqsjobs.testing.clock import ManualClock
from sqsjobs.testing.faults import FaultPlan
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import work_for

#: A minute's start, so a test knows which minute its events fall in.
T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60


class Counted(Job, name="snapshots.counted"):
    queue = "default"
    tries = 1
    n: int

    def handle(self) -> None:
        if self.n == 6:
            work_for(0.02)  # one run long enough that its runtime is not rounded to 0 ms
        if self.n % 4 == 0:
            raise PermanentError("every fourth one fails")


@pytest.fixture
def app(moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("SQSJOBS_TABLE", f"{prefix}table")
    monkeypatch.setenv("SQSJOBS_WORKER_BEAT", "0")
    application = App(connection="sqs", visibility_timeout=30, queues=["default"])
    provision(application, ["default"], bucket=False)
    with application.activate():
        yield application


def event(kind: str, queue: str = "default", runtime: float = 0.25, wait: float = 2.0) -> JobEvent:
    return JobEvent(kind, "id", "snapshots.counted", queue, 1, "2026-01-01T00:00:00Z", wait_s=wait, runtime_s=runtime)


def test_a_workers_counters_are_exact_after_its_jobs(app: App) -> None:
    Counted.dispatch_many([Counted(n=n) for n in range(1, 13)])
    Worker(app, WorkerOptions(queues=["default"], sleep=1, stop_when_empty=True)).run(install_signals=False)
    now = app.clock()
    minutes = read(app.store, ["default"], now - 600, now)["default"]
    total = metric_snapshots.Minute("default", 0)
    for minute in minutes:
        total.merge(minute)
    assert (total.processed, total.failed, total.released) == (9, 3, 0)
    assert total.runs == 12 and total.waits == 12
    assert 20 <= total.runtime_max_ms <= total.runtime_ms * 1.19 + 1  # the maximum, rounded up to a step


def test_a_minute_is_written_once_when_it_has_ended() -> None:
    clock = ManualClock(T0 + 5)
    writes: list[tuple[tuple[str, str], dict[str, int], int]] = []
    snapshots = Snapshots(lambda key, counts, top, ttl: writes.append((key, counts, top)), clock, shard=2)
    for kind in ("processed", "processed", "failed", "released", "rejected"):
        snapshots.listen(event(kind))
    snapshots.listen(event("processed", queue="high", runtime=1.5))
    snapshots.listen(event("queued"))  # not a job's end: not counted
    for _ in range(3):
        clock.advance(10)
        assert snapshots.tick() == 0  # the minute has not ended: nothing written, however often asked
    assert writes == []
    clock.advance(30)  # into the next minute
    assert snapshots.tick() == 2  # one write per queue
    assert snapshots.tick() == 0
    by_queue = {key[0].split("#")[1]: (key, counts, top) for key, counts, top in writes}
    key, counts, top = by_queue["default"]
    assert key == (f"snapshot#default#{int(T0 - T0 % 3600)}#2", str(int(T0)))
    assert counts == {
        "processed": 2,
        "failed": 2,  # one failed run, one rejected message (it never ran: no runtime, no wait)
        "released": 1,
        "runs": 4,
        "runtime_ms": 1000,
        "waits": 4,
        "wait_ms": 8000,
    }
    assert top == 256 and by_queue["high"][2] == 1723  # 250 and 1500 ms, rounded up to their steps


def test_writers_add_into_the_same_minute_and_a_reader_sums_their_shards(app: App) -> None:
    clock = ManualClock(T0 + 1)
    write = DynamoDbWrite(app.settings.table, clock)
    first, second = Snapshots(write, clock, shard=0), Snapshots(write, clock, shard=3)
    first.listen(event("processed", runtime=0.1))
    second.listen(event("processed", runtime=0.4))
    second.listen(event("failed", runtime=0.2))
    assert first.flush() == second.flush() == 1
    first.listen(event("processed", runtime=0.3))  # the same minute again (a Lambda invocation's end)
    assert first.flush() == 1
    minutes = read(app.store, ["default", "high"], T0 - 3600, T0 + 59)
    assert minutes["high"] == []
    [minute] = minutes["default"]
    assert (minute.at, minute.processed, minute.failed, minute.runs) == (int(T0), 3, 1, 4)
    assert (minute.runtime_ms, minute.runtime_max_ms) == (1000, metric_snapshots.bucket_ms(400))


def test_a_write_that_fails_is_dropped_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(*args: object) -> None:
        raise RuntimeError("throttled")

    snapshots = Snapshots(refuse, ManualClock(T0))
    snapshots.listen(event("processed"))
    assert snapshots.flush() == 0
    assert "could not write the dashboard's snapshots" in caplog.text


def test_snapshots_are_off_with_the_setting_or_without_the_shared_table() -> None:
    assert metric_snapshots.attach(Events(), load_settings(snapshots=False)) is None
    assert metric_snapshots.attach(Events(), load_settings(connection="memory")) is None
    # App(connection="memory") leaves the settings' connection at "sqs": the App's own one decides.
    assert metric_snapshots.attach(Events(), load_settings(), connection="memory") is None
    events = Events()
    on = metric_snapshots.attach(events, load_settings())
    assert on is not None and metric_snapshots.attach(events, load_settings()) is on  # one collector per bus


def test_a_throttled_write_is_tried_once_and_the_rest_of_the_flush_dropped(
    app: App, faults: FaultPlan, caplog: pytest.LogCaptureFixture
) -> None:
    """The shared client would try 5 times with backoff (seconds at the end of a Lambda invocation)."""
    snapshots = Snapshots(DynamoDbWrite(app.settings.table), ManualClock(T0))
    for queue in ("default", "high", "low"):
        snapshots.listen(event("processed", queue=queue))
    faults.add(service="dynamodb", operation="UpdateItem", kind="throttle", rate=1.0)
    assert snapshots.flush() == 0
    assert faults.count(operation="UpdateItem") == 1  # one attempt, then the other two queues are not tried
    assert snapshots.dropped == 3
    assert caplog.text.count("could not write the dashboard's snapshots of 3 queue-minute(s)") == 1
    faults.clear()
    assert snapshots.flush() == 0  # dropped, never written later
    assert read(app.store, ["default", "high", "low"], T0 - 60, T0 + 60) == {"default": [], "high": [], "low": []}


class Quick(Job, name="snapshots.quick"):
    queue = "default"

    def handle(self) -> None:
        pass


def test_a_lambda_container_writes_a_minute_once_it_ended_and_only_with_time_left(
    app: App, faults: FaultPlan, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a DynamoDB write per invocation (it would cost more than the records it counts): a container
    writes each ended minute once, at a later invocation, and never when that could overrun it."""
    from lambda_handlers.sqs import SqsHandler
    from tests.lambda_events import FakeContext, deliver, receive_event

    clock = ManualClock(T0 + 5)
    lam = App(connection="sqs", visibility_timeout=30, queues=["default"], clock=clock)
    handler, context = SqsHandler(lam), FakeContext(300)

    def invoke(jobs: int) -> None:
        with lam.activate():
            for _ in range(jobs):
                Quick().dispatch()
        assert deliver(handler, lam, "default", receive_event(lam, "default"), context)["batchItemFailures"] == []

    def minutes() -> list[tuple[int, int]]:
        return [(m.at, m.processed) for m in read(lam.store, ["default"], T0 - 60, T0 + 240)["default"]]

    invoke(2)
    invoke(1)
    assert minutes() == []  # the current minute waits in the container
    clock.advance(60)
    invoke(1)
    assert minutes() == [(int(T0), 3)]  # the ended minute, written once, by the next invocation
    clock.advance(60)
    context.remaining_s = metric_snapshots.RESERVE_S - 1  # this invocation used its time up
    faults.add(service="dynamodb", operation="UpdateItem", kind="throttle", rate=1.0)  # counts any attempt
    invoke(1)
    assert faults.count(operation="UpdateItem") == 0  # not attempted: it could outlast the invocation
    assert "of the invocation left" in caplog.text
    assert minutes() == [(int(T0), 3)]


def test_the_runtime_maximum_stays_a_small_set_however_many_writers_flush() -> None:
    """Each Lambda flush ADDs its maximum to a number set: rounded to coarse steps, the set stays small."""
    store = MemoryStore()
    seen: list[set[int]] = []

    def write(key: tuple[str, str], counts: dict[str, int], top: int, ttl: float) -> None:
        seen.append(top)  # type: ignore[arg-type]
        StoreWrite(store)(key, counts, top, ttl)

    clock = ManualClock(T0)
    for runtime_ms in range(200, 900, 7):  # 100 invocations in one minute, each with its own maximum
        snapshots = Snapshots(write, clock, shard=0)
        snapshots.listen(event("processed", runtime=runtime_ms / 1000))
        snapshots.flush()
    assert len(set(seen)) <= 10  # members the DynamoDB number set would hold, not 100
    [minute] = read(store, ["default"], T0, T0 + 59)["default"]
    assert 893 <= minute.runtime_max_ms <= 893 * 1.19
    assert [metric_snapshots.bucket_ms(ms) for ms in (0, 1, 250, 400, 1000, 1024)] == [0, 1, 256, 431, 1024, 1024]


def test_a_settled_hour_is_read_once_and_the_current_one_each_time() -> None:
    """The overview over 48 hours read 196 Queries per queue on every refresh; settled hours never change."""
    clock = ManualClock(T0 + 30)
    store = MemoryStore(clock)
    write = StoreWrite(store)
    old = Snapshots(write, ManualClock(T0 - 5 * 3600), shard=1)
    old.listen(event("processed"))
    old.flush()
    history = metric_snapshots.History(store)

    def count() -> int:
        before = store.calls
        series = history.read(["default"], clock() - 48 * 3600, clock())
        assert sum(m.processed for m in series["default"]) == total[0]
        return store.calls - before

    total = [1]
    assert count() == 49 * metric_snapshots.SHARDS  # the first read: every hour's shards
    now = Snapshots(write, clock, shard=2)
    now.listen(event("processed"))
    now.flush()
    total[0] = 2
    # Then only the hours that may still change: this one and the last (within SETTLED_S of its end).
    assert count() <= 2 * metric_snapshots.SHARDS
    clock.advance(3600)  # an hour on: the window's new first hour too
    assert count() <= 3 * metric_snapshots.SHARDS

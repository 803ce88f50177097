"""The scheduler with a movable clock: each tick dispatched once, DST in two zones, missed windows under
each catch-up policy, runners racing, `without_overlapping`, conditions, and what a forged message can
do to a schedule's record (nothing).

The memory connection and store where threads race (moto's DynamoDB does not serialise conditional
writes across threads); the same pass on SQS and DynamoDB through moto in `test_scheduler_aws.py`.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

import sqsjobs
from sqsjobs import Ack, App, ConfigurationError, Job, Postpone, Release, once
from sqsjobs.cron import Cron, daily, every_minute, hourly
from sqsjobs.envelope import decode
from sqsjobs.events import QueueEvent
from sqsjobs.schedules import Schedules, record_key, run_id, schedule, tick_key
from sqsjobs.scheduling import Scheduler, schedule_states
from sqsjobs.stores.memory import MemoryStore
from tests.helpers import FakeClock


class Report(Job, name="sched.report"):
    runs: ClassVar[list[tuple[str, str]]] = []
    kind: str = "daily"

    def handle(self) -> None:
        Report.runs.append((self.kind, self.job_id or ""))


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(at("2026-03-07 12:00:30"))


@pytest.fixture
def schedules() -> Schedules:
    return Schedules()


@pytest.fixture
def app(clock: FakeClock, schedules: Schedules) -> App:
    Report.runs.clear()
    return App(connection="memory", store="memory", clock=clock, schedules=schedules)


def queued(app: App, queue: str = "default") -> list[dict[str, Any]]:
    """The envelopes waiting in `queue` (taken off it)."""
    out = []
    while batch := app.connection.receive(queue, 10, 0):
        for message in batch:
            envelope = decode(message.body)
            out.append({"id": envelope.id, "job": envelope.job, "payload": envelope.payload, **envelope.extra})
            app.connection.delete(queue, [message])
    return out


def ticks_of(app: App) -> list[str]:
    return [datetime.fromtimestamp(e["schedule"]["tick"] / 1000, UTC).strftime("%m-%d %H:%M") for e in queued(app)]


def test_a_new_schedule_takes_the_current_minute_and_each_tick_once(
    app: App, clock: FakeClock, schedules: Schedules
) -> None:
    schedule(Report(kind="hourly"), hourly(at_minute=0), registry=schedules)
    scheduler = Scheduler(app)
    assert [o.what for o in scheduler.run_due()] == ["dispatched"]  # 12:00, seen at 12:00:30
    assert [o.what for o in scheduler.run_due()] == []  # the same minute again: nothing new
    clock.now = at("2026-03-07 13:00:05")
    assert [o.what for o in scheduler.run_due()] == ["dispatched"]
    found = queued(app)
    assert [e["payload"] for e in found] == [{"kind": "hourly"}, {"kind": "hourly"}]
    assert [e["id"] for e in found] == [
        run_id("sched.report", int(at("2026-03-07 12:00:00") * 1000)),
        run_id("sched.report", int(at("2026-03-07 13:00:00") * 1000)),
    ]


def test_a_deploy_does_not_run_the_ticks_of_the_last_grace(app: App, schedules: Schedules) -> None:
    # Every minute with 5 minutes' grace, seen first at 12:00:30: only 12:00 runs, not 11:56..11:59.
    schedule(Report(), every_minute(), registry=schedules)
    Scheduler(app).run_due()
    assert ticks_of(app) == ["03-07 12:00"]


def test_two_runners_racing_on_one_tick_dispatch_it_once(app: App, clock: FakeClock, schedules: Schedules) -> None:
    schedule(Report(), every_minute(), registry=schedules)
    Scheduler(app).run_due()
    queued(app)
    clock.now = at("2026-03-07 12:01:01")
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def runner(n: int) -> None:
        start.wait()
        outcomes.extend(o.what for o in Scheduler(app, owner=f"runner-{n}").run_due())

    threads = [threading.Thread(target=runner, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcomes.count("dispatched") == 1, outcomes
    assert ticks_of(app) == ["03-07 12:01"]


@pytest.mark.parametrize(
    ("zone", "spring_day", "expected_utc"),
    [
        ("America/New_York", "2026-03-08", "07:00"),  # 02:30 does not exist: it runs at 03:00 EDT
        ("Europe/London", "2026-03-29", "01:00"),  # 01:30 does not exist: it runs at 02:00 BST
    ],
)
def test_a_daily_tick_in_the_spring_forward_gap_runs_once_at_the_gap_end(
    app: App, clock: FakeClock, schedules: Schedules, zone: str, spring_day: str, expected_utc: str
) -> None:
    when = "02:30" if zone == "America/New_York" else "01:30"
    schedule(Report(), daily(at=when, tz=zone), registry=schedules)
    scheduler = Scheduler(app)
    clock.now = at(f"{spring_day} 00:00:00") - 86_400
    scheduler.run_due()
    minute = at(f"{spring_day} 00:00:30") - 86_400
    dispatched = []
    while minute < at(f"{spring_day} 12:00:00"):  # a pass every minute across the change
        clock.now = minute
        dispatched += [o.tick.strftime("%m-%d %H:%M") for o in scheduler.run_due() if o.what == "dispatched"]
        minute += 60
    assert dispatched[-1] == f"{spring_day[5:]} {expected_utc}", dispatched
    assert len(dispatched) == 2  # the day before, and the short day itself, each once


def test_hourly_runs_in_both_repeated_hours_but_daily_once_on_the_fall_back_day(
    app: App, clock: FakeClock, schedules: Schedules
) -> None:
    schedule(Report(kind="hourly"), hourly(at_minute=30, tz="America/New_York"), name="hourly", registry=schedules)
    schedule(Report(kind="daily"), daily(at="01:30", tz="America/New_York"), name="daily", registry=schedules)
    scheduler = Scheduler(app)
    clock.now = at("2026-11-01 04:00:30")  # 00:00 EDT
    scheduler.run_due()
    runs: dict[str, list[str]] = {"hourly": [], "daily": []}
    minute = clock.now
    while minute < at("2026-11-01 08:00:00"):  # through 01:00-02:00 local, twice
        clock.now = minute
        for o in scheduler.run_due():
            if o.what == "dispatched":
                runs[o.schedule].append(o.tick.strftime("%H:%M"))
        minute += 60
    assert runs["hourly"] == ["04:30", "05:30", "06:30", "07:30"]  # 00:30, 01:30 EDT, 01:30 EST, 02:30 EST
    assert runs["daily"] == ["05:30"]  # 01:30 EDT only


def _down_for_five_hours(
    app: App, clock: FakeClock, schedules: Schedules, catch_up: Any
) -> tuple[list[str], list[QueueEvent]]:
    schedule(Report(), hourly(), catch_up=catch_up, registry=schedules)
    seen: list[QueueEvent] = []
    app.events.on("schedule_missed")(seen.append)
    Scheduler(app).run_due()  # 12:00
    queued(app)
    clock.now = at("2026-03-07 17:30:00")  # 13:00 .. 17:00 passed with no runner; grace is 5 minutes
    Scheduler(app).run_due()
    Scheduler(app, owner="another").run_due()  # a second runner sees the same window
    return ticks_of(app), seen


def test_catch_up_once_runs_the_latest_missed_tick(app: App, clock: FakeClock, schedules: Schedules) -> None:
    ticks, missed = _down_for_five_hours(app, clock, schedules, "once")
    assert ticks == ["03-07 17:00"]
    assert (
        len(missed) == 1
        and missed[0].detail["missed"] == 4
        and missed[0].detail["first"].startswith("2026-03-07T13:00")
    )
    assert app.store.get(record_key("sched.report"))["missed"] == 4  # type: ignore[index]


def test_catch_up_skip_runs_none_and_reports_every_missed_tick(
    app: App, clock: FakeClock, schedules: Schedules
) -> None:
    ticks, missed = _down_for_five_hours(app, clock, schedules, "skip")
    assert ticks == []
    assert [e.detail["missed"] for e in missed] == [5]


def test_catch_up_n_runs_the_last_n_missed_ticks_in_order(app: App, clock: FakeClock, schedules: Schedules) -> None:
    ticks, missed = _down_for_five_hours(app, clock, schedules, 3)
    assert ticks == ["03-07 15:00", "03-07 16:00", "03-07 17:00"]
    assert [e.detail["missed"] for e in missed] == [2]


def test_a_late_pass_within_grace_runs_every_tick_on_time(app: App, clock: FakeClock, schedules: Schedules) -> None:
    schedule(Report(), every_minute(), catch_up="skip", registry=schedules)
    Scheduler(app).run_due()
    queued(app)
    clock.now = at("2026-03-07 12:04:10")  # four minutes late: within the grace of 5
    assert [o.what for o in Scheduler(app).run_due()] == ["dispatched"] * 4


class Slow(Job, name="sched.slow"):
    during: ClassVar[list[str]] = []
    scheduler: ClassVar[Scheduler | None] = None
    next_pass: ClassVar[float] = 0.0

    def handle(self) -> None:
        # While this run goes on, the next tick comes: it must be skipped.
        assert Slow.scheduler is not None
        clock = Slow.scheduler.app.clock
        assert isinstance(clock, FakeClock)
        clock.now = Slow.next_pass
        Slow.during.extend(o.what for o in Slow.scheduler.run_due())


def test_without_overlapping_skips_a_tick_while_the_last_run_goes_on(
    app: App, clock: FakeClock, schedules: Schedules
) -> None:
    schedule(Slow(), every_minute(), without_overlapping=True, registry=schedules)
    Slow.scheduler = scheduler = Scheduler(app)
    Slow.during.clear()
    assert [o.what for o in scheduler.run_due()] == ["dispatched"]  # 12:00
    clock.now = at("2026-03-07 12:01:02")
    assert [o.what for o in scheduler.run_due()] == ["skipped_overlap"]  # 12:00's job is queued, not started
    Slow.next_pass = at("2026-03-07 12:02:02")
    (message,) = app.connection.receive("default", 10, 0)
    app.runner.process(message)
    assert Slow.during == ["skipped_overlap"]  # 12:02 came while 12:00's job ran
    record = app.store.get(record_key("sched.slow")) or {}
    assert record["outcome"] == "ok" and record["finished_job_id"] == record["last_job_id"]
    clock.now = at("2026-03-07 12:03:02")
    assert [o.what for o in scheduler.run_due()] == ["dispatched"]


def test_a_run_that_died_holds_the_next_tick_only_until_its_timeout(
    app: App, clock: FakeClock, schedules: Schedules
) -> None:
    schedule(Report(), every_minute(), without_overlapping=True, registry=schedules)
    scheduler = Scheduler(app)
    scheduler.run_due()
    (message,) = app.connection.receive("default", 10, 0)
    run = app.runner.begin(message)  # started (the hook records it) ... and its worker dies: never finished
    assert not isinstance(run, Ack | Postpone)
    clock.now += 120
    assert {o.what for o in scheduler.run_due()} == {"skipped_overlap"}
    clock.now += app.settings.timeout  # it would have been interrupted at its timeout: its worker died
    assert "dispatched" in {o.what for o in scheduler.run_due()}


def test_a_condition_skips_ticks_and_a_raising_one_does_not_stop_other_schedules(
    app: App, schedules: Schedules
) -> None:
    def broken() -> bool:
        raise RuntimeError("no database")

    schedule(Report(kind="off"), every_minute(), name="off", condition=lambda: False, registry=schedules)
    schedule(Report(kind="broken"), every_minute(), name="broken", condition=broken, registry=schedules)
    schedule(Report(kind="on"), every_minute(), name="on", registry=schedules)
    outcomes = {o.schedule: o.what for o in Scheduler(app).run_due()}
    assert outcomes == {"off": "skipped_condition", "broken": "skipped_condition", "on": "dispatched"}
    assert [e["payload"]["kind"] for e in queued(app)] == ["on"]


def test_a_message_that_only_says_it_is_a_schedule_run_changes_no_record(app: App, schedules: Schedules) -> None:
    schedule(Report(), every_minute(), without_overlapping=True, registry=schedules)
    Scheduler(app).run_due()
    real = queued(app)[0]
    before = app.store.get(record_key("sched.report"))
    forged = Report(kind="forged")
    app.dispatch(forged)  # an ordinary job ...
    (message,) = app.connection.receive("default", 10, 0)
    envelope = decode(message.body)
    envelope.extra["schedule"] = real["schedule"]  # ... claiming to be the real tick's run
    tampered = dataclasses.replace(message, body=envelope.encode(None, queue="default"))
    app.runner.process(tampered)
    assert app.store.get(record_key("sched.report")) == before
    assert real["id"] != envelope.id
    # Nor a run of a tick no scheduler has claimed yet (the next minute's), with the id derived for it: its
    # start would otherwise hold `without_overlapping` against the real tick.
    for n, tick in enumerate((at("2026-03-07 12:01:00"), at("2099-01-01 00:00:00"))):
        envelope.extra["schedule"] = {"name": "sched.report", "tick": int(tick * 1000)}
        envelope.id = run_id("sched.report", int(tick * 1000))
        body = envelope.encode(None, queue="default")
        app.runner.process(dataclasses.replace(message, receipt_handle=f"forged-{n}", body=body))
        assert app.store.get(record_key("sched.report")) == before


def test_schedule_test_dispatches_now_without_touching_the_record(app: App, schedules: Schedules) -> None:
    schedule(Report(kind="try"), daily(at="03:00"), registry=schedules)
    job_id = Scheduler(app).dispatch_now("sched.report")
    assert [e["id"] for e in queued(app)] == [job_id]
    assert app.store.get(record_key("sched.report")) is None
    with pytest.raises(ConfigurationError, match="no schedule named 'nope'"):
        Scheduler(app).dispatch_now("nope")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: schedule(Report, every_minute(), registry=r), "job instance"),  # type: ignore[arg-type]
        (lambda r: schedule(Report(), "61 * * * *", registry=r), "minute"),
        (lambda r: schedule(Report(), every_minute(), catch_up="all", registry=r), "catch_up"),  # type: ignore[arg-type]
        (lambda r: schedule(Report(), every_minute(), grace=30, registry=r), "grace"),
        (lambda r: schedule(Report(), every_minute(), name="no spaces", registry=r), "schedule name"),
        (lambda r: schedule(Report(), 5, registry=r), "takes a Cron"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_schedule_is_refused_naming_what_to_change(call: Any, message: str, schedules: Schedules) -> None:
    with pytest.raises(ConfigurationError, match=message):
        call(schedules)
    assert len(schedules) == 0


def test_two_schedules_of_one_job_need_names(schedules: Schedules) -> None:
    schedule(Report(kind="a"), every_minute(), registry=schedules)
    schedule(Report(kind="a"), every_minute(), registry=schedules)  # the same declaration, imported twice: fine
    with pytest.raises(ConfigurationError, match="give one a name"):
        schedule(Report(kind="b"), hourly(), registry=schedules)
    schedule(Report(kind="b"), Cron.parse("0 * * * *"), name="report-b", registry=schedules)
    assert [s.name for s in schedules] == ["report-b", "sched.report"]


def test_a_tick_whose_runner_died_after_marking_it_is_sent_once_its_lease_is_over(
    app: App, clock: FakeClock, schedules: Schedules
) -> None:
    schedule(Report(), hourly(), registry=schedules)
    scheduler = Scheduler(app)
    scheduler.run_due()
    queued(app)
    clock.now = at("2026-03-07 13:00:10")
    # Another runner marked 13:00 "sending" and was killed before it sent.
    thirteen = int(at("2026-03-07 13:00:00") * 1000)
    mark = {"state": "sending", "owner": "dead@1", "claimed_ms": int(clock.now * 1000)}
    app.store.add(tick_key("sched.report", thirteen), mark, 3600)
    assert [o.what for o in scheduler.run_due()] == ["in_progress"]
    clock.now += 30
    assert [o.what for o in scheduler.run_due()] == ["in_progress"]  # still within the lease: not moved past
    clock.now += once.SEND_LEASE_S + app.store.skew
    assert [o.what for o in scheduler.run_due()] == ["dispatched"]
    assert ticks_of(app) == ["03-07 13:00"]


def test_an_on_time_tick_whose_send_failed_is_sent_by_the_next_pass_and_a_late_one_is_reported(
    app: App, clock: FakeClock, schedules: Schedules, monkeypatch: pytest.MonkeyPatch
) -> None:
    schedule(Report(), hourly(), catch_up="skip", registry=schedules)
    seen: list[QueueEvent] = []
    app.events.on("schedule_missed")(seen.append)
    scheduler = Scheduler(app)
    scheduler.run_due()
    queued(app)
    real_send = app.connection.send_batch

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("SQS said no")

    monkeypatch.setattr(app.connection, "send_batch", refused)
    clock.now = at("2026-03-07 13:00:10")
    assert [(o.what, "SQS said no" in o.detail) for o in scheduler.run_due()] == [("failed", True)]
    clock.now += 60
    assert [o.what for o in scheduler.run_due()] == ["failed"]  # tried again: still within its grace
    monkeypatch.setattr(app.connection, "send_batch", real_send)
    clock.now += 60
    assert [o.what for o in scheduler.run_due()] == ["dispatched"]
    assert ticks_of(app) == ["03-07 13:00"] and seen == []
    monkeypatch.setattr(app.connection, "send_batch", refused)
    clock.now = at("2026-03-07 14:00:10")
    scheduler.run_due()
    clock.now = at("2026-03-07 14:06:00")  # past its grace: failing all along, it was missed
    assert [o.what for o in scheduler.run_due()] == ["missed"]
    assert [e.detail["missed"] for e in seen] == [1]


def test_an_older_run_delivered_again_does_not_make_the_latest_look_unfinished(
    app: App, clock: FakeClock, schedules: Schedules
) -> None:
    schedule(Report(), every_minute(), without_overlapping=True, registry=schedules)
    scheduler = Scheduler(app)
    scheduler.run_due()
    (first,) = app.connection.receive("default", 10, 0)
    app.runner.process(first)  # 12:00 ran
    clock.now = at("2026-03-07 12:01:02")
    scheduler.run_due()
    (second,) = app.connection.receive("default", 10, 0)
    app.runner.process(second)  # 12:01 ran
    app.runner.process(dataclasses.replace(first, receipt_handle="again"))  # SQS delivers 12:00 once more
    record = app.store.get(record_key("sched.report")) or {}
    assert record["finished_job_id"] == record["last_job_id"] == decode(second.body).id
    clock.now = at("2026-03-07 12:02:02")
    assert [o.what for o in scheduler.run_due()] == ["dispatched"]


class Flaky(Job, name="sched.flaky"):
    tries = 3

    def handle(self) -> None:
        raise RuntimeError("the report service is down")


def test_a_released_run_holds_without_overlapping_until_its_retry_is_over(
    app: App, clock: FakeClock, schedules: Schedules
) -> None:
    schedule(Flaky(), every_minute(), without_overlapping=True, registry=schedules)
    scheduler = Scheduler(app)
    scheduler.run_due()
    (message,) = app.connection.receive("default", 10, 0)
    decision = app.runner.process(message)
    assert isinstance(decision, Release)
    clock.now += decision.delay + 30  # its retry is due, not yet over
    assert {o.what for o in scheduler.run_due()} == {"skipped_overlap"}
    clock.now += app.settings.timeout + 60 + app.store.skew  # the retry never came (its worker died): it expires
    assert "dispatched" in {o.what for o in scheduler.run_due()}


def test_a_skipped_tick_is_never_sent_by_a_runner_that_looks_again(
    app: App, clock: FakeClock, schedules: Schedules
) -> None:
    allowed = [False]
    schedule(Report(), hourly(), condition=lambda: allowed[0], registry=schedules)
    assert [o.what for o in Scheduler(app).run_due()] == ["skipped_condition"]
    allowed[0] = True
    stale = int(at("2026-03-07 11:59:00") * 1000)
    app.store.update(record_key("sched.report"), set={"last_tick_ms": stale})  # a stale runner moved it back
    clock.now += 60
    assert [o.what for o in Scheduler(app).run_due()] == ["sent_elsewhere"]
    assert queued(app) == []


def test_runners_whose_clocks_disagree_within_the_skew_dispatch_each_tick_once(
    app: App, clock: FakeClock, schedules: Schedules
) -> None:
    schedule(Report(), every_minute(), registry=schedules)
    Scheduler(app).run_due()
    queued(app)
    # A second runner sharing the table and the queue, its clock 40 s ahead (SQSJOBS_CLOCK_SKEW is 60).
    ahead = FakeClock(clock.now + 40)
    other = App(connection=app.connection, store="memory", clock=ahead, schedules=schedules)
    assert isinstance(app.store, MemoryStore)
    other.store = app.store.view(ahead)
    dispatched: list[str] = []
    for _ in range(10):  # ten minutes of passes, each runner once a minute at its own time
        for runner, its_clock in ((Scheduler(other, owner="ahead"), ahead), (Scheduler(app, owner="behind"), clock)):
            its_clock.now += 60
            dispatched += [o.tick.strftime("%m-%d %H:%M") for o in runner.run_due() if o.what == "dispatched"]
    ticks = ticks_of(app)
    assert sorted(dispatched) == ticks and len(ticks) == len(set(ticks)) == 11, ticks  # 12:01 .. 12:11, each once


class Nightly(Job, name="sched.nightly"):
    seen: ClassVar[list[tuple[datetime | None, datetime | None]]] = []

    def handle(self) -> None:
        Nightly.seen.append((sqsjobs.scheduled_for(self), sqsjobs.dispatched_at(self)))


def test_a_scheduled_job_reads_its_tick_however_late_it_runs(app: App, clock: FakeClock, schedules: Schedules) -> None:
    Nightly.seen.clear()
    schedule(Nightly(), daily(at="12:00"), registry=schedules)
    Scheduler(app).run_due()  # 12:00:30: the 12:00 tick
    clock.now = at("2026-03-08 03:00:00")  # a backlog: it runs the next night
    (message,) = app.connection.receive("default", 10, 0)
    app.runner.process(message)
    with app.activate():
        Nightly().dispatch()  # by hand: no tick, its dispatch time
    (by_hand,) = app.connection.receive("default", 10, 0)
    app.runner.process(by_hand)
    Nightly().handle()  # called directly: neither
    assert Nightly.seen == [
        (datetime(2026, 3, 7, 12, 0, tzinfo=UTC), datetime(2026, 3, 7, 12, 0, 30, tzinfo=UTC)),
        (None, datetime(2026, 3, 8, 3, 0, tzinfo=UTC)),
        (None, None),
    ]


def test_a_tick_whose_job_ran_before_the_scheduler_recorded_it_shows_finished_and_holds_no_later_tick(
    app: App, clock: FakeClock, schedules: Schedules, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler records a tick's job as the latest only after sending it; an idle worker may receive
    and finish the job in between. Its run must still be the record's, or `without_overlapping` would
    take it for a job queued and never started, and skip every later tick until that hold expired."""
    schedule(Report(), every_minute(), without_overlapping=True, registry=schedules)
    scheduler = Scheduler(app)
    store = app.store
    store_update = store.update
    ran_first: list[object] = []

    def job_runs_first(key: str, **changes: Any) -> Any:
        if not ran_first and "dispatched_ms" in (changes.get("set") or {}):
            (message,) = app.connection.receive("default", 10, 0)
            ran_first.append(app.runner.process(message))
        return store_update(key, **changes)

    monkeypatch.setattr(store, "update", job_runs_first)
    assert [o.what for o in scheduler.run_due()] == ["dispatched"]  # 12:00
    assert ran_first == [Ack()] and len(Report.runs) == 1
    (state,) = schedule_states(app)
    assert (state["state"], state["outcome"], state["last_job_id"]) == ("finished", "ok", Report.runs[0][1])
    clock.now = at("2026-03-07 12:01:02")
    assert [o.what for o in scheduler.run_due()] == ["dispatched"]  # not held by a run that is long over

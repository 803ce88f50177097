"""What the end of a hold does beyond its own jobs: the batches they belong to, the callbacks and ticks
sent once, the fake that recorded them, and the word said when nothing watches a transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import ClassVar

import pytest

from sqsjobs import App, DispatchError, Job, after_commit, aws, batch, dispatch_plan, find_batch, hold_dispatches
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.cron import every_minute
from sqsjobs.envelope import decode
from sqsjobs.schedules import Schedules, schedule
from sqsjobs.scheduling import Scheduler
from sqsjobs.stores.memory import MemoryStore
from sqsjobs.testing.drain import memory_app, run_until_empty
from sqsjobs.testing.fake import fake
from sqsjobs.testing.faults import FaultPlan
from tests.helpers import FakeClock


class Part(Job, name="after_commit_ends.part"):
    n: int

    def handle(self) -> None:
        pass


class Assemble(Job, name="after_commit_ends.assemble"):
    runs: ClassVar[int] = 0

    def handle(self) -> None:
        Assemble.runs += 1


@pytest.fixture(autouse=True)
def _fresh() -> None:
    Assemble.runs = 0


def waiting(app: App) -> list[str]:
    connection = app.connection
    assert isinstance(connection, MemoryConnection)
    return [decode(m.body).job for m in connection._queue("default").messages]


# -- batches ----------------------------------------------------------------------------------------
def test_rolling_back_an_add_to_a_batch_whose_other_members_finished_keeps_the_batch_and_runs_then() -> None:
    app = memory_app()
    with app.activate():
        made = batch([Part(n=1), Part(n=2)]).then(Assemble()).dispatch()
        with pytest.raises(RuntimeError), hold_dispatches():
            made.add([Part(n=3)])  # total 3
            run_until_empty(app)  # meanwhile a worker finishes parts 1 and 2: 2 of 3
            raise RuntimeError("rolled back")
        run_until_empty(app)
        fresh = made.fresh()
    assert (fresh.total, fresh.processed, fresh.finished) == (2, 2, True)
    assert Assemble.runs == 1


def test_a_member_sqs_refuses_at_the_commit_leaves_the_batch_total(
    sqs_app: App, faults: FaultPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs_app.store = MemoryStore()  # the batch record; this test provisions no table
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    aws.reset_clients()
    faults.add(service="sqs", operation="SendMessageBatch", kind="500", times=20)
    with pytest.raises(DispatchError, match="were not queued"), hold_dispatches():
        made = batch([Part(n=1), Part(n=2)]).dispatch()
    found = find_batch(made.id)
    assert found is not None
    assert found.total == 0  # as when dispatched directly: the batch does not wait for jobs never queued


def test_a_batch_a_rolled_back_hold_finishes_sends_its_callback_now_not_into_the_hold_around() -> None:
    app = memory_app()
    with app.activate():
        made = batch([Part(n=1)]).then(Assemble()).dispatch()
        with pytest.raises(KeyError), hold_dispatches():  # an outer transaction that rolls back too
            with pytest.raises(RuntimeError), hold_dispatches():
                made.add([Part(n=2)])
                run_until_empty(app)  # part 1 finishes: 1 of 2
                raise RuntimeError
            # the rollback shrank the batch to 1 of 1: finished, its `then` sent (and marked sent) now
            raise KeyError
        run_until_empty(app)
    assert Assemble.runs == 1


# -- scheduler ticks --------------------------------------------------------------------------------
def test_a_tick_dispatched_inside_a_rolled_back_transaction_is_still_sent() -> None:
    schedules = Schedules()
    schedule(Assemble(), every_minute(), registry=schedules)
    app = App(
        connection="memory",
        store="memory",
        schedules=schedules,
        clock=FakeClock(datetime(2026, 3, 7, 12, 0, 30, tzinfo=UTC).timestamp()),
    )
    with app.activate():
        with pytest.raises(RuntimeError), hold_dispatches():
            assert [o.what for o in Scheduler(app).run_due()] == ["dispatched"]
            raise RuntimeError
        assert waiting(app) == ["after_commit_ends.assemble"]  # marked sent once: it had to go out


# -- fake() -----------------------------------------------------------------------------------------
def test_a_fake_that_ended_before_the_commit_still_owns_the_jobs_dispatched_in_it() -> None:
    app = App(connection="memory")
    with app.activate(), hold_dispatches():
        with fake() as dispatched:
            Part(n=1).dispatch()
        dispatched.assert_nothing_dispatched()  # held until the commit
        Part(n=2).dispatch()  # the real app's, held too
    dispatched.assert_dispatched(Part, lambda part: part.n == 1, times=1)
    dispatched.assert_not_dispatched(Part, lambda part: part.n == 2)
    assert waiting(app) == ["after_commit_ends.part"]  # only the job dispatched on the real app


# -- nothing watches --------------------------------------------------------------------------------
@pytest.fixture
def nothing_watched(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(after_commit, "_outer", [])
    monkeypatch.setattr(after_commit, "_integrations", set())
    monkeypatch.setattr(dispatch_plan, "_warned_unwatched", False)
    yield


def test_asking_to_wait_for_a_commit_with_nothing_watching_warns_once(
    nothing_watched: None, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(connection="memory", after_commit=True)
    with app.activate(), caplog.at_level(logging.WARNING, "sqsjobs.dispatch"):
        Part(n=1).dispatch()
        Part(n=2).dispatch(after_commit=True)
    assert waiting(app) == ["after_commit_ends.part"] * 2  # sent at once, as before
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "hold_until_commit" in warnings[0].getMessage()

"""`hold_dispatches()`: dispatches wait for the block to exit cleanly and are dropped when it raises."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest

from sqsjobs import (
    App,
    ConfigurationError,
    DispatchError,
    Job,
    after_commit,
    aws,
    batch,
    chain,
    find_batch,
    hold_dispatches,
)
from sqsjobs.after_commit import Hold, sending_now
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.envelope import decode
from sqsjobs.settings import load_settings
from sqsjobs.stores.memory import MemoryStore
from sqsjobs.testing.fake import fake
from sqsjobs.testing.faults import FaultPlan
from tests.helpers import counts


class Ship(Job, name="after_commit.ship"):
    order_id: int

    def handle(self) -> None:
        ran.append(self.order_id)


class Rebuild(Job, name="after_commit.rebuild"):
    unique_for = timedelta(minutes=10)

    def handle(self) -> None:
        ran.append(-1)


ran: list[int] = []


@pytest.fixture
def app() -> Iterator[App]:
    ran.clear()
    app = App(connection="memory")
    with app.activate():
        yield app


def queued(app: App, queue: str = "default") -> list[str]:
    """The job ids waiting on `queue`, read without taking them."""
    connection = app.connection
    assert isinstance(connection, MemoryConnection)
    return [decode(m.body).id for m in connection._queue(queue).messages]


def test_a_held_dispatch_is_sent_when_the_block_exits_with_the_id_it_returned(app: App) -> None:
    with hold_dispatches() as hold:
        dispatched = Ship(order_id=1).dispatch()
        assert queued(app) == []
        assert [d.job_id for d in hold.dispatched] == [dispatched.job_id]
    assert queued(app) == [dispatched.job_id]
    assert dispatched.queued and dispatched.message_id == ""  # accepted, sent later: no SQS message id yet


def test_a_block_that_raises_sends_nothing_and_frees_the_unique_lock(app: App) -> None:
    with pytest.raises(RuntimeError), hold_dispatches():
        assert Rebuild().dispatch().queued
        assert not Rebuild().dispatch().queued  # the lock is taken at dispatch: a duplicate is known at once
        raise RuntimeError("the order could not be saved")
    assert queued(app) == []
    assert Rebuild().dispatch().queued  # not stuck behind a lock of a job that never existed
    assert len(queued(app)) == 1


def test_an_inner_block_that_raises_drops_only_its_own_dispatches(app: App) -> None:
    with hold_dispatches() as outer:
        first = Ship(order_id=1).dispatch()
        with pytest.raises(ValueError), hold_dispatches():
            Ship(order_id=2).dispatch()
            raise ValueError
        with hold_dispatches():
            third = Ship(order_id=3).dispatch()
        assert queued(app) == []  # the inner block that exited cleanly joined the outer one
        assert [d.job_id for d in outer.dispatched] == [first.job_id, third.job_id]
    assert queued(app) == [first.job_id, third.job_id]


def test_an_outer_block_that_raises_drops_what_its_inner_blocks_handed_it(app: App) -> None:
    with pytest.raises(KeyError), hold_dispatches():
        with hold_dispatches():
            Ship(order_id=1).dispatch()
        raise KeyError
    assert queued(app) == []


def test_after_commit_false_is_sent_at_once_and_true_outside_a_block_too(app: App) -> None:
    with hold_dispatches():
        now = Ship(order_id=1).dispatch(after_commit=False)
        assert queued(app) == [now.job_id]
    later = Ship(order_id=2).dispatch(after_commit=True)  # nothing to wait for
    assert queued(app) == [now.job_id, later.job_id]


def test_sending_now_overrides_every_hold_in_its_block(app: App) -> None:
    with hold_dispatches(), sending_now():
        now = Ship(order_id=1).dispatch()
        assert queued(app) == [now.job_id]


def test_dispatch_many_chains_and_batches_are_held_and_go_out_together(app: App) -> None:
    with hold_dispatches() as hold:
        many = Ship.dispatch_many([Ship(order_id=1), Ship(order_id=2)])
        chain([Ship(order_id=3), Ship(order_id=4)]).dispatch()
        made = batch([Ship(order_id=5), Ship(order_id=6)]).dispatch()
        assert queued(app) == []
        assert len(hold.dispatched) == 5  # two jobs, a chain's first link, two batch members
    ids = queued(app)
    assert len(ids) == 5 and {d.job_id for d in many} <= set(ids)
    assert find_batch(made.id) is not None


def test_a_batch_made_in_a_rolled_back_block_is_deleted(app: App) -> None:
    with pytest.raises(RuntimeError), hold_dispatches():
        made = batch([Ship(order_id=1), Ship(order_id=2)]).then(Ship(order_id=9)).dispatch()
        raise RuntimeError
    assert queued(app) == []
    assert find_batch(made.id) is None  # no record of a batch whose jobs never left the transaction


def test_jobs_added_to_a_running_batch_in_a_rolled_back_block_leave_its_total(app: App) -> None:
    made = batch([Ship(order_id=1)]).dispatch()
    with pytest.raises(RuntimeError), hold_dispatches():
        made.add([Ship(order_id=2), Ship(order_id=3)])
        assert made.fresh().total == 3
        raise RuntimeError
    assert made.fresh().total == 1  # the batch finishes with its one job, not waiting for two that never come
    assert len(queued(app)) == 1


def test_the_sync_connection_runs_held_jobs_after_the_block_not_inside_it() -> None:
    ran.clear()
    app = App(connection="sync")
    with app.activate():
        with hold_dispatches():
            Ship(order_id=7).dispatch()
            assert ran == []
        assert ran == [7]


def test_async_dispatches_are_held_too(app: App) -> None:
    async def dispatch() -> None:
        with hold_dispatches():
            await Ship(order_id=1).dispatch_async()
            await Ship.dispatch_many_async([Ship(order_id=2)])
            assert queued(app) == []

    asyncio.run(dispatch())
    assert len(queued(app)) == 2


def test_the_fake_records_a_held_dispatch_when_it_is_sent() -> None:
    with fake() as dispatched:
        with hold_dispatches():
            Ship(order_id=1).dispatch()
            dispatched.assert_nothing_dispatched()
        dispatched.assert_dispatched(Ship, lambda job: job.order_id == 1, times=1)
        with pytest.raises(RuntimeError), hold_dispatches():
            Ship(order_id=2).dispatch()
            raise RuntimeError
    dispatched.assert_not_dispatched(Ship, lambda job: job.order_id == 2)


def test_a_send_that_fails_after_the_commit_raises_and_logs_what_to_dispatch_again(
    sqs_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    sqs_app.store = MemoryStore()  # the unique lock; this test provisions no table
    with pytest.raises(DispatchError) as raised, caplog.at_level(logging.ERROR, "sqsjobs.dispatch"), hold_dispatches():
        Ship(order_id=1).dispatch()
        lost = Rebuild().dispatch(queue="no-such-queue")
    assert [job_id for job_id, _, _ in raised.value.not_queued] == [lost.job_id]
    assert "dispatch these jobs again" in caplog.text and lost.job_id in caplog.text
    assert Rebuild().dispatch().queued  # its unique lock was freed
    assert counts(sqs_app, "default")["ApproximateNumberOfMessages"] == 2  # the other job was sent all the same


def test_the_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQSJOBS_AFTER_COMMIT", "sometimes")
    with pytest.raises(ConfigurationError, match="SQSJOBS_AFTER_COMMIT"):
        load_settings()
    monkeypatch.setenv("SQSJOBS_AFTER_COMMIT", "true")
    assert load_settings().after_commit is True


def test_sqs_refusing_the_send_at_commit_raises_and_frees_the_lock(
    sqs_app: App, faults: FaultPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs_app.store = MemoryStore()
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no botocore retries: the refusal is final at once
    aws.reset_clients()
    faults.add(service="sqs", operation="SendMessageBatch", kind="500", times=20)  # beyond botocore's retries
    with pytest.raises(DispatchError, match="were not queued") as raised, hold_dispatches():
        held = Rebuild().dispatch()
    assert [job_id for job_id, _, _ in raised.value.not_queued] == [held.job_id]
    faults.clear()
    assert Rebuild().dispatch().queued


left_open: list[Hold] = []


class LeavesATransactionOpen(Job, name="after_commit.leaves-open"):
    """A job whose database session is still in a watched transaction when `handle()` returns (a
    teardown hook commits or rolls it back later)."""

    def handle(self) -> None:
        hold = Hold(after_commit.innermost(), explicit=True)
        after_commit.enter(hold)
        left_open.append(hold)
        ran.append(0)


def test_a_chains_next_link_is_sent_even_when_the_job_left_a_transaction_open() -> None:
    ran.clear()
    app = App(connection="sync")
    try:
        with app.activate():
            chain([LeavesATransactionOpen(), Ship(order_id=2)]).dispatch()
        assert ran == [0, 2]  # the next link was not held by (and lost with) the job's transaction
        assert left_open[0].items == []
    finally:
        for hold in left_open:
            after_commit.leave(hold)
        left_open.clear()


def test_asking_for_after_commit_with_nothing_watching_says_so_once() -> None:
    """In a fresh process nothing has loaded sqsjobs.after_commit: the dispatch goes out at once, and
    the user is told why their setting did nothing (once, not per dispatch)."""
    script = (
        "from sqsjobs import App, Job\n"
        "class Ping(Job, name='after_commit.ping'):\n"
        "    def handle(self) -> None: pass\n"
        "app = App(connection='memory')\n"
        "with app.activate():\n"
        "    Ping().dispatch(after_commit=True)\n"
        "    Ping().dispatch(after_commit=True)\n"
        "print(len(app.connection.receive('default', 10, 0)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "2"  # sent at once: nothing could hold them
    assert done.stderr.count("no integration watches a transaction") == 1

"""After-commit dispatch in Django's atomic blocks, on a minimal project configured here (SQLite file)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import django
import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import TestCase

from sqsjobs import App, Job, hold_dispatches
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.envelope import decode
from sqsjobs.integrations.django import hold_until_commit, stop_holding

if not settings.configured:
    settings.configure(
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(Path(tempfile.mkdtemp()) / "db.sqlite3")}
        },
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()


class Notify(Job, name="after_commit_dj.notify"):
    order_id: int

    def handle(self) -> None:
        pass


class Recount(Job, name="after_commit_dj.recount"):
    unique_for = timedelta(minutes=5)

    def handle(self) -> None:
        pass


@pytest.fixture
def holding() -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, status TEXT)")
        cursor.execute("DELETE FROM orders")
    hold_until_commit()
    yield
    stop_holding()


@pytest.fixture
def app(holding: None) -> Iterator[App]:
    app = App(connection="memory", after_commit=True)
    with app.activate():
        yield app


def queued(app: App) -> list[int]:
    connection = app.connection
    assert isinstance(connection, MemoryConnection)
    return [decode(m.body).payload.get("order_id", 0) for m in connection._queue("default").messages]


def insert(order_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO orders (id, status) VALUES (%s, 'paid')", [order_id])


def test_the_job_is_sent_when_the_outermost_atomic_block_commits(app: App) -> None:
    with transaction.atomic():
        insert(1)
        Notify(order_id=1).dispatch()
        with transaction.atomic():
            Notify(order_id=2).dispatch()
        assert queued(app) == []
    assert queued(app) == [1, 2]


def test_a_rollback_sends_nothing_and_frees_the_unique_lock(app: App) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        insert(1)
        assert Recount().dispatch().queued
        raise RuntimeError("payment declined")
    assert queued(app) == []
    assert Recount().dispatch().queued  # sent at once (autocommit): the rolled-back one left no lock


def test_a_rolled_back_savepoint_drops_only_its_own_dispatches(app: App) -> None:
    with transaction.atomic():
        Notify(order_id=1).dispatch()
        with pytest.raises(ValueError), transaction.atomic():
            Notify(order_id=2).dispatch()
            assert Recount().dispatch().queued
            raise ValueError
        Notify(order_id=3).dispatch()
        assert Recount().dispatch().queued  # the savepoint's lock was freed when Django dropped its callback
    assert sorted(queued(app)) == [0, 1, 3]


def test_a_durable_block_sends_at_its_end(app: App) -> None:
    with transaction.atomic(durable=True):
        Notify(order_id=1).dispatch()
        assert queued(app) == []
    assert queued(app) == [1]


def test_outside_an_atomic_block_and_with_after_commit_false_the_job_is_sent_at_once(app: App) -> None:
    Notify(order_id=1).dispatch()
    with transaction.atomic():
        Notify(order_id=2).dispatch(after_commit=False)
        assert queued(app) == [1, 2]


def test_hold_dispatches_inside_an_atomic_block_waits_for_the_commit(app: App) -> None:
    with transaction.atomic():
        with hold_dispatches():
            Notify(order_id=1).dispatch(after_commit=None)
        assert queued(app) == []  # the block exited, but the database has not committed yet
    assert queued(app) == [1]


def test_capture_on_commit_callbacks_sends_what_was_dispatched_inside_it(app: App) -> None:
    with transaction.atomic():  # what a Django TestCase wraps each test in, and never commits
        Notify(order_id=1).dispatch()
        with TestCase.captureOnCommitCallbacks(execute=True):
            Notify(order_id=2).dispatch()
        assert queued(app) == [2]
        transaction.set_rollback(True)
    assert queued(app) == [2]


def test_a_send_that_fails_at_commit_is_logged_and_other_callbacks_still_run(
    holding: None, sqs_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []
    with transaction.atomic():
        insert(1)
        held = Notify(order_id=1).dispatch(queue="no-such-queue", after_commit=True)
        transaction.on_commit(lambda: ran.append("yours"))
    assert ran == ["yours"]
    assert "dispatch these jobs again" in caplog.text and held.job_id in caplog.text
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM orders")
        assert cursor.fetchone() == (1,)

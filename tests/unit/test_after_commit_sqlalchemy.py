"""After-commit dispatch with SQLAlchemy sessions, against real SQLite transactions (a file database, so a
second connection sees only what was committed — as a worker would)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, String, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqsjobs import App, DispatchError, Job, hold_dispatches
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.envelope import decode
from sqsjobs.integrations.sqlalchemy import hold_until_commit, stop_holding
from sqsjobs.testing.fake import fake


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20))


#: What `ShipOrder` found when it ran: the order's status, or None when the row was not there (yet).
found: list[str | None] = []
engine_for_workers: list[Engine] = []


class ShipOrder(Job, name="after_commit_sa.ship"):
    order_id: int

    def handle(self) -> None:
        with engine_for_workers[0].connect() as connection:  # another connection, as a worker's would be
            row = connection.execute(text("SELECT status FROM orders WHERE id = :id"), {"id": self.order_id}).first()
        found.append(row[0] if row else None)


class Reindex(Job, name="after_commit_sa.reindex"):
    unique_for = timedelta(minutes=5)

    def handle(self) -> None:
        pass


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    Base.metadata.create_all(engine)
    engine_for_workers[:] = [engine]
    found.clear()
    factory = sessionmaker(engine)
    hold_until_commit(factory)
    yield factory
    stop_holding(factory)
    engine.dispose()


@pytest.fixture
def app() -> Iterator[App]:
    app = App(connection="memory", after_commit=True)
    with app.activate():
        yield app


def queued(app: App) -> list[str]:
    connection = app.connection
    assert isinstance(connection, MemoryConnection)
    return [decode(m.body).job for m in connection._queue("default").messages]


def test_the_job_is_on_the_queue_only_after_the_commit(factory: sessionmaker[Session], app: App) -> None:
    with factory.begin() as session:
        session.add(Order(id=1, status="paid"))
        session.flush()
        ShipOrder(order_id=1).dispatch()
        assert queued(app) == []
    assert queued(app) == ["after_commit_sa.ship"]


def test_a_worker_that_runs_the_job_at_once_finds_the_committed_row(factory: sessionmaker[Session]) -> None:
    app = App(connection="sync", after_commit=True)  # the fastest worker there is: it runs the job at send
    with app.activate():
        with factory.begin() as session:
            session.add(Order(id=1, status="paid"))
            session.flush()
            ShipOrder(order_id=1).dispatch()
        with factory.begin() as session:
            session.add(Order(id=2, status="paid"))
            session.flush()
            ShipOrder(order_id=2).dispatch(after_commit=False)  # the bug this prevents
    assert found == ["paid", None]


def test_a_rollback_sends_nothing_and_frees_the_unique_lock(factory: sessionmaker[Session], app: App) -> None:
    with pytest.raises(RuntimeError), factory.begin() as session:
        session.add(Order(id=1, status="paid"))
        assert Reindex().dispatch().queued
        raise RuntimeError("payment declined")
    assert queued(app) == []
    with factory() as session:
        assert session.scalars(select(Order)).all() == []
    assert Reindex().dispatch().queued  # a job that never existed does not hold the lock


def test_a_rolled_back_savepoint_drops_only_its_own_dispatches(factory: sessionmaker[Session], app: App) -> None:
    with factory.begin() as session:
        ShipOrder(order_id=1).dispatch()
        savepoint = session.begin_nested()
        ShipOrder(order_id=2).dispatch()
        assert Reindex().dispatch().queued
        savepoint.rollback()
        with session.begin_nested():
            ShipOrder(order_id=3).dispatch()
        assert queued(app) == []  # the released savepoint's job waits for the transaction
        assert Reindex().dispatch().queued  # the rolled-back savepoint freed its lock
    assert sorted(queued(app)) == ["after_commit_sa.reindex", *["after_commit_sa.ship"] * 2]


def test_an_autobegun_transaction_holds_until_commit_and_drops_on_rollback(
    factory: sessionmaker[Session], app: App
) -> None:
    session = factory()
    session.add(Order(id=1, status="paid"))
    session.flush()  # autobegins the transaction
    ShipOrder(order_id=1).dispatch()
    assert queued(app) == []
    session.commit()
    assert queued(app) == ["after_commit_sa.ship"]
    session.add(Order(id=2, status="paid"))  # a new transaction, that writes
    ShipOrder(order_id=2).dispatch()
    session.rollback()
    session.close()
    assert queued(app) == ["after_commit_sa.ship"]


def test_without_the_setting_only_after_commit_true_is_held(factory: sessionmaker[Session]) -> None:
    app = App(connection="memory")  # SQSJOBS_AFTER_COMMIT off
    with app.activate(), factory.begin() as session:
        session.execute(select(Order))
        ShipOrder(order_id=1).dispatch()
        ShipOrder(order_id=2).dispatch(after_commit=True)
        assert len(queued(app)) == 1
    assert len(queued(app)) == 2


def test_outside_a_transaction_the_job_is_sent_at_once(factory: sessionmaker[Session], app: App) -> None:
    with factory() as session:
        session.commit()
        ShipOrder(order_id=1).dispatch()
        assert queued(app) == ["after_commit_sa.ship"]


def test_a_send_that_fails_at_commit_raises_from_commit_and_the_row_stays(
    factory: sessionmaker[Session], sqs_app: App
) -> None:
    with pytest.raises(DispatchError, match="not queued") as raised, factory.begin() as session:
        session.add(Order(id=1, status="paid"))
        held = ShipOrder(order_id=1).dispatch(queue="no-such-queue", after_commit=True)
    assert [job_id for job_id, _, _ in raised.value.not_queued] == [held.job_id]
    with factory() as session:
        assert session.get(Order, 1) is not None  # committed: the error says to dispatch the job again


def test_the_fake_records_the_dispatch_at_commit(factory: sessionmaker[Session]) -> None:
    with fake() as dispatched:
        with factory.begin() as session:
            session.add(Order(id=1, status="paid"))
            ShipOrder(order_id=1).dispatch(after_commit=True)
            dispatched.assert_nothing_dispatched()
        dispatched.assert_dispatched(ShipOrder, times=1)
        with pytest.raises(RuntimeError), factory.begin() as session:
            ShipOrder(order_id=2).dispatch(after_commit=True)
            raise RuntimeError
    dispatched.assert_not_dispatched(ShipOrder, lambda job: job.order_id == 2)


def test_a_hold_dispatches_block_inside_the_transaction_waits_for_its_commit(factory: sessionmaker[Session]) -> None:
    app = App(connection="memory")  # setting off: the explicit block is what asks to hold
    with app.activate(), factory.begin() as session:
        session.add(Order(id=1, status="paid"))
        with hold_dispatches():
            ShipOrder(order_id=1).dispatch()
        assert queued(app) == []  # the block ended; the transaction has not
    assert queued(app) == ["after_commit_sa.ship"]

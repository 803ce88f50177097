"""SQLAlchemy transactions whose end is unusual: never closed, no longer watched, watched twice, read-only,
after a failed flush, or begun in another context (FastAPI's thread pool). None may lose a later dispatch,
nor a held one that had nothing to wait for."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import to_thread
from sqlalchemy import String, create_engine, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, scoped_session, sessionmaker

from sqsjobs import App, ConfigurationError, Job
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.envelope import decode
from sqsjobs.integrations.sqlalchemy import hold_in, hold_until_commit, stop_holding


class Base(DeclarativeBase):
    pass


class Invoice(Base):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20))


class Notify(Job, name="after_commit_sa_ends.notify"):
    n: int

    def handle(self) -> None:
        pass


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'billing.db'}")
    Base.metadata.create_all(engine)
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


def sent(app: App) -> list[int]:
    connection = app.connection
    assert isinstance(connection, MemoryConnection)
    return [decode(m.body).payload["n"] for m in connection._queue("default").messages]


# -- a transaction that never ends --------------------------------------------------------------
def test_a_session_never_closed_drops_what_it_held_loudly_and_later_dispatches_go_out(
    factory: sessionmaker[Session], app: App, caplog: pytest.LogCaptureFixture
) -> None:
    def save_without_closing() -> str:
        session = factory()
        session.add(Invoice(id=1, status="draft"))
        session.flush()
        return Notify(n=1).dispatch().job_id  # the session is never committed nor closed

    held = save_without_closing()
    gc.collect()
    with caplog.at_level(logging.WARNING, "sqsjobs.dispatch"):
        Notify(n=2).dispatch()
    assert sent(app) == [2]  # not held, for good, by a transaction nobody will end
    assert "freed without a commit or a rollback" in caplog.text and held in caplog.text
    with factory.begin() as session:
        session.add(Invoice(id=3, status="paid"))
        Notify(n=3).dispatch()
    assert sent(app) == [2, 3]


def test_a_read_only_session_never_closed_sends_what_it_held_once_freed(
    factory: sessionmaker[Session], app: App
) -> None:
    def read_without_closing() -> None:
        session = factory()
        session.execute(select(Invoice)).all()
        Notify(n=1).dispatch()

    read_without_closing()
    gc.collect()
    Notify(n=2).dispatch()
    assert sent(app) == [1, 2]


def test_stop_holding_lets_an_open_transaction_send_at_its_commit(factory: sessionmaker[Session], app: App) -> None:
    session = factory()
    session.add(Invoice(id=1, status="paid"))
    Notify(n=1).dispatch()
    stop_holding(factory)
    assert sent(app) == []
    session.commit()
    assert sent(app) == [1]
    session.close()
    Notify(n=2).dispatch()
    assert sent(app) == [1, 2]
    with factory.begin() as session:  # no longer watched: sent at once
        session.add(Invoice(id=2, status="paid"))
        Notify(n=3).dispatch()
        assert sent(app) == [1, 2, 3]


@pytest.mark.parametrize("second", ["Session class", "scoped_session"])
def test_two_targets_covering_the_same_sessions_hold_each_transaction_once(
    factory: sessionmaker[Session], app: App, second: str
) -> None:
    target: Any = Session if second == "Session class" else scoped_session(factory)
    hold_until_commit(target)
    try:
        with factory.begin() as session:
            session.add(Invoice(id=1, status="paid"))
            Notify(n=1).dispatch()
            assert sent(app) == []
        assert sent(app) == [1]
        Notify(n=2).dispatch()  # no transaction is open: nothing may hold it
        assert sent(app) == [1, 2]
    finally:
        stop_holding(target)


# -- transactions that never wrote --------------------------------------------------------------
def test_a_read_only_request_that_never_commits_sends_its_jobs_at_teardown(
    factory: sessionmaker[Session], app: App
) -> None:
    db = scoped_session(factory)
    db.execute(select(Invoice)).all()  # autobegins a transaction
    Notify(n=1).dispatch()
    assert sent(app) == []  # a write may still come
    db.remove()  # the teardown closes the session: a rollback, with nothing written
    assert sent(app) == [1]


@pytest.mark.parametrize("write", ["add", "flush", "text", "core"])
def test_an_autobegun_transaction_that_wrote_drops_its_jobs_when_it_is_not_committed(
    factory: sessionmaker[Session], app: App, write: str
) -> None:
    session = factory()
    session.execute(select(Invoice)).all()
    if write == "add":
        session.add(Invoice(id=1, status="draft"))  # pending, never flushed
    elif write == "flush":
        session.add(Invoice(id=1, status="draft"))
        session.flush()
    elif write == "text":
        session.execute(text("INSERT INTO invoices (id, status) VALUES (1, 'draft')"))
    else:
        session.connection().execute(insert(Invoice).values(id=1, status="draft"))
    Notify(n=1).dispatch()
    session.close()
    assert sent(app) == []


def test_an_object_added_after_the_dispatch_counts_as_a_write(factory: sessionmaker[Session], app: App) -> None:
    session = factory()
    session.execute(select(Invoice)).all()
    Notify(n=1).dispatch()
    session.add(Invoice(id=1, status="draft"))  # never flushed: the job would find no invoice
    session.close()
    assert sent(app) == []


def test_changes_pending_when_the_job_is_held_count_as_a_write(factory: sessionmaker[Session], app: App) -> None:
    with factory.begin() as session:
        session.add(Invoice(id=1, status="draft"))
    session = factory()
    invoice = session.get(Invoice, 1)
    assert invoice is not None
    invoice.status = "paid"  # not flushed
    Notify(n=1).dispatch()
    session.close()
    assert sent(app) == []


def test_an_explicit_transaction_that_never_wrote_drops_on_rollback_with_a_warning(
    factory: sessionmaker[Session], app: App, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, "sqsjobs.dispatch"),
        pytest.raises(LookupError),
        factory.begin() as session,
    ):
        session.execute(select(Invoice)).all()
        held = Notify(n=1).dispatch()
        raise LookupError("no such invoice")
    assert sent(app) == []
    assert "without writing anything" in caplog.text and held.job_id in caplog.text


# -- a transaction that can no longer commit ----------------------------------------------------
def test_a_dispatch_after_a_failed_flush_is_sent_not_held_by_the_dead_transaction(
    factory: sessionmaker[Session], app: App
) -> None:
    with factory.begin() as session:
        session.add(Invoice(id=1, status="paid"))
    with factory() as session:
        session.add(Invoice(id=1, status="again"))
        with pytest.raises(IntegrityError):
            session.flush()
        Notify(n=1).dispatch()  # "tell someone": the transaction can only roll back now
        session.rollback()
    assert sent(app) == [1]


# -- a transaction begun in another context ------------------------------------------------------
def test_hold_in_holds_an_endpoint_whose_transaction_a_thread_pool_dependency_began(
    factory: sessionmaker[Session], app: App
) -> None:
    def dependency() -> tuple[Any, Session]:
        begin = factory.begin()
        return begin, begin.__enter__()

    def endpoint(session: Session) -> list[int]:
        with hold_in(session):
            session.add(Invoice(id=1, status="paid"))
            Notify(n=1).dispatch()
        return sent(app)

    async def request() -> tuple[list[int], list[int]]:
        begin, session = await to_thread.run_sync(dependency)  # each call runs in a copy of the context
        during = await to_thread.run_sync(endpoint, session)
        await to_thread.run_sync(begin.__exit__, None, None, None)
        return during, sent(app)

    during, after = anyio.run(request)
    assert during == [] and after == [1]


def test_hold_in_a_session_whose_transaction_is_not_watched_says_what_to_call(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    with (
        Session(engine) as session,
        session.begin(),
        pytest.raises(ConfigurationError, match="hold_until_commit"),
        hold_in(session),
    ):
        pass
    engine.dispose()

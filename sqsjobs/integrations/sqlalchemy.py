"""Hold dispatches made inside a SQLAlchemy session's transaction until it commits (docs/after-commit.md).

    from sqsjobs.integrations.sqlalchemy import hold_until_commit

    Session = sessionmaker(engine)
    hold_until_commit(Session)          # or a Session, a scoped_session, or the Session class itself

With SQSJOBS_AFTER_COMMIT=true (or `dispatch(after_commit=True)`), a job dispatched while one of those
sessions is in a transaction is sent after it commits, and dropped if it rolls back. A savepoint
(`session.begin_nested()`) holds its own: released, they join the transaction; rolled back, they are dropped.

It listens to the session's own events: a transaction (or savepoint) begins in `after_transaction_create`,
`after_commit` marks it committed, and `after_transaction_end` commits or drops what it held — whatever
ends a transaction without `after_commit` (a rollback, a close, an error in the flush) drops it. The
send happens after the COMMIT, once the session has left the transaction; a send that fails raises
`DispatchError` from `session.commit()` (the rows are committed: dispatch those jobs again).

Three cases have no commit to wait for. A transaction that can no longer commit (after a failed flush)
holds nothing: the dispatch goes to the hold around it, or out at once. A transaction the session began on
its own (autobegin, on a first read) that never wrote sends what it held when it ends, however it ends:
a read-only request that is never committed does not lose its jobs. A transaction freed without ending
(a session never closed) drops what it held, with a WARNING, at the next dispatch after the garbage
collector freed it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, SessionTransaction, SessionTransactionOrigin

from ..after_commit import Hold, abandoned, enter, integration, leave, listed
from ..context import Services
from ..dispatch_plan import Grouped
from ..errors import ConfigurationError

__all__ = ["hold_in", "hold_until_commit", "stop_holding"]

log = logging.getLogger("sqsjobs.dispatch")

#: Statements that change no row a worker could read (a text statement's first word); any other counts as
#: a write, so a transaction that wrote is never taken for one that only read.
_READS = frozenset({"SELECT", "SHOW", "SET", "SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT"})


class TransactionHold(Hold):
    """The hold of one session transaction (a root or a savepoint), which it knows only weakly."""

    def __init__(self, transaction: SessionTransaction, parent: Hold | None) -> None:
        super().__init__(parent)
        self._transaction = weakref.ref(transaction)
        self.autobegun = transaction.origin is SessionTransactionOrigin.AUTOBEGIN
        #: On a root: a statement that may change rows ran, or objects were added, changed or deleted.
        self.wrote = False
        self.finalizer = weakref.finalize(transaction, abandoned, self)
        self.finalizer.atexit = False  # at exit, the locks and bodies expire on their own

    def accepting(self) -> bool:
        transaction = self._transaction()
        return self.open and transaction is not None and transaction.is_active

    def hold(self, app: Services, grouped: Grouped) -> None:
        super().hold(app, grouped)
        transaction = self._transaction()
        session = transaction.session if transaction is not None else None
        if session is not None and (session.new or session.deleted or session.dirty):
            _wrote(session)  # changes not flushed yet: the job waits for them

    def settle_abandoned(self) -> None:
        if self.autobegun and not self.wrote:
            if self.items:
                log.warning(
                    "a database session was freed by the garbage collector in a transaction that never wrote; "
                    "the %d job(s) it held are sent now: %s. Close your sessions",
                    len(self.items),
                    listed(self.items),
                )
            self.commit()
        else:
            super().settle_abandoned()


#: The hold of each real transaction (a root or a savepoint; a flush's internal subtransaction has none).
_holds: weakref.WeakKeyDictionary[SessionTransaction, TransactionHold] = weakref.WeakKeyDictionary()
#: Transactions whose COMMIT (or RELEASE SAVEPOINT) went through, until they end.
_committed: weakref.WeakSet[SessionTransaction] = weakref.WeakSet()
#: The root hold a session's connection works for, to see the statements it runs.
_connections: weakref.WeakKeyDictionary[Connection, TransactionHold] = weakref.WeakKeyDictionary()
#: Engines whose statements are looked at (one listener each, never removed: a lookup per statement).
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
#: What `hold_until_commit` watches now (for the warning when nothing watches any transaction).
_targets: list[Any] = []
_lock = threading.Lock()


def hold_until_commit(target: Any) -> None:
    """Watch the transactions of `target`: a `Session`, a `sessionmaker`, a `scoped_session`, or the
    `Session` class (every session). Calling it again for the same target does nothing; watching two
    targets that cover the same sessions (the class and a sessionmaker) holds each transaction once."""
    for name, listener in _LISTENERS:
        if not event.contains(target, name, listener):
            event.listen(target, name, listener)
    with _lock:
        if not any(t is target for t in _targets):
            _targets.append(target)
        integration("sqlalchemy", True)


def stop_holding(target: Any) -> None:
    """Stop watching `target`: its transactions begun from now on hold nothing. One already open still
    sends or drops what it holds when it ends (the end listeners stay until no hold is open)."""
    if event.contains(target, "after_transaction_create", _began):
        event.remove(target, "after_transaction_create", _began)
    if not _open_holds():
        for name, listener in _LISTENERS:
            if event.contains(target, name, listener):
                event.remove(target, name, listener)
    with _lock:
        _targets[:] = [t for t in _targets if t is not target]
        integration("sqlalchemy", bool(_targets))


@contextlib.contextmanager
def hold_in(session: Session) -> Iterator[None]:
    """Hold this block's dispatches in `session`'s transaction, begun in another context.

    For frameworks that run each call in a copy of the context, where a transaction begun by one call is
    not seen by the next (FastAPI runs a sync dependency's `with Session.begin()` and the endpoint in
    separate thread-pool calls). Outside a transaction, the session's next one holds them as usual.
    """
    transaction = session.get_nested_transaction() or session.get_transaction()
    hold = _holds.get(transaction) if transaction is not None else None
    if transaction is not None and hold is None:
        raise ConfigurationError(
            "hold_in(session): this session's transaction is not watched; call "
            "sqsjobs.integrations.sqlalchemy.hold_until_commit(...) with its sessionmaker (or the Session "
            "class) before the transaction begins"
        )
    if hold is None:
        yield
        return
    enter(hold)
    try:
        yield
    finally:
        leave(hold)


def _began(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None and not transaction.nested:
        return  # a flush's subtransaction: what is dispatched in it belongs to the real one around it
    if transaction in _holds:
        return  # a second watched target covering this session (the class and its sessionmaker)
    parent = _hold_of(transaction.parent) if transaction.nested else None
    hold = TransactionHold(transaction, parent)
    _holds[transaction] = hold
    enter(hold)


def _hold_of(transaction: SessionTransaction | None) -> TransactionHold | None:
    while transaction is not None:
        hold = _holds.get(transaction)
        if hold is not None:
            return hold
        transaction = transaction.parent
    return None


def _connected(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    """The transaction took a connection: look at the statements it runs there."""
    hold = _hold_of(session.get_transaction())
    if hold is None:
        return
    _connections[connection] = hold
    engine = connection.engine
    if engine not in _engines:
        with _lock:
            if not event.contains(engine, "before_cursor_execute", _executing):
                event.listen(engine, "before_cursor_execute", _executing)
            _engines.add(engine)


def _executing(conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
    hold = _connections.get(conn)
    if hold is None or hold.wrote or not hold.open:
        return
    if context is not None and (context.isinsert or context.isupdate or context.isdelete or context.isddl):
        hold.wrote = True
    elif context is None or context.is_text or context.compiled is None:
        words = statement.lstrip(" \t\r\n(").split(None, 1)
        hold.wrote = not words or words[0].upper() not in _READS


def _wrote(session: Session, *_: Any) -> None:
    """Objects were added or deleted (`after_attach`), or are pending when a job is held."""
    hold = _hold_of(session.get_transaction())
    if hold is not None:
        hold.wrote = True


def _committed_now(session: Session) -> None:
    # Fired for a root's COMMIT and a savepoint's RELEASE, while the transaction is still the session's.
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is not None:
        _committed.add(transaction)


def _ended(session: Session, transaction: SessionTransaction) -> None:
    hold = _holds.pop(transaction, None)
    if hold is None:
        return
    hold.finalizer.detach()
    leave(hold)
    if transaction in _committed:
        _committed.discard(transaction)
        hold.commit()
    elif transaction.parent is None and not hold.wrote:
        if hold.autobegun:
            hold.commit()  # it only read: there is no row for its jobs to wait for
            return
        if hold.items:
            log.warning(
                "a transaction begun with session.begin() rolled back without writing anything; the %d job(s) "
                "it held are dropped: %s. Dispatch with after_commit=False what must go out whatever happens",
                len(hold.items),
                listed(hold.items),
            )
        hold.rollback()
    else:
        hold.rollback()


def _open_holds() -> bool:
    try:
        return any(hold.open for hold in list(_holds.values()))
    except RuntimeError:  # changed by another thread meanwhile: assume some are
        return True


_LISTENERS = (
    ("after_transaction_create", _began),
    ("after_begin", _connected),
    ("after_attach", _wrote),
    ("after_commit", _committed_now),
    ("after_transaction_end", _ended),
)

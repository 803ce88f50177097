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
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from ..after_commit import Hold, enter, leave

__all__ = ["hold_until_commit", "stop_holding"]

#: The hold of each real transaction (a root or a savepoint; a flush's internal subtransaction has none).
_holds: weakref.WeakKeyDictionary[SessionTransaction, Hold] = weakref.WeakKeyDictionary()
#: Transactions whose COMMIT (or RELEASE SAVEPOINT) went through, until they end.
_committed: weakref.WeakSet[SessionTransaction] = weakref.WeakSet()


def hold_until_commit(target: Any) -> None:
    """Watch the transactions of `target`: a `Session`, a `sessionmaker`, a `scoped_session`, or the
    `Session` class (every session). Calling it again for the same target does nothing."""
    for name, listener in _LISTENERS:
        if not event.contains(target, name, listener):
            event.listen(target, name, listener)


def stop_holding(target: Any) -> None:
    """Stop watching `target` (transactions already open keep what they hold until they end)."""
    for name, listener in _LISTENERS:
        if event.contains(target, name, listener):
            event.remove(target, name, listener)


def _began(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None and not transaction.nested:
        return  # a flush's subtransaction: what is dispatched in it belongs to the real one around it
    parent = _hold_of(transaction.parent) if transaction.nested else None
    hold = Hold(parent)
    _holds[transaction] = hold
    enter(hold)


def _hold_of(transaction: SessionTransaction | None) -> Hold | None:
    while transaction is not None:
        hold = _holds.get(transaction)
        if hold is not None:
            return hold
        transaction = transaction.parent
    return None


def _committed_now(session: Session) -> None:
    # Fired for a root's COMMIT and a savepoint's RELEASE, while the transaction is still the session's.
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is not None:
        _committed.add(transaction)


def _ended(session: Session, transaction: SessionTransaction) -> None:
    hold = _holds.pop(transaction, None)
    if hold is None:
        return
    leave(hold)
    if transaction in _committed:
        _committed.discard(transaction)
        hold.commit()
    else:
        hold.rollback()


_LISTENERS = (
    ("after_transaction_create", _began),
    ("after_commit", _committed_now),
    ("after_transaction_end", _ended),
)

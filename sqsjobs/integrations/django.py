"""Hold dispatches made inside Django's `transaction.atomic()` until it commits (docs/after-commit.md).

    # in your AppConfig.ready() (or settings, once Django is set up)
    from sqsjobs.integrations.django import hold_until_commit
    hold_until_commit()                 # the "default" database; hold_until_commit(using="other") for another

With SQSJOBS_AFTER_COMMIT=true (or `dispatch(after_commit=True)`), a job dispatched inside an atomic block
is handed to `transaction.on_commit` (one callback per dispatch call), so it is sent once the outermost
block commits, and follows savepoints (an inner block that rolls back drops its jobs), `durable` blocks and
`captureOnCommitCallbacks` as Django's own callbacks do. Outside an atomic block (autocommit), it is sent
at once.

Django has no rollback hook: it simply forgets the callbacks of a rolled-back block. The callback is a
hold's bound `commit`, so when Django lets go of it uncalled, the hold is freed and its finalizer drops
what it held — unique locks freed, S3 bodies deleted — at that moment (CPython frees it as soon as the
last reference goes). A send that fails at commit is logged by sqsjobs (ERROR, with the jobs to dispatch
again) and, as a `robust` callback, by Django; the request goes on and your other callbacks still run.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

from django.db import transaction

from ..after_commit import Hold, drop, unwatch, watch

__all__ = ["hold_until_commit", "stop_holding"]


def hold_until_commit(using: str = "default") -> None:
    """Hold dispatches made inside atomic blocks of the database `using`. Calling it again does nothing."""
    watch(_finder(using))


def stop_holding(using: str = "default") -> None:
    unwatch(_finder(using))


@functools.cache
def _finder(using: str) -> Any:
    return functools.partial(_hold_for, using)


def _hold_for(using: str) -> Hold | None:
    """A hold for this dispatch (its own `on_commit` callback), or None outside an atomic block on `using`.

    One per dispatch call, never shared: a callback registered earlier may lie outside what Django's
    `captureOnCommitCallbacks` (or a savepoint) covers, and the jobs must follow the callback they were
    dispatched with.
    """
    if not transaction.get_connection(using).in_atomic_block:
        return None
    hold = Hold()
    weakref.finalize(hold, drop, hold.items, hold.created)  # Django forgot the callback: the block rolled back
    transaction.on_commit(hold.commit, using=using, robust=True)
    return hold

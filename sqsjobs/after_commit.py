"""Dispatches held until the database transaction around them commits (Laravel's `afterCommit`).

The bug this prevents: a worker fast enough to receive a job before the row it reads is committed finds
nothing, or the old row, and fails or does the wrong thing. Held, a dispatch is planned as usual — its
envelope and job id, its unique lock, its S3 body — and then waits: the commit sends everything its
transaction held (SendMessageBatch, 10 a call), a rollback drops it and frees what it took, so the same
unique job can be dispatched again.

Holds nest like savepoints: one that commits hands what it holds to the hold around it, one that rolls
back drops only its own. A dispatch goes to the innermost open hold of its context (a `hold_dispatches()`
block, or a SQLAlchemy transaction that `sqsjobs.integrations.sqlalchemy` watches), else to a transaction
an integration reports (Django's atomic blocks), else nowhere: it is sent at once. Importing this module
installs `holder_for` in `sqsjobs.dispatch_plan`; until then a dispatch pays one attribute read for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections import Counter
from collections.abc import Callable, Iterator

from . import batch_shards, dispatch_plan, unique
from .batch_shards import meta
from .connections.base import OutgoingMessage
from .context import Services
from .dispatch_plan import Grouped, forget_payload
from .dispatched import Dispatched
from .dispatching import raise_not_queued, send_grouped
from .envelope import Envelope
from .flow import shard_of, shrink_batch

log = logging.getLogger("sqsjobs.dispatch")

__all__ = ["Hold", "hold_dispatches", "holder_for", "sending_now", "watch"]

#: One held dispatch: the app it was made on, its logical queue, its envelope and its message.
Held = tuple[Services, str, Envelope, OutgoingMessage]

_stack: contextvars.ContextVar[tuple[Hold, ...]] = contextvars.ContextVar("sqsjobs_holds", default=())
#: Integrations that know of a transaction outside this context's stack (Django's atomic blocks).
_outer: list[Callable[[], Hold | None]] = []
#: Set by `sending_now()`: no hold applies in this context.
_now: contextvars.ContextVar[bool] = contextvars.ContextVar("sqsjobs_send_now", default=False)


class Hold:
    """What one transaction (a savepoint, a `hold_dispatches()` block) holds until it ends.

    `explicit`: a `hold_dispatches()` block, which holds every dispatch inside it; a transaction an
    integration watches holds only those SQSJOBS_AFTER_COMMIT or `after_commit=True` ask it to.
    """

    def __init__(self, parent: Hold | None = None, *, explicit: bool = False) -> None:
        self.parent = parent
        self.explicit = explicit
        #: Changed in place only: the Django integration's finalizer drops this very list.
        self.items: list[Held] = []
        self.state = "open"

    @property
    def open(self) -> bool:
        return self.state == "open"

    @property
    def dispatched(self) -> list[Dispatched]:
        """The jobs held so far (ids known, nothing sent yet)."""
        return [Dispatched(env.id, env.job, queue) for _, queue, env, _ in self.items]

    def hold(self, app: Services, grouped: Grouped) -> None:
        self.items.extend((app, queue, env, message) for queue, entries in grouped.items() for env, message in entries)

    def commit(self) -> None:
        """The transaction committed: hand what it holds to the open hold around it, else send it.

        A send that fails is logged and raised as one DispatchError naming every job not queued.
        """
        if not self.open:
            return
        self.state = "committed"
        items = list(self.items)
        self.items.clear()
        if not items:
            return
        parent = self.parent
        while parent is not None and not parent.open:
            parent = parent.parent
        if parent is None and self.explicit:
            parent = _outer_hold()
        if parent is not None:
            parent.items.extend(items)
            return
        send(items)

    def rollback(self) -> None:
        """The transaction rolled back: drop what it holds, and free what each dispatch took."""
        if not self.open:
            return
        self.state = "rolled back"
        items = list(self.items)
        self.items.clear()
        drop(items)


@contextlib.contextmanager
def hold_dispatches() -> Iterator[Hold]:
    """Hold every dispatch made in this block (this thread or task); send them when it exits cleanly,
    drop them when it raises. Put it *around* your transaction block, so the commit comes first:

        with sqsjobs.hold_dispatches(), session.begin():
            session.add(order)
            SendInvoice(order_id=order.id).dispatch()     # sent after the commit, not before

    Blocks nest like savepoints: an inner block that exits cleanly joins the outer one.
    `dispatch(after_commit=False)` is sent at once even here.
    """
    hold = Hold(innermost(), explicit=True)
    enter(hold)
    done = False
    try:
        yield hold
        done = True
    finally:
        leave(hold)  # first: what the commit sends (and a sync connection runs) is not held again
        if done:
            hold.commit()
        else:
            hold.rollback()


@contextlib.contextmanager
def sending_now() -> Iterator[None]:
    """Send every dispatch in this block at once, whatever transaction is open: for sends that must not
    depend on one (a chain's next link or a batch's callbacks, sent once after a job ended)."""
    token = _now.set(True)
    try:
        yield
    finally:
        _now.reset(token)


def enter(hold: Hold) -> None:
    """Make `hold` the innermost of this context (integrations call it when a transaction begins)."""
    _stack.set((*(h for h in _stack.get() if h.open), hold))


def leave(hold: Hold) -> None:
    stack = _stack.get()
    if any(h is hold or not h.open for h in stack):
        _stack.set(tuple(h for h in stack if h is not hold and h.open))


def innermost() -> Hold | None:
    """The open hold a dispatch in this context would go to (ended ones are skipped: a transaction may
    end in another context than the one it began in)."""
    for hold in reversed(_stack.get()):
        if hold.open:
            return hold
    return None


def watch(find: Callable[[], Hold | None]) -> None:
    """Register an integration's way to find the hold of a transaction that is open now (or None)."""
    if find not in _outer:
        _outer.append(find)


def unwatch(find: Callable[[], Hold | None]) -> None:
    if find in _outer:
        _outer.remove(find)


def _outer_hold() -> Hold | None:
    for find in _outer:
        hold = find()
        if hold is not None:
            return hold
    return None


def holder_for(app: Services, after_commit: bool | None) -> Hold | None:
    """Where a dispatch waits: None sends it now (`after_commit=False`, or no transaction to wait for)."""
    if after_commit is False or _now.get():
        return None
    wanted = after_commit or app.settings.after_commit
    stack = [hold for hold in _stack.get() if hold.open]
    if stack:
        return stack[-1] if wanted or any(hold.explicit for hold in stack) else None
    return _outer_hold() if wanted else None


def send(items: list[Held]) -> None:
    """Send what a committed transaction held, in batches per app and queue."""
    not_queued: list[tuple[str, str, str]] = []
    for app, grouped in _by_app(items):
        for queue, entries in grouped.items():
            try:
                send_grouped(app, {queue: entries}, not_queued)
            except Exception as exc:  # not an AWS answer (those are per job): a missing queue, a bug
                log.exception("sending the jobs a committed transaction held to %r failed", queue)
                reason = f"{type(exc).__name__}: {exc}"
                for env, message in entries:
                    unique.release(app.store, env)  # else dispatching it again would be dropped as a duplicate
                    _forget(app, env, message)
                    not_queued.append((env.id, env.job, reason))
    if not_queued:
        log.error(
            "the database transaction committed, but %d job(s) it held were not queued: %s. Their rows are "
            "committed and nothing will retry them: dispatch these jobs again",
            len(not_queued),
            ", ".join(f"{job} {job_id} ({reason})" for job_id, job, reason in not_queued),
        )
        raise_not_queued(not_queued)


def _by_app(items: list[Held]) -> list[tuple[Services, Grouped]]:
    """Items per app and queue, with entry ids unique per batch call (several dispatches' ids clash)."""
    apps: dict[int, tuple[Services, Grouped]] = {}
    for n, (app, queue, env, message) in enumerate(items):
        message.entry_id = f"h{n}"
        apps.setdefault(id(app), (app, {}))[1].setdefault(queue, []).append((env, message))
    return list(apps.values())


def drop(items: list[Held]) -> None:
    """Free what rolled-back dispatches took: unique locks, S3 bodies, their places in a batch."""
    lost: dict[tuple[int, str], tuple[Services, Counter[int | None]]] = {}
    for app, _, env, message in items:
        unique.release(app.store, env)  # owner-checked, and logs what it cannot free
        _forget(app, env, message)
        if env.batch_id:
            lost.setdefault((id(app), env.batch_id), (app, Counter()))[1][shard_of(env)] += 1
    for (_, batch_id), (app, counts) in lost.items():
        try:
            _undo_batch(app, batch_id, counts)
        except Exception:
            log.exception("batch %s: could not take out the members a rollback dropped", batch_id)
    if items:
        log.info("a transaction rolled back: %d held job(s) dropped", len(items))


def _forget(app: Services, env: Envelope, message: OutgoingMessage) -> None:
    try:
        forget_payload(app, message)
    except Exception:
        log.exception("could not delete the S3 body of unsent job %s (the bucket's lifecycle rule will)", env.id)


def _undo_batch(app: Services, batch_id: str, lost: Counter[int | None]) -> None:
    """A batch made in the rolled-back transaction is deleted (none of it left the transaction); one
    that existed before has the members added in it taken out of its total, as if never added."""
    store = app.store
    item = store.get(meta(batch_id))
    if item is None:
        return
    shards = int(item.get("shards", 0))
    theirs = batch_shards.sums(store, batch_id, shards) if shards else (0, 0, 0)
    total, processed, failed = (a + b for a, b in zip(batch_shards.own(item), theirs, strict=True))
    if item.get("finished_at") or total != processed + failed + sum(lost.values()):
        shrink_batch(app, batch_id, lost)
        return
    for partition in reversed(batch_shards.partitions(batch_id, shards)):
        for sk, _ in store.query(partition):
            if (partition, sk) != meta(batch_id):
                store.delete((partition, sk))
    store.delete(meta(batch_id))


dispatch_plan.holder_for = holder_for

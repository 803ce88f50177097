"""Dispatches held until the database transaction around them commits (Laravel's `afterCommit`).

The bug this prevents: a worker fast enough to receive a job before the row it reads is committed finds
nothing, or the old row, and fails or does the wrong thing. Held, a dispatch is planned as usual — its
envelope and job id, its unique lock, its S3 body — and then waits: the commit sends everything its
transaction held (SendMessageBatch, 10 a call), a rollback drops it and frees what it took, so the same
unique job can be dispatched again.

Holds nest like savepoints: one that commits hands what it holds to the hold around it, one that rolls
back drops only its own. A dispatch goes to the innermost open hold of its context (a `hold_dispatches()`
block, or a SQLAlchemy transaction that `sqsjobs.integrations.sqlalchemy` watches), else to a transaction
an integration reports (Django's atomic blocks), else nowhere: it is sent at once. A hold that can no
longer commit (a SQLAlchemy transaction after a failed flush) takes nothing: holding there only loses the
job. Importing this module installs `holder_for` in `sqsjobs.dispatch_plan`; until then a dispatch pays
one attribute read for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator

from . import after_commit_batches, dispatch_plan, unique
from .after_commit_batches import Held
from .connections.base import OutgoingMessage
from .context import Services
from .dispatch_plan import Grouped, forget_payload
from .dispatched import Dispatched
from .dispatching import raise_not_queued, send_grouped
from .envelope import Envelope

log = logging.getLogger("sqsjobs.dispatch")

__all__ = ["Held", "Hold", "hold_dispatches", "holder_for", "sending_now", "watch"]

_stack: contextvars.ContextVar[tuple[Hold, ...]] = contextvars.ContextVar("sqsjobs_holds", default=())
#: Integrations that know of a transaction outside this context's stack (Django's atomic blocks).
_outer: list[Callable[[], Hold | None]] = []
#: Set by `sending_now()`: no hold applies in this context.
_now: contextvars.ContextVar[bool] = contextvars.ContextVar("sqsjobs_send_now", default=False)
#: Integrations watching transactions through `enter` (SQLAlchemy), by name: with none, and no `watch`
#: finder either, a dispatch that asks to wait has nothing to wait for (`dispatch_plan.warn_unwatched`).
_integrations: set[str] = set()
#: Holds whose transaction was freed without ending, queued by a finalizer (any thread, any moment: no
#: place to send or call AWS) and settled at the next dispatch or transaction begin.
_abandoned: list[Hold] = []


class Hold:
    """What one transaction (a savepoint, a `hold_dispatches()` block) holds until it ends.

    `explicit`: a `hold_dispatches()` block, which holds every dispatch inside it; a transaction an
    integration watches holds only those SQSJOBS_AFTER_COMMIT or `after_commit=True` ask it to.
    """

    def __init__(self, parent: Hold | None = None, *, explicit: bool = False) -> None:
        self.parent = parent
        self.explicit = explicit
        #: Changed in place only, like `created`: the Django integration's finalizer drops this very list.
        self.items: list[Held] = []
        #: Batches made inside this hold (a rollback deletes them), and the held batch members that leave
        #: their batch's total when SQS refuses them at the commit (after_commit_batches.note_members).
        self.created: set[str] = set()
        self.shrinkable: set[str] = set()
        self.state = "open"

    @property
    def open(self) -> bool:
        """Not ended yet (it may still have to send or drop what it holds)."""
        return self.state == "open"

    def accepting(self) -> bool:
        """Whether a dispatch may wait here now: a transaction that can no longer commit takes none."""
        return self.open

    @property
    def dispatched(self) -> list[Dispatched]:
        """The jobs held so far (ids known, nothing sent yet)."""
        return [Dispatched(env.id, env.job, queue) for _, queue, env, _ in self.items]

    def hold(self, app: Services, grouped: Grouped) -> None:
        self.items.extend((app, queue, env, message) for queue, entries in grouped.items() for env, message in entries)
        after_commit_batches.note_members(grouped, self.created, self.shrinkable)

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
        while parent is not None and not parent.accepting():
            parent = parent.parent
        if parent is None and self.explicit:
            parent = _outer_hold()
        if parent is not None:
            parent.items.extend(items)
            parent.created |= self.created
            parent.shrinkable |= self.shrinkable
            return
        send(items, self.shrinkable)

    def rollback(self) -> None:
        """The transaction rolled back: drop what it holds, and free what each dispatch took."""
        if not self.open:
            return
        self.state = "rolled back"
        items = list(self.items)
        self.items.clear()
        drop(items, self.created)

    def settle_abandoned(self) -> None:
        """Its transaction was freed without ending (a session never closed): drop what it held, loudly."""
        if self.items:
            log.warning(
                "a database transaction holding %d job(s) was freed without a commit or a rollback (a session "
                "never closed?); they are dropped: %s. Close your sessions, or end their transactions",
                len(self.items),
                listed(self.items),
            )
        self.rollback()


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
    if _abandoned:
        settle_abandoned()
    _stack.set((*(h for h in _stack.get() if h.open), hold))


def leave(hold: Hold) -> None:
    stack = _stack.get()
    if any(h is hold or not h.open for h in stack):
        _stack.set(tuple(h for h in stack if h is not hold and h.open))


def innermost() -> Hold | None:
    """The hold a dispatch in this context would go to (ended ones are skipped: a transaction may end in
    another context than the one it began in; so are those that can no longer commit)."""
    for hold in reversed(_stack.get()):
        if hold.accepting():
            return hold
    return None


def abandoned(hold: Hold) -> None:
    """A finalizer's way to end `hold` (its transaction was freed without ending): at a safe moment."""
    _abandoned.append(hold)


def settle_abandoned() -> None:
    while _abandoned:
        hold = _abandoned.pop()
        try:
            hold.settle_abandoned()
        except Exception:  # a send at a dispatch or a transaction begin that is not theirs: never raise there
            log.exception("could not settle what an abandoned transaction held")


def integration(name: str, watching: bool) -> None:
    """An integration that holds through `enter` (not `watch`) says whether it watches anything now."""
    if watching:
        _integrations.add(name)
    else:
        _integrations.discard(name)


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
    if _abandoned:
        settle_abandoned()
    if after_commit is False or _now.get():
        return None
    wanted = after_commit or app.settings.after_commit
    stack = [hold for hold in _stack.get() if hold.accepting()]
    if stack:
        return stack[-1] if wanted or any(hold.explicit for hold in stack) else None
    if not wanted:
        return None
    if not _outer and not _integrations:
        dispatch_plan.warn_unwatched()
    return _outer_hold()


def send(items: list[Held], shrinkable: set[str] | None = None) -> None:
    """Send what a committed transaction held, in batches per app and queue. Batch members SQS refuses
    leave their batch's total (those in `shrinkable`), as when they are dispatched directly."""
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
        try:
            with sending_now():  # a batch this finishes sends its callbacks now, marked sent once
                after_commit_batches.shrink_unqueued(items, not_queued, shrinkable or set())
        except Exception:
            log.exception("could not take the jobs that were not queued out of their batches")
        raise_not_queued(not_queued)


def _by_app(items: list[Held]) -> list[tuple[Services, Grouped]]:
    """Items per app and queue, with entry ids unique per batch call (several dispatches' ids clash)."""
    apps: dict[int, tuple[Services, Grouped]] = {}
    for n, (app, queue, env, message) in enumerate(items):
        message.entry_id = f"h{n}"
        apps.setdefault(id(app), (app, {}))[1].setdefault(queue, []).append((env, message))
    return list(apps.values())


def drop(items: list[Held], created: set[str] | None = None) -> None:
    """Free what rolled-back dispatches took: unique locks, S3 bodies, their places in a batch (a batch
    in `created`, made in the transaction, is deleted)."""
    for app, _, env, message in items:
        unique.release(app.store, env)  # owner-checked, and logs what it cannot free
        _forget(app, env, message)
    with sending_now():  # a batch this finishes sends its callbacks now: they are marked sent once
        after_commit_batches.undo(items, created or set())
    if items:
        log.info("a transaction rolled back: %d held job(s) dropped: %s", len(items), listed(items))


def listed(items: list[Held], most: int = 20) -> str:
    """The jobs of `items`, for a log line (the first `most`)."""
    jobs = ", ".join(f"{env.job} {env.id}" for _, _, env, _ in items[:most])
    return jobs + (f" and {len(items) - most} more" if len(items) > most else "")


def _forget(app: Services, env: Envelope, message: OutgoingMessage) -> None:
    try:
        forget_payload(app, message)
    except Exception:
        log.exception("could not delete the S3 body of unsent job %s (the bucket's lifecycle rule will)", env.id)


dispatch_plan.holder_for = holder_for

"""How features plug into the runner: hooks called at fixed points of one delivery.

The runner knows no chain, batch, lock or key. Unique locks, idempotency keys and chain/batch
bookkeeping (sqsjobs.hooks) each implement the points they need; the base class makes every
point a no-op. A point that returns a decision ends the delivery with it (the job does not run);
`on_decided` sees every decision and may replace it with a Release, to keep the message until
work that must survive a crash is written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..connections.base import Connection, ReceivedMessage
from ..decisions import Decision, Release
from ..envelope import Envelope
from ..events import JobEvent
from ..job_class import Job, JobContext
from ..payload_fields import load

if TYPE_CHECKING:
    from ..signing import SigningKeys

log = logging.getLogger("sqsjobs.runner")


@dataclass(slots=True)
class Delivery:
    """One received message on its way through the runner, as hooks see it."""

    message: ReceivedMessage
    connection: Connection
    envelope: Envelope | None = None
    #: The registered class the envelope names (None for a message that names none).
    job_cls: type[Job] | None = None
    job: Job | None = None
    #: The job's context, the same object as `job._ctx`; None until the job is built.
    context: JobContext | None = None
    #: This delivery's attempt number: runs, not receives (sqsjobs.policy.attempt).
    attempts: int = 0
    #: Seconds the job may run, by the one rule (sqsjobs.policy.timeout).
    timeout: float = 0.0
    #: Set once `handle()` was entered: a decision without it means the job did not run.
    ran: bool = False
    #: Per-hook state (a claimed key, a taken claim), keyed by the hook's name.
    notes: dict[str, Any] = field(default_factory=dict)
    #: Being begun by `Runner.begin_quiet`: any call to AWS or the store is refused, not made.
    quiet: bool = False
    #: Whether any hook acts on this delivery (`Hook.quiet`), asked once its envelope and class are known;
    #: until then, and whenever unsure, True: every hook is called at every point.
    hooked: bool = True

    def event(
        self, kind: str, *, runtime_s: float = 0.0, error: BaseException | None = None, delay: int = 0
    ) -> JobEvent:
        """What this delivery looks like to listeners (logs, metrics), at the moment `kind` happened."""
        ctx = self.context
        return JobEvent(
            kind,
            ctx.job_id if ctx else (self.envelope.id if self.envelope else ""),
            self.job_cls.job_name if self.job_cls else "?",
            self.message.queue,
            self.attempts or self.message.receive_count,
            dispatched_at=self.envelope.dispatched_at if self.envelope else "",
            wait_s=ctx.wait_s if ctx else 0.0,
            runtime_s=runtime_s,
            error_type=type(error).__name__ if error else "",
            error=str(error) if error else "",
            delay=delay,
        )

    def write_dlq(self, kind: str, error: BaseException, now: float, keys: SigningKeys | None) -> bool:
        """Write this message's DLQ copy with its reason (tagged with `keys`, when signing is on);
        False (logged) when SQS refused it."""
        from .. import failures  # a job that succeeds never needs it (Lambda cold starts)

        envelope, message = self.envelope, self.message
        letter = failures.dead_letter(
            message,
            kind=kind,
            error=error,
            attempts=self.attempts or message.receive_count,
            now=now,
            job_name=envelope.job if envelope else "",
            job_id=envelope.id if envelope else "",
            keys=keys,
        )
        return failures.write(self.connection, message, letter)

    def call_failed(self, exc: BaseException) -> None:
        """Run the job's `failed()` (the runner does, once its DLQ copy is written; a hook that writes
        a copy itself calls it). A job settled by a later delivery is built only now."""
        job = self.job
        if job is None and self.job_cls is not None and self.envelope is not None:
            try:
                job = load(self.job_cls, self.envelope.payload)
            except Exception:
                return
        if job is None:
            return
        try:
            job.failed(exc)
        except Exception:
            log.exception("%s.failed() raised; the job is in the DLQ regardless", type(job).__name__)


class Hook:
    """Base class: every point is a no-op. Points run in the order hooks were given to the runner."""

    name = "hook"

    #: True: this hook acts only on a delivery whose envelope carries a feature field (a unique key, a chain,
    #: a batch id, or any field outside the named ones: `extra`, where callbacks and schedules are marked),
    #: so a plain envelope needs no `quiet` call. It must then answer `quiet` True for every plain one (a
    #: subclass whose `quiet` acts more widely must set this back to False, and `quiet_for` too).
    features_only = False

    def quiet_for(self, cls: type[Job] | None) -> bool:
        """True: quiet about every delivery of `cls`, whatever its envelope says (its `quiet` must then
        answer True too). Answered from the class alone: it is asked once per class and the answer kept for
        the runner's life, so a hook that answers by a setting (which may change in place) says False
        here and reads it in `quiet`. A hook unsure says False (the default)."""
        return False

    def quiet(self, delivery: Delivery) -> bool:
        """True: none of this hook's points is to be called for `delivery`, whatever is decided — it would
        call nothing (store, SQS, S3, KMS), return no decision and note nothing. Asked at most once (not
        at all where `features_only` or `quiet_for` already tells), as the envelope and class are known:
        before `on_received`, before an encrypted payload is opened (its payload is then `{}`) and before
        the job is built. When every acting hook says True, the runner calls no hook point for the delivery
        (any way in), and the asyncio worker begins and finishes it on its loop without a hand-off to a
        thread. A hook unsure says False (the default)."""
        return False

    def on_received(self, delivery: Delivery) -> Decision | None:
        """The envelope is decoded and its class known; nothing is validated or counted yet."""
        return None

    def before_run(self, delivery: Delivery) -> Decision | None:
        """The job is built and its attempt known, before the runner checks tries and retry_until:
        a decision here (e.g. "another copy is running") spends nothing."""
        return None

    def on_start(self, delivery: Delivery) -> Decision | None:
        """The job passed every check and is about to run: take what the run needs (a key)."""
        return None

    def before_dlq(self, delivery: Delivery, kind: str, error: BaseException) -> Release | None:
        """A failure is about to be written to the DLQ: write down what a crash must not lose."""
        return None

    def on_decided(self, delivery: Delivery, decision: Decision, error: BaseException | None) -> Decision | None:
        """The delivery is decided (the DLQ copy, if any, is written): free or record what this hook
        took, before the message is deleted. Return a Release to keep the message instead."""
        return None


#: The points a hook may act at; `quiet` is not one (it only says whether a hook would act).
POINTS = ("on_received", "before_run", "on_start", "before_dlq", "on_decided")


def implementing(hooks: Sequence[Hook], point: str) -> tuple[Hook, ...]:
    """The hooks whose `point` is their own (a method or an attribute), not the base class's no-op."""
    base = getattr(Hook, point)
    return tuple(hook for hook in hooks if getattr(getattr(hook, point), "__func__", None) is not base)


def any_acts(hooks: Sequence[Hook], delivery: Delivery) -> bool:
    """Whether any of `hooks` would act on `delivery` (a `quiet` that raises is taken to mean it would).
    Most jobs are no hook's business: asked once, it spares them every hook point."""
    try:
        for hook in hooks:
            if not hook.quiet(delivery):
                return True
    except Exception:
        return True
    return False


def acting(hooks: Sequence[Hook]) -> tuple[Hook, ...]:
    """The hooks that implement any point: the ones asked whether they are quiet about a delivery."""
    return tuple(hook for hook in hooks if any(implementing([hook], point) for point in POINTS))


class Asking:
    """Whether any hook acts on a delivery, asking `quiet` only of the hooks that the delivery's class and
    the shape of its envelope leave in doubt: most deliveries (a plain job) then need few calls or none.
    What is left to ask is kept per class and shape (at most two entries a registered class)."""

    def __init__(self, hooks: Sequence[Hook]) -> None:
        self._hooks = acting(hooks)
        self._left: dict[tuple[type[Job], bool], tuple[Hook, ...]] = {}

    def acts(self, d: Delivery) -> bool:
        """Asked once `d`'s envelope and class are known (without them, every acting hook is asked)."""
        cls, envelope = d.job_cls, d.envelope
        if cls is None or envelope is None:
            return any_acts(self._hooks, d)
        key = (cls, not (envelope.unique_key or envelope.chain or envelope.batch_id or envelope.extra))
        left = self._left.get(key)
        if left is None:
            left = self._left[key] = tuple(hook for hook in self._hooks if not _spared(hook, *key))
        return bool(left) and any_acts(left, d)


def _spared(hook: Hook, cls: type[Job], plain: bool) -> bool:
    """Quiet about every delivery of `cls` (of a plain envelope, when `plain`); a `quiet_for` that
    raises is taken to mean "ask it every time"."""
    if plain and hook.features_only:
        return True
    try:
        return hook.quiet_for(cls)
    except Exception:
        return False

"""Idempotency keys in the runner: claimed as the job starts, completed when it succeeds, freed otherwise."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from .. import idempotency, runs
from ..decisions import Ack, Decision, Postpone
from ..job_class import Job
from ..runner import Delivery, Hook
from ..stores.base import Store
from ..timing import seconds

log = logging.getLogger("sqsjobs.idempotency")

#: Longest a message whose key is busy waits before it looks again.
_BUSY_WAIT_S = 60


class IdempotencyKeys(Hook):
    name = "idempotency"

    def __init__(self, store: Callable[[], Store], clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    def quiet_for(self, cls: type[Job] | None) -> bool:
        # A class that does not override `idempotency_key` never has one; one that does may (per job).
        return cls is not None and cls.idempotency_key is Job.idempotency_key

    def quiet(self, delivery: Delivery) -> bool:
        return self.quiet_for(delivery.job_cls)

    def on_start(self, delivery: Delivery) -> Decision | None:
        job, envelope, cls = delivery.job, delivery.envelope, delivery.job_cls
        assert job is not None and envelope is not None and cls is not None
        key = job.idempotency_key()
        if key is None:
            return None
        token = delivery.notes.setdefault("token", runs.delivery_token())
        holder = idempotency.owner(envelope.id, delivery.message.message_id, token)
        claim = idempotency.claim(self._store(), self._clock, cls.job_name, key, holder, delivery.timeout)
        if claim.state == "done":
            # The earlier run completed; its chain/batch work is redone harmlessly by the bookkeeping.
            return Ack("duplicate")
        if claim.state == "busy":
            wait = min(_BUSY_WAIT_S, math.ceil(claim.wait))
            log.info(
                "%s (%s): idempotency key %r is held by %s; this message waits %d s (no try spent)",
                cls.job_name,
                envelope.id,
                key[:200],
                claim.holder[:300],
                wait,
            )
            return Postpone(wait, "idempotency key in progress")
        delivery.notes[self.name] = (key, holder)
        if job._ctx is not None:
            job._ctx.idempotency = (key, holder)
        return None

    def on_decided(self, delivery: Delivery, decision: Decision, error: BaseException | None) -> Decision | None:
        held = delivery.notes.pop(self.name, None)
        if held is None or delivery.job_cls is None:
            return None
        key, holder = held
        name = delivery.job_cls.job_name
        try:
            if isinstance(decision, Ack):
                # The effect is done: the key completes before the bookkeeping (a redelivery then takes the
                # "done" path and only redoes that).
                idempotency.complete(self._store(), name, key, seconds(delivery.job_cls.idempotency_ttl))
            else:
                idempotency.abandon(self._store(), name, key, holder)
        except Exception:
            # Completed: retrying would repeat the effect, so the key stays "in progress" until it expires and a
            # duplicate meanwhile waits. Abandoned: it frees itself when it expires.
            log.exception(
                "could not %s idempotency key %r of %s", "complete" if isinstance(decision, Ack) else "free", key, name
            )
        return None

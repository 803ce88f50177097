"""Chains and batches in the runner: a link, member or callback runs once per job id, and its end
moves its chain or batch on before its message is deleted (design §7).

Its decided run is written down ("ended") before the bookkeeping, every delivery reads it, and a
`running` claim holds back a copy that arrives while another copy runs. A failure is marked
"pending" before its DLQ copy and "written" after: a worker that dies in between leaves a
redelivery that writes the copy (at worst twice), runs `failed()`, and redoes the bookkeeping —
never the job.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

from .. import dispatch_plan, once, runs
from ..context import Services
from ..decisions import Ack, Decision, Fail, Postpone, Release
from ..envelope import involved
from ..errors import BadMessageError, ConfigurationError, JobFailedError
from ..runner import Delivery, Hook

log = logging.getLogger("sqsjobs.runner")

#: How long to wait before trying again when the DLQ could not be written...
_DLQ_RETRY_DELAY_S = 30
#: ... when a chain's or batch's state could not be updated...
_RETRY_DELAY_S = 10
#: ... and, at least, when another copy of the same job is running.
_COPY_RUNNING_DELAY_S = 15
#: What a chain's next link or a batch callback raises when it cannot be built at all.
_BROKEN = (BadMessageError, ConfigurationError, ValueError, KeyError, TypeError)


class Workflows(Hook):
    name = "workflow"
    features_only = True  # a chain, a batch id, or a callback's mark (`extra`)

    def __init__(self, app: Services) -> None:
        self.app = app

    def quiet(self, delivery: Delivery) -> bool:
        return not involved(delivery.envelope)

    def on_received(self, delivery: Delivery) -> Decision | None:
        envelope = delivery.envelope
        if not involved(envelope):
            return None
        assert envelope is not None
        # Read on every delivery: a copy (an SQS duplicate, a send retried after its answer was lost, a
        # dispatch-once takeover) arrives with receive count 1 too.
        decided = runs.ended(self.app.store, envelope.id)
        return None if decided is None else self._settle_again(delivery, decided)

    def before_run(self, delivery: Delivery) -> Decision | None:
        envelope = delivery.envelope
        if not involved(envelope):
            return None
        assert envelope is not None
        message = delivery.message
        token = delivery.notes.setdefault("token", runs.delivery_token())
        store, clock = self.app.store, self.app.clock
        # The token tells two live deliveries of one message apart (even with one receipt handle).
        rc = message.receive_count
        wait = runs.claim_run(store, clock, envelope.id, message.message_id, delivery.timeout, rc, token)
        if wait <= 0:
            delivery.notes["claimed"] = True
            return None
        log.info("%s (%s): another copy is running; this one looks again later", envelope.job, envelope.id)
        return Postpone(max(_COPY_RUNNING_DELAY_S, math.ceil(wait)), "another copy of this job is running")

    def before_dlq(self, delivery: Delivery, kind: str, error: BaseException) -> Release | None:
        envelope = delivery.envelope
        if not involved(envelope):
            return None
        assert envelope is not None
        outcome = {"outcome": "failed", "kind": kind, "error": f"{type(error).__name__}: {error}"[:1000]}
        try:
            runs.mark_ended(self.app.store, envelope.id, {**outcome, "dlq": "pending"})
        except Exception:
            log.exception("could not record the end of %s (%s); it is tried again", envelope.job, envelope.id)
            return Release(_RETRY_DELAY_S, "its chain or batch could not be updated")
        delivery.notes["failed"] = outcome
        return None

    def on_decided(self, delivery: Delivery, decision: Decision, error: BaseException | None) -> Decision | None:
        envelope = delivery.envelope
        if not involved(envelope) or delivery.notes.get("settled_again"):
            return None
        assert envelope is not None
        store = self.app.store
        if isinstance(decision, Postpone | Release) and delivery.notes.get("claimed"):
            # This run is over without an end: its retry (the same message, or a postponement's copy with
            # another message id) claims afresh, instead of waiting as if a live run held the job.
            runs.free_claim(store, envelope.id, delivery.message.message_id, delivery.notes["token"])
            return None
        if isinstance(decision, Fail) and "failed" in delivery.notes:
            # Tried a few times: while the mark says "pending", a redelivery writes the DLQ copy again and
            # runs `failed()` again. If it cannot be written, that is what happens (`failed list` shows the
            # copies as one job); the job itself never runs again.
            for attempt in range(3):
                try:
                    runs.mark_ended(store, envelope.id, delivery.notes["failed"])
                    break
                except Exception:
                    if attempt == 2:
                        log.exception("could not record the DLQ copy of %s (%s)", envelope.job, envelope.id)
                    else:
                        time.sleep(0.1 * (attempt + 1))
            return self._bookkeeping(delivery, decision.exception or JobFailedError(decision.reason))
        if isinstance(decision, Ack):
            try:
                runs.mark_ended(store, envelope.id, {"outcome": "ok"})
            except Exception:
                log.exception("could not record the end of %s (%s); it is tried again", envelope.job, envelope.id)
                return Release(_RETRY_DELAY_S, "its chain or batch could not be updated")
            return self._bookkeeping(delivery, None)
        return None

    def _settle_again(self, delivery: Delivery, decided: dict[str, str]) -> Decision:
        """A delivery of a job whose run was already decided: finish its bookkeeping, never run it."""
        envelope = delivery.envelope
        assert envelope is not None
        delivery.notes["settled_again"] = True
        failed = decided.get("outcome") != "ok"
        error = JobFailedError(decided.get("error", "")) if failed else None
        if error is not None and decided.get("dlq") == "pending":
            # The worker that decided it died around its DLQ write: write it (again, at worst), and run the
            # `failed()` that worker may not have reached.
            if not self._write(delivery, decided.get("kind") or "failed", error):
                return Release(_DLQ_RETRY_DELAY_S, "the DLQ could not be written")
            delivery.call_failed(error)
            runs.mark_ended(self.app.store, envelope.id, {k: v for k, v in decided.items() if k != "dlq"})
        held = self._bookkeeping(delivery, error)
        if held is not None:
            return held
        if failed:
            delivery.notes["event"] = ("failed", {"error": JobFailedError("its run was decided before")})
            return Fail(decided.get("kind") or "failed", "AlreadyFailed")  # its DLQ copy exists already
        delivery.notes["event"] = ("processed", {})
        return Ack("duplicate")

    def _bookkeeping(self, delivery: Delivery, error: BaseException | None) -> Release | None:
        envelope = delivery.envelope
        assert envelope is not None
        from .. import flow  # only chains and batches load the workflow modules (Lambda cold starts)

        try:
            with _sending_now():
                if error is None:
                    flow.succeeded(self.app, envelope)
                else:
                    flow.failed(self.app, envelope, error)
        except once.SendInProgress as exc:
            log.info("%s (%s): %s; looking again shortly", envelope.job, envelope.id, exc)
            return Release(once.SEND_LEASE_S, "its chain or batch is being updated by another run")
        except _BROKEN as exc:
            # What comes next cannot be built: a link or callback naming a job no longer registered (a deploy
            # renamed it), or whose payload no longer fits. No retry can change that.
            log.error("%s (%s): its chain or batch cannot go on: %s", envelope.job, envelope.id, exc)
            if error is not None:
                return None  # the job's own DLQ copy is written; it says why the job failed
            broken = BadMessageError("invalid_link", f"the job succeeded, but what follows it cannot be sent: {exc}")
            if not self._write(delivery, "invalid_link", broken):
                return Release(_DLQ_RETRY_DELAY_S, "the DLQ could not be written")
            return None
        except Exception:
            log.exception("could not update the chain/batch of %s (%s); it is tried again", envelope.job, envelope.id)
            return Release(_RETRY_DELAY_S, "its chain or batch could not be updated")
        return None

    def _write(self, delivery: Delivery, kind: str, error: BaseException) -> bool:
        return delivery.write_dlq(kind, error, self.app.clock(), self.app.signing_key)


def _sending_now() -> contextlib.AbstractContextManager[None]:
    """A chain's next link and a batch's callbacks are sent now, even when the job left a database
    transaction open that holds dispatches (sqsjobs.after_commit): their send is marked done once,
    so one dropped by that transaction's rollback would never be sent."""
    if dispatch_plan.holder_for is None:
        return contextlib.nullcontext()  # nothing holds dispatches in this process
    from ..after_commit import sending_now

    return sending_now()

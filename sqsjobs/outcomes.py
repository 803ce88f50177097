"""What follows a decided run: the DLQ copy, chain and batch bookkeeping, and copies of a message.

The runner decides what happens to a job; this carries out the parts of that decision that must
survive a crash before the source message is deleted (design §7), and absorbs the copies that a
crash or a retried send leaves behind. A chain link, batch member or callback runs once per job id:
its decided run is written down (`ended`) before its bookkeeping, every delivery reads it, and a
`running` claim holds back a copy that arrives while another copy runs.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from . import coordination, workflow
from .connections.base import Connection, OutgoingMessage, ReceivedMessage
from .decisions import Ack, Decision, Fail, Release
from .envelope import Envelope
from .errors import BadMessageError, ConfigurationError, JobFailedError
from .events import JobEvent
from .failures import dead_letter

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("sqsjobs.runner")

#: How long to wait before trying again when the DLQ itself could not be written.
DLQ_RETRY_DELAY_S = 30
#: ... and when a chain's or batch's state could not be updated.
_WORKFLOW_RETRY_DELAY_S = 10
#: ... and, at least, when another copy of the same chain/batch job is running.
_COPY_RUNNING_DELAY_S = 15
#: What a chain's next link or a batch callback raises when it cannot be built at all.
_BROKEN_WORKFLOW = (BadMessageError, ConfigurationError, ValueError, KeyError, TypeError)


class Outcomes:
    """The DLQ write and the workflow bookkeeping of decided runs; stateless, safe across threads."""

    def __init__(self, app: App) -> None:
        self.app = app

    def hold_copy(self, message: ReceivedMessage, envelope: Envelope, timeout: float) -> Release | None:
        """Hold back a copy of a chain link / batch member / callback while another copy runs.

        Checked before tries, idempotency keys and unique locks: a copy that waits spends nothing,
        and it waits until the other copy's claim would expire, so it is not delivered again and
        again meanwhile. By then that copy is decided (this one only settles) or died (this one runs).
        """
        wait = coordination.claim_run(self.app, envelope, message.message_id, timeout)
        if wait <= 0:
            return None
        log.info("%s (%s): another copy is running; this one looks again later", envelope.job, envelope.id)
        return Release(max(_COPY_RUNNING_DELAY_S, math.ceil(wait)), "another copy of this job is running")

    def to_dlq(
        self,
        message: ReceivedMessage,
        connection: Connection,
        envelope: Envelope | None,
        exc: BaseException,
        kind: str,
        now: float,
        job_name: str,
        job_id: str,
    ) -> Release | None:
        """Write the DLQ copy, then free the unique lock and tell the chain/batch; None when all is done.

        A chain or batch job's failure is written down *before* its DLQ copy ("pending"), and marked
        "written" after it: a worker that dies in between leaves a redelivery that finds the decided
        run, writes the copy only if it may be missing, and redoes the bookkeeping — never the job.
        """
        involved = workflow.involved(envelope)
        outcome = {"outcome": "failed", "kind": kind, "error": f"{type(exc).__name__}: {exc}"[:1000]}
        if involved:
            assert envelope is not None
            try:
                coordination.mark_ended(self.app, envelope, {**outcome, "dlq": "pending"})
            except Exception:
                log.exception("could not record the end of %s (%s); it is tried again", envelope.job, envelope.id)
                return Release(_WORKFLOW_RETRY_DELAY_S, "its chain or batch could not be updated")
        letter = dead_letter(
            message, kind=kind, error=exc, attempts=message.receive_count, now=now, job_name=job_name, job_id=job_id
        )
        if not self.write_dlq(message, connection, letter):
            return Release(DLQ_RETRY_DELAY_S, "the DLQ could not be written")
        coordination.release_unique(self.app, envelope)  # before the bookkeeping, as on every path
        if not involved:
            return None
        assert envelope is not None
        try:
            coordination.mark_ended(self.app, envelope, outcome)
        except Exception:  # a redelivery may write a second copy; `failed list` shows copies as one job
            log.exception("could not record the DLQ copy of %s (%s)", envelope.job, envelope.id)
        return self._bookkeeping(message, connection, envelope, exc)

    def succeeded(self, message: ReceivedMessage, connection: Connection, envelope: Envelope | None) -> Release | None:
        """Chain and batch bookkeeping for a job that succeeded.

        The decision is written down first, so if the store or SQS refuses what follows, the
        message comes back (a Release) and `settle_again` redoes only the bookkeeping — the job does
        not run again.
        """
        if envelope is None or not workflow.involved(envelope):
            return None
        try:
            coordination.mark_ended(self.app, envelope, {"outcome": "ok"})
        except Exception:
            log.exception("could not record the end of %s (%s); it is tried again", envelope.job, envelope.id)
            return Release(_WORKFLOW_RETRY_DELAY_S, "its chain or batch could not be updated")
        return self._bookkeeping(message, connection, envelope, None)

    def _bookkeeping(
        self, message: ReceivedMessage, connection: Connection, envelope: Envelope, error: BaseException | None
    ) -> Release | None:
        try:
            if error is None:
                workflow.succeeded(self.app, envelope)
            else:
                workflow.failed(self.app, envelope, error)
        except coordination.SendInProgress as exc:
            log.info("%s (%s): %s; looking again shortly", envelope.job, envelope.id, exc)
            return Release(coordination.SEND_LEASE_S, "its chain or batch is being updated by another run")
        except _BROKEN_WORKFLOW as exc:
            # What comes next cannot be built: a link or callback naming a job no longer registered
            # (a deploy renamed it), or whose payload no longer fits. No retry can change that.
            log.error("%s (%s): its chain or batch cannot go on: %s", envelope.job, envelope.id, exc)
            if error is not None:
                return None  # the job's own DLQ copy is written; it says why the job failed
            broken = BadMessageError("invalid_link", f"the job succeeded, but what follows it cannot be sent: {exc}")
            if not self._write_for(message, connection, envelope, "invalid_link", broken):
                return Release(DLQ_RETRY_DELAY_S, "the DLQ could not be written")
            return None
        except Exception:
            log.exception("could not update the chain/batch of %s (%s); it is tried again", envelope.job, envelope.id)
            return Release(_WORKFLOW_RETRY_DELAY_S, "its chain or batch could not be updated")
        return None

    def settle_again(
        self, message: ReceivedMessage, connection: Connection, envelope: Envelope, decided: dict[str, str]
    ) -> Decision:
        """A redelivered job whose run was already decided: finish its bookkeeping, never run it."""
        failed = decided.get("outcome") != "ok"
        error = JobFailedError(decided.get("error", "")) if failed else None
        if error is not None and decided.get("dlq") == "pending":
            # The worker that decided it died around its DLQ write: write it (again, at worst).
            if not self._write_for(message, connection, envelope, decided.get("kind") or "failed", error):
                return Release(DLQ_RETRY_DELAY_S, "the DLQ could not be written")
            coordination.mark_ended(self.app, envelope, {k: v for k, v in decided.items() if k != "dlq"})
        held = self._bookkeeping(message, connection, envelope, error)
        if held is not None:
            return held
        coordination.release_unique(self.app, envelope)
        self.app.events.emit(
            JobEvent(
                "failed" if failed else "processed",
                envelope.id,
                envelope.job,
                message.queue,
                message.receive_count,
                dispatched_at=envelope.dispatched_at,
                error_type="AlreadyFailed" if failed else "",
                error="its run was decided before; this delivery settled its chain/batch" if failed else "",
            )
        )
        if failed:
            return Fail(decided.get("kind") or "failed", "AlreadyFailed")  # its DLQ copy exists already
        return Ack("duplicate")

    def _write_for(
        self, message: ReceivedMessage, connection: Connection, envelope: Envelope, kind: str, error: BaseException
    ) -> bool:
        letter = dead_letter(
            message,
            kind=kind,
            error=error,
            attempts=message.receive_count,
            now=self.app.clock(),
            job_name=envelope.job,
            job_id=envelope.id,
        )
        return self.write_dlq(message, connection, letter)

    def write_dlq(self, message: ReceivedMessage, connection: Connection, letter: OutgoingMessage) -> bool:
        try:
            connection.send_to_dlq(message.queue, letter)
        except Exception:
            log.exception(
                "could not write message %s to the DLQ of %r; it stays on its queue and is tried again",
                message.message_id,
                message.queue,
            )
            return False
        return True

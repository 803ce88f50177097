"""The job log in the runner (sqsjobs.job_log, SQSJOBS_JOB_LOG): a start write that also enforces
`cancel`, and an end write. First among the hooks, so a cancelled job takes no idempotency key and
no claim: it is acknowledged unrun, and its unique lock (if any) is freed like any job's that ended.

A log write that fails never changes what happens to the job: the log is for people, the queue is the
truth. It is logged, and the job runs (a cancel that could not be read is not honoured).
"""

from __future__ import annotations

import logging

from .. import job_log
from ..context import Services
from ..decisions import Ack, Decision, Defer, Fail, Postpone, Release
from ..runner import Delivery, Hook

log = logging.getLogger("sqsjobs.runner")


class JobLog(Hook):
    name = "job_log"

    def __init__(self, app: Services) -> None:
        self.app = app

    def quiet(self, delivery: Delivery) -> bool:
        # Read per delivery, not answered once per class (`quiet_for`): the setting may change in place.
        return not self.app.settings.job_log

    def on_start(self, delivery: Delivery) -> Decision | None:
        settings = self.app.settings
        envelope = delivery.envelope
        if not settings.job_log or envelope is None or delivery.job_cls is None:
            return None
        try:
            runs = job_log.started(
                self.app.store,
                envelope.id,
                delivery.job_cls.job_name,
                delivery.message.queue,
                envelope.dispatched_at,
                delivery.attempts,
                self.app.clock(),
                settings.job_log_ttl,
            )
        except Exception:
            log.exception("could not write the start of %s to the job log; it runs", envelope.id)
            return None
        if runs:
            delivery.notes[self.name] = True
            return None
        delivery.notes["event"] = ("cancelled", {})
        log.info("%s %s was cancelled: acknowledged unrun", delivery.job_cls.job_name, envelope.id)
        return Ack("cancelled")

    def on_decided(self, delivery: Delivery, decision: Decision, error: BaseException | None) -> Decision | None:
        if not delivery.notes.get(self.name) or delivery.envelope is None:
            return None
        if isinstance(decision, Ack):
            status = "processed"
        elif isinstance(decision, Fail):
            status = "discarded" if decision.reason == "discarded" else "failed"
        elif isinstance(decision, Release):
            status = "released"
        elif isinstance(decision, Postpone | Defer):
            status = "queued"  # it did not run after all (held back): waiting again
        else:
            return None
        try:
            job_log.finished(
                self.app.store, delivery.envelope.id, status, self.app.clock(), str(error) if error else ""
            )
        except Exception:
            log.exception("could not write the end of %s to the job log", delivery.envelope.id)
        return None

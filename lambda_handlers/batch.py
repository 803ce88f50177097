"""Powertools batch processors that run each record through the runner core and settle its decision.

Powertools decides what a partial-batch response looks like and, on FIFO queues, which records wait
behind a failed one; sqsjobs decides what happens to each job. The two meet here:

- Ack, Fail, Defer: success, so the mapping deletes the record (the DLQ copy or the next hop is
  already written);
- Release: failure, after a visibility change to the backoff;
- Postpone, and a record not started for lack of time: `give_back`. On a standard queue a copy
  carrying the runs so far is sent and the record succeeds; on FIFO the record keeps its place
  (visibility plus a counted skip) and is a failure;
- a FIFO record held back behind one that did not finish: failure, given back with no delay, so it
  spends no try.

Releases and give-backs are applied once per batch, just before Powertools writes the response, so a
batch costs one call per kind rather than one per record. A record that could not be given back (its copy
was refused) stays a failure, so it is never deleted without its copy. Nothing applied here raises: a
failed AWS call leaves its records as failures, and the partial-batch response always stands.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, SqsFifoPartialProcessor
from aws_lambda_powertools.utilities.batch.base import FailureResponse
from aws_lambda_powertools.utilities.batch.exceptions import (
    ExceptionInfo,
    SQSFifoCircuitBreakerError,
    SQSFifoMessageGroupCircuitBreakerError,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from sqsjobs.connections.base import ReceivedMessage
from sqsjobs.decisions import Decision, Postpone, Release
from sqsjobs.errors import ConfigurationError

if TYPE_CHECKING:
    from .sqs import LambdaContext, SqsHandler

log = logging.getLogger("sqsjobs.lambda")

#: Why records went back unrun; one give-back call per reason and delay.
NOT_STARTED = "not started: too little time left in the invocation"
HELD_BACK = "held back behind an earlier record of its FIFO message group"


class NotStarted(Exception):
    """A record handed back unrun because the invocation would end before its job could finish."""


class Released(Exception):
    """A record whose job asked to run again later; its visibility says when."""


class Postponed(Exception):
    """A record whose job did not run and comes back later without spending a try."""


@dataclass(slots=True)
class _GiveBack:
    message: ReceivedMessage
    delay: int
    reason: str


class Batch:
    """One invocation's records: the record handler Powertools calls, and the settling after it."""

    def __init__(self, handler: SqsHandler, context: LambdaContext | None) -> None:
        self.handler = handler
        self.app = app = handler.app
        self.runner, self.settler = app.runner, app.settler
        self.context = context
        self._released: list[tuple[ReceivedMessage, int]] = []
        self._give_back: list[_GiveBack] = []
        self._finished: list[ReceivedMessage] = []
        #: The time left that lets a record run without being decoded for its own timeout (infinite: never),
        #: and the registry version it was worked out for (a record's job may register a class).
        self._fits_any, self._fitted = math.inf, -1

    def __call__(self, record: SQSRecord) -> None:
        """Run one record; raising marks it a failure (the mapping keeps it), returning a success."""
        message = self.handler.to_message(record)
        runner = self.runner
        if self.context is not None:
            left = self.context.get_remaining_time_in_millis() / 1000
            if self._fitted != self.app.registry.version:
                self._fit()
            if left >= self._fits_any:
                self._record_outcome(message, runner.process(message))
                return
            timeout, budget = runner.timeout_for(message), self.handler.budget
            needed = timeout + self.app.settings.lambda_deadline_margin
            if budget is not None and needed > budget:
                # Not this invocation's lack of time: it can never start here. Handed back for free it would
                # come back for ever; given up, it is in the DLQ with the reason and failed() has run.
                never = ConfigurationError(
                    f"the job needs {timeout:g}s + SQSJOBS_LAMBDA_DEADLINE_MARGIN "
                    f"{self.app.settings.lambda_deadline_margin:g}s and the function has {budget:.0f}s; lower "
                    "its timeout, raise the function's, or run its queue on the poller (sqsjobs work)"
                )
                decision = runner.give_up(message, "never_fits", never)
                self._record_outcome(message, decision)
                return
            if left < needed:
                runner.forget(message)  # decoded for its timeout, never processed
                self._not_started(message, left, timeout, needed)
                raise NotStarted(f"{left:.1f}s left in this invocation, the job needs {needed:.1f}s")
            decision = runner.process(message)
            # A run that ends before it reads the kept decode (not due yet, an S3 body that could not be read)
            # would leave it held for the container's life: up to 10,000 envelopes, payloads and all.
            runner.forget(message)
            self._record_outcome(message, decision)
            return
        self._record_outcome(message, runner.process(message))

    def _fit(self) -> None:
        """Time that fits any registered job (its timeout plus the margin), when the function's own does."""
        version = self.app.registry.version
        fits_any = self.handler.longest_timeout() + self.app.settings.lambda_deadline_margin
        budget = self.handler.budget
        self._fits_any = fits_any if budget is None or budget >= fits_any else math.inf
        self._fitted = version  # last: a fit that raised is worked out again by the next record

    def _record_outcome(self, message: ReceivedMessage, decision: Decision) -> None:
        """Raising marks the record a failure (the mapping keeps it); returning, a success."""
        if isinstance(decision, Release):
            self._released.append((message, decision.delay))
            raise Released(decision.reason or "released")
        if isinstance(decision, Postpone):
            self._give_back.append(_GiveBack(message, decision.delay, decision.reason or "postponed"))
            raise Postponed(decision.reason or "postponed")
        settled = self.settler.apply(message, decision)
        if not settled.delete:  # a decision kind this adapter does not know yet: keep the record
            raise Released(f"{type(decision).__name__} keeps the message")
        if settled.drop_payload and message.pointer is not None:
            self._finished.append(message)

    def _not_started(self, message: ReceivedMessage, left: float, timeout: float, needed: float) -> None:
        self._give_back.append(_GiveBack(message, 0, NOT_STARTED))
        job = self.app.registry.known_name(job_name(message.body))
        self.handler.hand_backs.report(
            "handed_back",
            logging.WARNING,
            f"{job} not started: {left:.1f}s left in this invocation, it needs {needed:.1f}s "
            f"(timeout {timeout:g}s + SQSJOBS_LAMBDA_DEADLINE_MARGIN {self.app.settings.lambda_deadline_margin:g}s); "
            "handed back without spending a try",
            {
                "job": job,
                "queue": message.queue,
                "message_id": message.message_id,
                "left_s": round(left, 3),
                "needed_s": round(needed, 3),
            },
        )

    def held_back(self, record: SQSRecord) -> None:
        """A FIFO record Powertools did not run because an earlier one failed: back at once, no try spent.

        Called from inside Powertools' loop, so it never raises; a record it could not note stays a
        failure and comes back when its visibility ends."""
        try:
            self._held_back(record)
        except Exception:
            log.exception("could not hand back held-back record %s", getattr(record, "message_id", "?"))

    def _held_back(self, record: SQSRecord) -> None:
        message = self.handler.record_message(record)
        self._give_back.append(_GiveBack(message, 0, HELD_BACK))
        job = self.app.registry.known_name(job_name(message.body))
        self.handler.hand_backs.report(
            "held_back",
            logging.INFO,
            f"{job} held back behind an earlier record that did not finish (FIFO order); "
            "handed back without spending a try",
            {"job": job, "queue": message.queue, "message_id": message.message_id, "group": message.group_id},
        )

    def settle(self, processor: BatchProcessor) -> None:
        """Apply the batch's releases and give-backs before the response is written. Never raises: a
        record not settled stays a failure and comes back when its visibility ends."""
        try:
            self._settle(processor)
        except Exception:
            log.exception("could not settle every record of this batch; those left are reported as failures")

    def _settle(self, processor: BatchProcessor) -> None:
        settler = self.settler
        if self._released:
            settler.release(self._released)
        by_kind: dict[tuple[int, str], list[ReceivedMessage]] = {}
        for item in self._give_back:
            by_kind.setdefault((item.delay, item.reason), []).append(item.message)
        copied: set[str] = set()
        for (delay, reason), messages in by_kind.items():
            copied.update(m.message_id for m in settler.give_back(messages, delay, reason))
        if copied:
            _now_succeeded(processor, copied)
        for message in self._finished:
            assert message.pointer is not None
            # The mapping deletes the record after we return; a crash in between redelivers a record
            # whose body is gone, which goes to the DLQ as `missing_payload` rather than running twice.
            self.handler.payloads.delete(message.pointer)


def _now_succeeded(processor: BatchProcessor, message_ids: set[str]) -> None:
    """Records whose copy is on the queue: the mapping may delete them now."""
    failed, exceptions = [], []
    for record, exc in zip(processor.fail_messages, processor.exceptions, strict=True):
        if isinstance(record, SQSRecord) and record.message_id in message_ids:
            processor.success_messages.append(record.raw_event)  # type: ignore[arg-type]
        else:
            failed.append(record)
            exceptions.append(exc)
    processor.fail_messages[:] = failed
    processor.exceptions[:] = exceptions


class StandardProcessor(BatchProcessor):
    """Standard queues: every record is run; a handed-back record succeeds once its copy is sent."""

    def __init__(self, batch: Batch) -> None:
        # A batch in which every record was released is a normal outcome (a rate-limited downstream),
        # not an invocation error that would make Lambda retry the whole batch.
        super().__init__(EventType.SQS, raise_on_entire_batch_failure=False)
        self.batch = batch

    def _clean(self) -> None:
        self.batch.settle(self)
        super()._clean()  # type: ignore[no-untyped-call]


class FifoProcessor(SqsFifoPartialProcessor):
    """FIFO queues: a record that did not finish holds back the rest of the batch (or, with
    SQSJOBS_LAMBDA_FIFO_SKIP_GROUP, of its group); the held-back records go back spending no try."""

    def __init__(self, batch: Batch, skip_group: bool) -> None:
        super().__init__(skip_group_on_error=skip_group)
        self.raise_on_entire_batch_failure = False
        self.batch = batch

    def failure_handler(self, record: Any, exception: ExceptionInfo) -> FailureResponse:
        if isinstance(exception[1], (SQSFifoCircuitBreakerError, SQSFifoMessageGroupCircuitBreakerError)):
            self.batch.held_back(record)
        return super().failure_handler(record, exception)

    def _clean(self) -> None:
        self.batch.settle(self)
        super()._clean()  # type: ignore[no-untyped-call]


def job_name(body: str) -> str:
    """The job a body names, for log lines only (never trusted for anything else); `?` when unknown."""
    try:
        data = json.loads(body)
    except ValueError:
        return "?"
    name = data.get("job") if isinstance(data, dict) else None
    return name[:200] if isinstance(name, str) and name else "?"

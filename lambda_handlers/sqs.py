"""The function an SQS event source mapping invokes.

A user's function is this handler plus their jobs module, configured only by
environment (`SQSJOBS_APP=myapp.jobs`, handler `lambda_handlers.sqs.handler`).
It moves records and applies the runner core's decisions through the app's
settler; nothing about jobs is decided here. What each decision becomes is in
`lambda_handlers.batch` (Powertools' BatchProcessor for standard queues,
SqsFifoPartialProcessor for FIFO, each subclassed to settle decisions).

On the first event the handler compares SQSJOBS_TIMEOUT plus
SQSJOBS_LAMBDA_DEADLINE_MARGIN with the time the function has, and refuses to
run when they cannot fit: the deadline guard would otherwise hand every job
without its own timeout back, unstarted, until the redrive policy buried it.
"""

from __future__ import annotations

import gc
import os

#: Inside Lambda, importing this module is the init phase (`handler.warm()`, at the end).
_AT_INIT = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and os.environ.get("SQSJOBS_APP"))
# An init allocates some 100,000 objects that live as long as the container: each of the cycle collector's
# ~160 passes during it scans what has piled up (30-60 ms of a ~300 ms cold start, measured). Paused here (a
# first threshold of 0, so that `gc.isenabled()` stays the process's own) and, once the init is done, those
# objects are frozen (never scanned again) and the thresholds come back. The price: cycles that became
# garbage during a successful init (~800 objects of sqsjobs' own) are never reclaimed; a jobs module that
# makes many can call gc.collect() at the end of its own import.
_THRESHOLDS = gc.get_threshold()
if _AT_INIT:
    gc.set_threshold(0)


def _resume(built: bool) -> None:
    """End the pause: what a finished init built is frozen, and the thresholds the process had come back
    (unless the jobs module set a first threshold other than 0 meanwhile)."""
    if built:
        gc.freeze()
    if gc.get_threshold()[0] == 0:
        gc.set_threshold(*_THRESHOLDS)


try:  # whatever fails here, the collector must not stay paused in a process that goes on
    import logging
    import math
    from typing import Any, Protocol

    from aws_lambda_powertools.utilities.batch import process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from sqsjobs import metric_snapshots, policy
    from sqsjobs.app import App
    from sqsjobs.connections.base import ReceivedMessage
    from sqsjobs.errors import ConfigurationError
    from sqsjobs.payloads import PayloadStore

    from . import observability
    from .batch import Batch, FifoProcessor, NotStarted, Released, StandardProcessor
except BaseException:
    if _AT_INIT:
        _resume(built=False)
    raise

__all__ = ["LambdaContext", "NotStarted", "Released", "SqsHandler", "handler"]

log = logging.getLogger("sqsjobs.lambda")

#: The longest an event source mapping gathers records before invoking (MaximumBatchingWindowInSeconds).
#: Records are in flight meanwhile, so their receive is taken to be this much before the invocation.
_LONGEST_BATCHING_WINDOW_S = 300


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class SqsHandler:
    """One per container: the App (settings, registry, connection) is built on the first event."""

    def __init__(self, app: App | None = None) -> None:
        self._app = app
        self._observed = False
        #: The dashboard's per-minute counters (SQSJOBS_SNAPSHOTS), written at the end of each invocation.
        self._snapshots: metric_snapshots.Snapshots | None = None
        self._payload_store: PayloadStore | None = None
        self._hand_backs: observability.HandBacks | None = None
        self._invoked_at = 0.0
        self._fit_checked = False
        #: The function's whole time (seconds), read from the first event: a job needing more never fits.
        self.budget: float | None = None
        self._refusal: ConfigurationError | None = None
        self._longest: tuple[tuple[int, int, float], float] = ((0, -1, 0.0), 0.0)
        self._processors: dict[tuple[bool, bool], StandardProcessor | FifoProcessor] = {}
        #: Logical queue name by event source ARN (a function reads one or a few queues).
        self._queues: dict[str, str] = {}

    def warm(self) -> None:
        """Build, in the init phase, what the first event would: the App (settings, jobs module, signing
        keys), its runner and settler, and the SQS client (no AWS call is made). Lambda runs init before
        the first invocation, at full CPU; the first event then only runs its records. What fails here
        is logged and left for the first event, which reports it as it always did."""
        try:
            app = self.app
            _ = (app.runner, app.settler)  # built on first use: built now
            from sqsjobs import aws

            aws.client("sqs")
        except Exception:
            log.warning("could not prepare the handler at init; the first event will try again", exc_info=True)
            self._app, self._observed = None, False

    @property
    def app(self) -> App:
        if self._app is None:
            app = App(connection="sqs")
            app.load_jobs()  # jobs and `sqsjobs_setup`: kept only once both worked, else tried again next event
            self._app = app
        if not self._observed:
            self._observed = True
            observability.install(self._app)  # an App given to the handler is observed the same way
            app = self._app
            self._snapshots = metric_snapshots.attach(app.events, app.settings, app.clock, app.connection.name)
        return self._app

    @property
    def hand_backs(self) -> observability.HandBacks:
        """Reads POWERTOOLS_* on first use, so a test (or a user) may set them after import."""
        if self._hand_backs is None:
            self._hand_backs = observability.HandBacks(self.app.registry, self.app.metrics)
        return self._hand_backs

    def __call__(self, event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
        app = self.app
        if context is not None:
            self.refuse_what_cannot_run(context)
        self._invoked_at = app.clock()
        records = event.get("Records", [])
        batch = Batch(self, context)
        fifo = any(r.get("eventSourceARN", "").endswith(".fifo") for r in records)
        processor = self._processor(fifo, app.settings.lambda_fifo_skip_group, batch)
        try:
            # No context for Powertools: it would only look, by inspecting the record handler's signature on
            # every invocation, whether to pass it on. The Batch has it.
            return dict(process_partial_response(event, batch, processor, None))
        finally:
            # Kept for the next invocation, but not what it held: records, bodies, tracebacks.
            processor.batch, processor.records, processor.handler = None, [], None  # type: ignore[assignment]
            processor.success_messages.clear()
            processor.fail_messages.clear()
            processor.exceptions.clear()
            if app.metrics is not None:
                app.metrics.flush()  # before the invocation ends: a frozen container may never flush
            if self._snapshots is not None:
                # Only minutes that have ended, and only while time is left: at most one write per queue
                # and minute per container, not one per invocation (a DynamoDB call would cost more CPU
                # than the records it counts); the current minute waits for a later invocation.
                self._snapshots.tick(context.get_remaining_time_in_millis() / 1000 if context is not None else None)

    def _processor(self, fifo: bool, skip_group: bool, batch: Batch) -> StandardProcessor | FifoProcessor:
        """This invocation's processor: one per kind and container, as Powertools' examples keep it (each
        invocation starts it afresh), so that building one is not part of what every invocation costs."""
        processor = self._processors.get((fifo, skip_group))
        if processor is None:
            made = FifoProcessor(batch, skip_group=skip_group) if fifo else StandardProcessor(batch)
            processor = self._processors[(fifo, skip_group)] = made
        processor.batch = batch
        return processor

    def longest_timeout(self) -> float:
        """The longest any registered job may run, by the one rule (infinite when a class's timeout cannot
        be read: no record then skips its own check). Asked by an invocation's first record and again once the
        registry moves, so a class registered by an earlier record's job counts at once; worked out again only
        when the registry or the default moved.
        A record with this much time left (plus the margin) runs without being decoded first for its own."""
        app = self.app
        registry, default = app.registry, app.settings.timeout
        key = (id(registry), registry.version, default)
        if self._longest[0] != key:
            try:
                longest = max((policy.timeout(cls.timeout, None, default) for cls in registry.runnable()), default=0.0)
            except Exception:  # a class's own mistake: its records meet it in their own check, not everyone's
                longest = math.inf
            self._longest = (key, longest)
        return self._longest[1]

    def refuse_what_cannot_run(self, context: LambdaContext) -> None:
        """On the first event (the remaining time is then the function's timeout): refuse a default
        timeout that can never fit, and name, once, the jobs whose own timeout cannot."""
        if self._fit_checked:
            if self._refusal is not None:
                raise self._refusal
            return
        self._fit_checked = True
        self.budget = budget = context.get_remaining_time_in_millis() / 1000
        settings = self.app.settings
        margin = settings.lambda_deadline_margin
        default = policy.timeout(None, None, settings.timeout)
        if default + margin > budget:
            self._refusal = ConfigurationError(
                f"SQSJOBS_TIMEOUT ({default:g}s) + SQSJOBS_LAMBDA_DEADLINE_MARGIN ({margin:g}s) does not fit in "
                f"this function's {budget:.0f}s: every job without its own timeout would be handed back unstarted, "
                f"for ever. Raise the function's timeout above {default + margin:g}s, or lower SQSJOBS_TIMEOUT "
                f"below {max(0.0, budget - margin):.0f}s (or SQSJOBS_LAMBDA_DEADLINE_MARGIN)"
            )
            raise self._refusal
        too_long = sorted(
            f"{cls.job_name} (queue {self.app.queue_for(cls, None)}, timeout {own:g}s)"
            for cls in self.app.registry
            if (own := policy.timeout(cls.timeout, None, settings.timeout)) + margin > budget
        )
        if too_long:
            log.warning(
                "these jobs can never start in this function (%.0fs, SQSJOBS_LAMBDA_DEADLINE_MARGIN %gs): %s. "
                "Their records are handed back unstarted on every delivery; lower their timeout, raise the "
                "function's, or run their queue on the poller",
                budget,
                margin,
                "; ".join(too_long),
            )

    def record_message(self, record: SQSRecord) -> ReceivedMessage:
        """The record as the runner sees it, without fetching an offloaded body.

        Read from the record's dict rather than Powertools' wrappers (each property builds a wrapper):
        this runs once per record and is most of what a record costs before its job runs."""
        raw = record.raw_event
        attributes = raw.get("attributes") or {}
        arn = raw.get("eventSourceARN") or ""
        theirs = raw.get("messageAttributes")
        queue = self._queues.get(arn)
        if queue is None:
            queue = self._queues[arn] = self.app.settings.logical_queue_name(arn.rsplit(":", 1)[-1])
        return ReceivedMessage(
            queue=queue,
            message_id=raw["messageId"],
            receipt_handle=raw["receiptHandle"],
            body=raw["body"],
            receive_count=int(attributes.get("ApproximateReceiveCount") or 1),
            sent_at=int(attributes.get("SentTimestamp") or 0) / 1000,
            attributes={k: (v or {}).get("stringValue") or "" for k, v in theirs.items()} if theirs else {},
            # SQS limits a visibility change to 12 h from this receive, which happened before the
            # invocation (the mapping gathers records first); the settler keeps releases inside that.
            received_at=(self._invoked_at or self.app.clock()) - _LONGEST_BATCHING_WINDOW_S,
            group_id=attributes.get("MessageGroupId") or None,
        )

    def to_message(self, record: SQSRecord) -> ReceivedMessage:
        """The record as the runner sees it; an S3 pointer body is replaced by the stored body."""
        message = self.record_message(record)
        if message.attributes:  # a pointer is always marked by an attribute: most records have none
            self.payloads.resolve(message)
        return message

    @property
    def payloads(self) -> PayloadStore:
        if self._payload_store is None:
            self._payload_store = self.app.payloads or PayloadStore(self.app.settings)
        return self._payload_store


handler = SqsHandler()
if _AT_INIT:
    try:
        handler.warm()
    except BaseException:  # out of the jobs module: the import fails, and nothing it built is to be kept
        _resume(built=False)
        raise
    if handler._app is None:  # failed and logged: its half-built App and traceback are garbage, not kept
        gc.collect()
    _resume(built=True)

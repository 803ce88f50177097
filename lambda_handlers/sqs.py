"""The function an SQS event source mapping invokes.

A user's function is this handler plus their jobs module, configured only by
environment (`SQSJOBS_APP=myapp.jobs`, handler `lambda_handlers.sqs.handler`).
It moves messages and applies the runner core's decisions; nothing about jobs
is decided here:

- ack, fail (the DLQ copy is already written) and delay hops -> success, so the
  event source mapping deletes the record;
- release/backoff -> the record's visibility is set to the delay, then it is
  reported in `batchItemFailures`, so the mapping leaves it for that long;
- a body offloaded to S3 (Extended Client pointer) is fetched before the core
  sees it, and the object is deleted once its job is done;
- a record whose job would not finish before the invocation's deadline is not
  started: it is made visible again at once and reported as a failure.

Built on Powertools' BatchProcessor (standard queues) and SqsFifoPartialProcessor
(FIFO: a failure holds back the rest of the batch, or with
SQSJOBS_LAMBDA_FIFO_SKIP_GROUP=true only the rest of its message group).
`raise_on_entire_batch_failure` is off on purpose: a batch in which every record
was released is a normal outcome here, not an invocation error.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from sqsjobs.app import App
from sqsjobs.connections.base import ReceivedMessage
from sqsjobs.decisions import Release, drops_payload
from sqsjobs.payloads import PayloadStore


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class NotStarted(Exception):
    """A record handed back unrun because the invocation would end before its job could finish."""


class Released(Exception):
    """A record whose job asked to run again later; its visibility already says when."""


class SqsHandler:
    """One per container: the App (settings, registry, connection) is built on the first event."""

    def __init__(self, app: App | None = None) -> None:
        self._app = app
        self._payload_store: PayloadStore | None = None

    @property
    def app(self) -> App:
        if self._app is None:
            self._app = App(connection="sqs")
            self._app.load_jobs()
            from . import observability

            observability.install(self._app)
        return self._app

    def __call__(self, event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
        app = self.app
        records = event.get("Records", [])
        fifo = any(r.get("eventSourceARN", "").endswith(".fifo") for r in records)
        processor: BatchProcessor
        if fifo:
            processor = SqsFifoPartialProcessor(skip_group_on_error=app.settings.lambda_fifo_skip_group)
        else:
            processor = BatchProcessor(event_type=EventType.SQS)
        processor.raise_on_entire_batch_failure = False
        visibility: list[tuple[ReceivedMessage, int]] = []
        finished: list[ReceivedMessage] = []

        def record_handler(record: SQSRecord) -> None:
            message = self.to_message(record)
            if context is not None:
                left = context.get_remaining_time_in_millis() / 1000
                needed = app.runner.timeout_for(message) + app.settings.lambda_deadline_margin
                if left < needed:
                    visibility.append((message, 0))
                    raise NotStarted(f"{left:.1f}s left in this invocation, the job needs {needed:.1f}s")
            decision = app.runner.process(message)
            if isinstance(decision, Release):
                visibility.append((message, decision.delay))
                raise Released(decision.reason or "released")
            if message.pointer is not None and drops_payload(decision):
                finished.append(message)

        try:
            return dict(process_partial_response(event, record_handler, processor, context))  # type: ignore[arg-type]
        finally:
            self._apply_visibility(visibility)
            self._drop_payloads(finished)

    def to_message(self, record: SQSRecord) -> ReceivedMessage:
        """The record as the runner sees it; an S3 pointer body is replaced by the stored body."""
        physical = record.event_source_arn.rsplit(":", 1)[-1]
        message = ReceivedMessage(
            queue=self.app.settings.logical_queue_name(physical),
            message_id=record.message_id,
            receipt_handle=record.receipt_handle,
            body=record.body,
            receive_count=int(record.attributes.approximate_receive_count or 1),
            sent_at=int(record.attributes.sent_timestamp or 0) / 1000,
            attributes={k: v.string_value or "" for k, v in record.message_attributes.items()},
        )
        self._payloads.resolve(message)
        return message

    @property
    def _payloads(self) -> PayloadStore:
        if self._payload_store is None:
            self._payload_store = self.app.payloads or PayloadStore(self.app.settings)
        return self._payload_store

    def _drop_payloads(self, messages: list[ReceivedMessage]) -> None:
        """The S3 bodies of finished jobs. The event source mapping deletes their messages after we
        return; a crash in between redelivers a message whose body is gone, which is failed to the
        DLQ as `missing_payload` rather than run twice."""
        for message in messages:
            assert message.pointer is not None
            self._payloads.delete(message.pointer)

    def _apply_visibility(self, items: list[tuple[ReceivedMessage, int]]) -> None:
        by_queue: dict[str, list[tuple[ReceivedMessage, int]]] = {}
        for message, seconds in items:
            by_queue.setdefault(message.queue, []).append((message, seconds))
        for queue, entries in by_queue.items():
            try:
                self.app.connection.change_visibility(queue, entries)
            except Exception:
                # These records are reported as failures either way; they come back when the queue's
                # visibility timeout ends instead. Raising here would replace the partial-batch
                # response and re-run the whole batch.
                logging.getLogger("sqsjobs.lambda").exception(
                    "could not set the visibility of %d record(s) on %s", len(entries), queue
                )


handler = SqsHandler()

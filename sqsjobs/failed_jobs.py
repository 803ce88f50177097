"""The failed-jobs store is the dead-letter queue: list, show, retry, forget, flush.

SQS has no "read without taking", so listing receives every DLQ message with a
short visibility timeout and then makes them visible again. Retry sends the
original body back to its source queue as a fresh message (same job id,
attempts reset, as design §7 allows) and only then deletes the DLQ copy: a
crash in between duplicates, never loses. A body offloaded to S3 is shown
resolved; its object is deleted with the DLQ copy (a retry stores a fresh one).
"""

from __future__ import annotations

import builtins
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from . import aws, coordination
from .app import App
from .connections.base import OutgoingMessage
from .connections.sqs import SqsConnection, received
from .envelope import decode
from .errors import BadMessageError, ConfigurationError
from .failures import FailedJob
from .payloads import carried
from .provisioning import known_queues
from .timing import parse_iso, utc_iso

log = logging.getLogger("sqsjobs.failed")

_SCAN_VISIBILITY_S = 30


class FailedJobs:
    """Operations on the DLQs of the app's queues."""

    def __init__(self, app: App, queues: builtins.list[str] | None = None) -> None:
        if not isinstance(app.connection, SqsConnection):
            raise ConfigurationError("failed-job commands need the sqs connection (SQSJOBS_CONNECTION=sqs)")
        self.app = app
        self.connection: SqsConnection = app.connection
        self.queues = queues or known_queues(app)
        self._sqs = aws.client("sqs")

    def _dlqs(self, queue: str | None) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in [queue] if queue else self.queues:
            try:
                info = self.connection.queue_info(name)
            except ConfigurationError:
                if queue:
                    raise
                continue
            if info.dlq_url:
                out.setdefault(info.dlq_url, name)
        return out

    # -- reading -----------------------------------------------------------------------
    def _scan(self, queue: str | None) -> Iterator[tuple[str, FailedJob]]:
        """Every DLQ message once; the caller must `_restore` what it does not consume."""
        for dlq_url, name in self._dlqs(queue).items():
            seen: set[str] = set()
            while True:
                response = self._sqs.receive_message(
                    QueueUrl=dlq_url,
                    MaxNumberOfMessages=10,
                    VisibilityTimeout=_SCAN_VISIBILITY_S,
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                    MessageAttributeNames=["All"],
                )
                fresh = [m for m in response.get("Messages", []) if m["MessageId"] not in seen]
                # A short poll samples only some SQS servers, so an empty answer is final only
                # when the queue agrees that nothing visible is left.
                if not fresh and not self._visible(dlq_url):
                    break
                for item in fresh:
                    seen.add(item["MessageId"])
                    message = received(name, item)
                    self.connection.payloads.resolve(message)
                    yield dlq_url, FailedJob.from_message(message)

    def _visible(self, dlq_url: str) -> int:
        attrs = self._sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])

    def _restore(self, dlq_url: str, jobs: builtins.list[FailedJob]) -> None:
        for start in range(0, len(jobs), 10):
            chunk = jobs[start : start + 10]
            self._sqs.change_message_visibility_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": job.message.receipt_handle, "VisibilityTimeout": 0}
                    for i, job in enumerate(chunk)
                ],
            )

    def list(self, queue: str | None = None) -> builtins.list[FailedJob]:
        """Every failed job, oldest failure first."""
        found: dict[str, builtins.list[FailedJob]] = {}
        for dlq_url, job in self._scan(queue):
            found.setdefault(dlq_url, []).append(job)
        for dlq_url, jobs in found.items():
            self._restore(dlq_url, jobs)
        return sorted((j for jobs in found.values() for j in jobs), key=lambda j: j.failed_at)

    def find(self, job_id: str) -> FailedJob | None:
        return next((j for j in self.list() if j.id == job_id), None)

    # -- changing ----------------------------------------------------------------------
    def retry(self, ids: builtins.list[str] | None = None, *, queue: str | None = None) -> builtins.list[FailedJob]:
        """Send failed jobs back to their source queues. `ids=None` retries all (of `queue`)."""
        wanted = set(ids) if ids else None
        return self._consume(queue, wanted, self._resend)

    def forget(self, job_id: str) -> bool:
        return bool(self._consume(None, {job_id}, lambda job: None))

    def flush(self, queue: str | None = None) -> int:
        """Delete every failed job (of `queue`). Returns how many were deleted."""
        return len(self._consume(queue, None, lambda job: None))

    def _consume(self, queue: str | None, wanted: set[str] | None, action: Any) -> builtins.list[FailedJob]:
        done: builtins.list[FailedJob] = []
        keep: dict[str, builtins.list[FailedJob]] = {}
        for dlq_url, job in self._scan(queue):
            if wanted is not None and job.id not in wanted:
                keep.setdefault(dlq_url, []).append(job)
                continue
            try:
                still_pointed_at = bool(action(job))
            except Exception:
                log.exception("could not act on failed job %s; it stays in the DLQ", job.id)
                keep.setdefault(dlq_url, []).append(job)
                continue
            self._sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=job.message.receipt_handle)
            if job.message.pointer is not None and not still_pointed_at:
                # Forgotten, or retried with a fresh body of its own: this copy's S3 body is done.
                self.connection.payloads.delete(job.message.pointer)
            done.append(job)
        for dlq_url, jobs in keep.items():
            self._restore(dlq_url, jobs)
        return done

    def _resend(self, job: FailedJob) -> bool:
        """Send a failed job back; True when the new message points at this copy's S3 object."""
        source = job.queue if job.queue != "?" else job.message.queue
        if _in_workflow(job.body) or job.message.pointer is not None:
            try:
                coordination.forget_failure(self.app, job.id)  # undecided again: it may run and go on
            except Exception:
                log.warning("could not clear the recorded failure of %s; its retry may only settle it", job.id)
        message = OutgoingMessage(body=self._fresh_body(job.body))
        reused = bool(job.message.payload_error and job.message.pointer)
        if job.message.payload_error:
            # Its body could not be read (perhaps only for now): send the pointer back as it is,
            # and keep the object it names.
            message = carried(job.message)
        else:
            self.connection.payloads.offload(message, job.id)
        if self.connection.queue_info(source).fifo:
            message.group_id = job.job
            message.deduplication_id = f"{job.id}-retry-{uuid.uuid4().hex[:8]}"
        try:
            self.connection.send(source, message)
        except Exception:
            if message.pointer is not None:
                self.connection.payloads.delete(message.pointer)
            raise
        return reused

    def _fresh_body(self, body: str) -> str:
        """Restart the job's clock: dispatched_at is now and retry_until moves with it."""
        try:
            envelope = decode(body, self.app.signing_key)
        except BadMessageError:
            return body  # unreadable or unsigned: resend as it was, it will be judged again
        now = time.time()
        shift = now - parse_iso(envelope.dispatched_at)
        if envelope.retry_until:
            envelope.retry_until = utc_iso(parse_iso(envelope.retry_until) + shift)
        envelope.available_at = None
        envelope.dispatched_at = utc_iso(now)
        if envelope.chain or envelope.batch_id:
            envelope.extra["retried"] = True  # its first delivery must look for a decided run too
        return envelope.encode(self.app.signing_key)


def _in_workflow(body: str) -> bool:
    """Whether a body is a job of a chain or batch (it then has an "ended" mark to clear)."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and bool(data.get("chain") or data.get("batch_id"))

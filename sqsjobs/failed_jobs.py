"""The failed-jobs store is the dead-letter queue: list, show, retry, forget, flush.

SQS has no "read without taking", so listing receives every DLQ message with a
short visibility timeout and then makes them visible again. Retry sends the
original body back to its source queue as a fresh message (same job id,
attempts reset, as design §7 allows) and only then deletes the DLQ copy: a
crash in between duplicates, never loses. A body offloaded to S3 is shown
resolved; its object is deleted with the DLQ copy (a retry stores a fresh one).

One job may have several DLQ copies (a worker died between the DLQ write and
the delete; a DLQ send timed out after it had succeeded; a retry crashed before
its delete). Copies are one failed job when their bodies match or their
envelopes verify with the same id; a message that only *claims* a job's id (the
`sqsjobs.job_id` attribute, which anyone with send rights on the DLQ writes)
never joins it. A job is listed once with a count, retried once, forgotten
together; the copy acted on is the best one (a verified envelope first). Copies
share one S3 object, deleted once, when no remaining copy and no retried message
points at it, and only when its key is one of the job's own.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

from . import aws, exception_counts, flow, object_keys, runs
from .app import App
from .connections.base import OutgoingMessage, PayloadPointer, ReceivedMessage
from .connections.sqs import SqsConnection, received
from .envelope import Envelope, decode
from .errors import BadMessageError, ConfigurationError
from .failures import FailedJob, verify_failed_job
from .payloads import carried
from .provisioning import known_queues
from .timing import parse_iso, utc_iso

log = logging.getLogger("sqsjobs.failed")

_SCAN_VISIBILITY_S = 30
#: `retry`, `forget` and `flush` read the whole DLQ before acting: its messages stay hidden meanwhile.
_CONSUME_VISIBILITY_S = 300
#: Reasons bulk `retry` refuses: re-signing would undo the check (an old replay, a body nobody signed).
UNVERIFIED_REASONS = frozenset({"expired_signature", "signature"})


@dataclasses.dataclass(slots=True)
class CollectedFailedJob(FailedJob):
    """A failed job as the commands show it: one per job id, with how many DLQ copies it has."""

    copies: int = 1
    #: Other DLQ messages that claim this job's id but are not copies of it (listed as jobs of their own).
    claimants: int = 0

    @classmethod
    def of(cls, job: FailedJob) -> CollectedFailedJob:
        return cls(**{f.name: getattr(job, f.name) for f in dataclasses.fields(FailedJob)})


def read_failed_job(message: ReceivedMessage) -> FailedJob:
    """The attributes as written, bounded, never raising: nothing verified (`verify_failed_job` checks)."""
    return FailedJob.from_message(message)


class RetryRefused(Exception):
    """A failed job `retry` will not send (its text says why); it stays in the DLQ."""


def _rank(job: FailedJob) -> tuple[bool, bool, str]:
    """Which copy to show and act on: a verified envelope above everything, then one with a failure
    reason over a redrive copy, then the latest failure."""
    return (job.verified, job.reason != "redrive", job.failed_at)


Copy = tuple[str, FailedJob]  # (DLQ URL, the message read from it)


def _groups(copies: builtins.list[Copy]) -> builtins.list[builtins.list[Copy]]:
    """The copies of each failed job, best copy first, best jobs first.

    Copies are one job when their envelopes verify with the same id, or their bodies match (and, unless
    one verifies, their ids): a claimed id alone (`sqsjobs.job_id`, which anyone can write) never does.
    """
    verified_ids = {job.body: job.id for _, job in copies if job.verified}
    groups: dict[tuple[str, str], builtins.list[Copy]] = {}
    for url, job in copies:
        key = ("", verified_ids[job.body]) if job.body in verified_ids else (job.body, job.id)
        groups.setdefault(key, []).append((url, job))
    ordered = [sorted(group, key=lambda c: _rank(c[1]), reverse=True) for group in groups.values()]
    return sorted(ordered, key=lambda group: _rank(group[0][1]), reverse=True)


def _collect(group: builtins.list[Copy]) -> CollectedFailedJob:
    collected = CollectedFailedJob.of(group[0][1])
    collected.copies = len(group)
    return collected


class FailedJobs:
    """Operations on the DLQs of the app's queues."""

    def __init__(self, app: App, queues: builtins.list[str] | None = None) -> None:
        if not isinstance(app.connection, SqsConnection):
            raise ConfigurationError("failed-job commands need the sqs connection (SQSJOBS_CONNECTION=sqs)")
        self.app = app
        self.connection: SqsConnection = app.connection
        self.queues = queues or known_queues(app)
        self._sqs = aws.client("sqs")
        self._sources: dict[str, frozenset[str]] | None = None
        #: Jobs the last `retry` did not send, with why (they stay in the DLQ).
        self.refused: dict[str, str] = {}
        #: Job ids named to the last `retry`/`forget` -> DLQ messages that claim the id but were not
        #: copies of the job acted on (left in the DLQ).
        self.unmatched: dict[str, int] = {}
        self._accept_unverified = False

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

    def sources(self, extra: str | None = None) -> dict[str, frozenset[str]]:
        """DLQ URL -> the logical queues of this app (and those the operator named) that drain into it.

        Only these may be a failed job's source queue: the `sqsjobs.source_queue` attribute is data.
        """
        if self._sources is None or (extra and not any(extra in names for names in self._sources.values())):
            out: dict[str, set[str]] = {}
            for name in known_queues(self.app, [*self.queues, *([extra] if extra else [])]):
                try:
                    info = self.connection.queue_info(name)
                except ConfigurationError:
                    continue
                if info.dlq_url:
                    out.setdefault(info.dlq_url, set()).add(name)
            self._sources = {url: frozenset(names) for url, names in out.items()}
        return self._sources

    # -- reading -----------------------------------------------------------------------
    def _scan(self, queue: str | None, visibility: int | None = None) -> Iterator[Copy]:
        """Every DLQ message once (the caller must `_restore` what it does not consume); the hide is read
        at call time, so a DLQ whose scan outlasts 30 s may be given a longer one (the soak does)."""
        visibility = _SCAN_VISIBILITY_S if visibility is None else visibility
        for dlq_url, name in self._dlqs(queue).items():
            sources = self.sources(queue).get(dlq_url, frozenset({name}))
            seen: set[str] = set()
            while True:
                response = self._sqs.receive_message(
                    QueueUrl=dlq_url,
                    MaxNumberOfMessages=10,
                    VisibilityTimeout=visibility,
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                    MessageAttributeNames=["All"],
                )
                got = response.get("Messages", [])
                fresh = [m for m in got if m["MessageId"] not in seen]
                # Only messages seen already: the scan outlasted their hiding and went round; all
                # were seen. A short poll samples only some SQS servers, so an empty answer is final
                # only when the queue agrees that nothing visible is left.
                if not fresh and (got or not self._visible(dlq_url)):
                    break
                for item in fresh:
                    seen.add(item["MessageId"])
                    message = received(name, item)
                    self.connection.payloads.resolve(message)
                    yield (
                        dlq_url,
                        verify_failed_job(
                            message, sources=sources, registry=self.app.registry, envelope=self._envelope(message)
                        ),
                    )

    def _envelope(self, message: ReceivedMessage) -> Envelope | None:
        """The body as an envelope (signature and S3 object checked when keys are set), or None."""
        if message.payload_error:
            return None  # the body is still the pointer
        try:
            return decode(
                message.body,
                self.app.signing_key,
                object_key=message.pointer.key if message.pointer is not None else None,
            )
        except BadMessageError:
            return None

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

    def list(self, queue: str | None = None) -> builtins.list[CollectedFailedJob]:
        """Every failed job once (its copies counted), oldest failure first."""
        scanned = builtins.list(self._scan(queue))
        found: dict[str, builtins.list[FailedJob]] = {}
        for dlq_url, job in scanned:
            found.setdefault(dlq_url, []).append(job)
        for dlq_url, copies in found.items():
            self._restore(dlq_url, copies)
        jobs = [_collect(group) for group in _groups(scanned)]
        shown = Counter(job.id for job in jobs)
        for job in jobs:
            job.claimants = shown[job.id] - 1
        return sorted(jobs, key=lambda j: j.failed_at)

    def find(self, job_id: str) -> CollectedFailedJob | None:
        """The job `retry`/`forget` would act on for this id: a verified envelope before a mere claim."""
        return max((j for j in self.list() if j.id == job_id), key=_rank, default=None)

    # -- changing ----------------------------------------------------------------------
    def retry(
        self, ids: builtins.list[str] | None = None, *, queue: str | None = None, accept_unverified: bool = False
    ) -> builtins.list[CollectedFailedJob]:
        """Send failed jobs back to their source queues, once per job, and delete all their copies.

        `ids=None` retries all (of `queue`). A copy whose reason is `expired_signature` or `signature`
        is refused (RetryRefused, in `refused`) unless named in `ids` with `accept_unverified`: the
        retry would re-sign an old replay; the operator vouches for the body.
        """
        wanted = set(ids) if ids else None
        self._accept_unverified = accept_unverified and wanted is not None
        try:
            return self._consume(queue, wanted, self._resend)
        finally:
            self._accept_unverified = False

    def forget(self, job_id: str) -> bool:
        """Delete every DLQ copy of a failed job."""
        return bool(self._consume(None, {job_id}, lambda job: False))

    def flush(self, queue: str | None = None) -> int:
        """Delete every failed job (of `queue`). Returns how many jobs (not copies) were deleted."""
        return len(self._consume(queue, None, lambda job: False))

    def _consume(
        self, queue: str | None, wanted: set[str] | None, action: Callable[[FailedJob], bool]
    ) -> builtins.list[CollectedFailedJob]:
        """Apply `action` to the best copy of each wanted job, then delete every copy of the jobs it succeeded for.

        The whole DLQ is read first (hidden meanwhile): the copy acted on is the best (`_rank`), only
        copies of that job (`_groups`) are deleted with it, and for a named id only the best job
        claiming it is acted on (other claimants stay: `unmatched`). `action` returns whether the
        message it sent points at the copy's S3 object, or raises RetryRefused (the job stays;
        `refused` says why). An S3 object is deleted after the scan when no kept copy and no sent
        message points at it, a copy's body was read from it and its key is the verified id's own.
        """
        self.refused = {}
        self.unmatched = {}
        done: builtins.list[CollectedFailedJob] = []
        keep: dict[str, builtins.list[FailedJob]] = {}
        released: dict[tuple[str, str], PayloadPointer] = {}  # S3 objects of deleted copies
        in_use: set[tuple[str, str]] = set()  # S3 objects a kept copy or a sent message points at
        tried: set[str] = set()  # named ids whose best job was acted on (or refused)
        prefix = self.app.settings.payload_prefix

        def keep_group(group: builtins.list[Copy]) -> None:
            for dlq_url, job in group:
                keep.setdefault(dlq_url, []).append(job)
                if job.message.pointer is not None:
                    in_use.add((job.message.pointer.bucket, job.message.pointer.key))

        for group in _groups(builtins.list(self._scan(queue, _CONSUME_VISIBILITY_S))):
            best = group[0][1]
            if wanted is not None and (best.id not in wanted or best.id in tried):
                if best.id in tried:
                    self.unmatched[best.id] = self.unmatched.get(best.id, 0) + len(group)
                keep_group(group)
                continue
            if wanted is not None:
                tried.add(best.id)
            try:
                still_pointed_at = action(best)
            except RetryRefused as exc:
                self.refused[best.id] = str(exc)
                keep_group(group)
                continue
            except Exception:
                log.exception("could not act on failed job %s; it stays in the DLQ", best.id)
                keep_group(group)
                continue
            if still_pointed_at and best.message.pointer is not None:
                in_use.add((best.message.pointer.bucket, best.message.pointer.key))
            for dlq_url, job in group:
                self._sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=job.message.receipt_handle)
                pointer = job.message.pointer
                if (
                    pointer is not None
                    and not job.message.payload_error
                    and "id" not in job.unverified
                    and object_keys.is_own(prefix, job.id, pointer.key)
                ):
                    released[(pointer.bucket, pointer.key)] = pointer
            done.append(_collect(group))
        for dlq_url, jobs in keep.items():
            self._restore(dlq_url, jobs)
        for key, pointer in released.items():
            if key not in in_use:
                self.connection.payloads.delete(pointer)
        return done

    def _resend(self, job: FailedJob) -> bool:
        """Send a failed job back; True when the new message points at this copy's S3 object.

        Only to a verified source queue (one of this app's that drains into the DLQ it was read
        from): RetryRefused otherwise, and the job stays in the DLQ.
        """
        if "queue" in job.unverified or job.queue == "?":
            raise RetryRefused(
                f"its source queue {job.queue[:80]!r} is not a queue of this app that drains into this DLQ "
                "(the sqsjobs.source_queue attribute and the envelope do not check out); it stays in the DLQ "
                "(`sqsjobs failed forget` removes it)"
            )
        if job.message.payload_reason == "foreign_pointer" and job.message.payload_error:
            raise RetryRefused(
                "its body is a pointer outside the payload bucket and prefix (foreign_pointer); it stays in the "
                "DLQ (`sqsjobs failed forget` removes it, and never the object it names)"
            )
        if job.reason in UNVERIFIED_REASONS and not self._accept_unverified:
            raise RetryRefused(
                f"its reason is {job.reason}: its signature is too old or does not check out, and a retry would "
                "re-sign a body nobody vouched for; it stays in the DLQ (`sqsjobs failed retry ID "
                "--accept-unverified` sends it if you vouch for the body; an unsigned one is never signed)"
            )
        source = job.queue
        try:  # a new life: `max_exceptions` counts again from 0, as `attempts` does
            exception_counts.forget(self.app.store, job.id)
        except Exception:
            log.warning("could not clear the exception count of %s; max_exceptions may end it early", job.id)
        if self._in_workflow(job.body):
            # Undecided again, so it may run and go on. If that cannot be written, the retry would
            # only settle it as failed and drop it: keep it in the DLQ instead (raising does).
            runs.forget_failure(self.app.store, job.id)
        elif job.message.payload_error and job.message.pointer is not None:
            try:  # an unreadable body may be a chain/batch job: clear its marks if there are any
                runs.forget_failure(self.app.store, job.id)
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
            message.group_id = job.job if job.job in self.app.registry else "sqsjobs-retried"
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
        if flow.involved(envelope):
            envelope.extra["retried"] = True
        return envelope.encode(self.app.signing_key)

    def _in_workflow(self, body: str) -> bool:
        """Whether a body is a chain/batch job or a callback (it then has an "ended" mark to clear)."""
        try:
            return flow.involved(decode(body, self.app.signing_key))
        except BadMessageError:
            return False

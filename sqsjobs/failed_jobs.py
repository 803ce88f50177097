"""The failed-jobs store is the dead-letter queue: list, show, retry, forget, flush (and prune, by filter).

SQS has no "read without taking", so listing receives every DLQ message with a short visibility timeout
and then makes them visible again. Retry sends the original body back to its source queue as a fresh
message (same job id, attempts reset) and only then deletes the DLQ copy: a crash in between duplicates,
never loses. A body offloaded to S3 is shown resolved; its object is deleted with the DLQ copy.

One job may have several DLQ copies (a worker died between the DLQ write and the delete; a DLQ send timed
out after it had succeeded; a retry crashed before its delete). Copies are one failed job when their
bodies match or their envelopes verify with the same id; a message that only *claims* a job's id (the
`sqsjobs.job_id` attribute, which anyone with send rights on the DLQ writes) never joins it. A job is
listed once with a count, retried once, forgotten together; the copy acted on is the best one (a
verified envelope first). Copies share one S3 object, deleted once, when no remaining copy and no
retried message points at it, and only when its key is one of the job's own. Filters, the summary and
batched sends: sqsjobs.failed_review.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

from . import aws, exception_counts, object_keys, resigning, runs
from .app import App
from .connections.base import OutgoingMessage, PayloadPointer, ReceivedMessage
from .connections.sqs import SqsConnection, received
from .dlq_reading import HeldMessages
from .envelope import Envelope, decode
from .errors import BadMessageError, ConfigurationError
from .failed_copies import CollectedFailedJob, Copy, collect, groups, rank
from .failed_filters import Proof, proof
from .failed_review import Hooks, Pending, RetrySends
from .failures import FailedJob, verify_failed_job
from .payloads import carried
from .provisioning import known_queues

log = logging.getLogger("sqsjobs.failed")

_SCAN_VISIBILITY_S = 30
#: `retry`, `forget` and `flush` read the whole DLQ before acting: its messages stay hidden meanwhile.
_CONSUME_VISIBILITY_S = 300
#: Reasons bulk `retry` refuses: re-signing would undo the check (an old replay, a body nobody signed).
UNVERIFIED_REASONS = frozenset({"expired_signature", "signature"})


def read_failed_job(message: ReceivedMessage) -> FailedJob:
    """The attributes as written, bounded, never raising: nothing verified (`verify_failed_job` checks)."""
    return FailedJob.from_message(message)


class RetryRefused(Exception):
    """A failed job `retry` will not send (its text says why); it stays in the DLQ."""


def _holds_all(hold: HeldMessages, group: builtins.list[Copy]) -> bool:
    return all(hold.receipt(url, job.message.message_id) for url, job in group)


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


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
        #: Why the last command's read of the DLQs may have missed messages (empty: it saw them all once).
        self.incomplete: builtins.list[str] = []
        self._accept_unverified = False
        #: S3 objects read and let go (sqsjobs.dlq_reading: bodies are not all kept) -> their body's digest.
        self._digests: dict[tuple[str, str], str] = {}
        #: DLQ message id -> the job its body names, when the body decoded as an envelope (signature checked).
        self._body_jobs: dict[str, str] = {}
        #: While `_consume` acts: its hold, S3 objects of deleted copies / of kept copies and sent messages.
        self._hold: HeldMessages | None = None
        self._released: dict[tuple[str, str], PayloadPointer] = {}
        self._in_use: set[tuple[str, str]] = set()
        self._done: builtins.list[CollectedFailedJob] = []
        self._advance: Callable[[], None] = lambda: None

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
    def _scan(self, queue: str | None, hold: HeldMessages) -> Iterator[Copy]:
        """Every DLQ message once, held hidden by `hold` (the caller gives back what it does not delete).

        A body read from S3 is verified and then let go (the copy keeps its pointer, and `body()` reads
        it again when a command needs it): a DLQ of large payloads is not held in memory all at once.
        """
        for dlq_url, name in self._dlqs(queue).items():
            sources = self.sources(queue).get(dlq_url, frozenset({name}))
            for item in hold.read(dlq_url):
                message = received(name, item)
                self.connection.payloads.resolve(message)
                envelope = self._envelope(message)
                if envelope is not None:
                    self._body_jobs[message.message_id] = envelope.job
                job = verify_failed_job(
                    message, sources=sources, registry=self.app.registry, envelope=envelope, keys=self.app.signing_key
                )
                if (pointer := message.pointer) is not None and not message.payload_error:
                    self._digests[(pointer.bucket, pointer.key)] = _digest(job.body)
                    job.body = message.body = pointer.body
                yield dlq_url, job

    def body(self, job: FailedJob) -> str:
        """The job's body, read again from S3 when the scan let it go; RetryRefused when the object is
        gone or is no longer what the scan verified."""
        pointer = job.message.pointer
        if pointer is None or job.message.payload_error or job.body != pointer.body:
            return job.body
        again = dataclasses.replace(job.message, body=pointer.body, pointer=None)
        self.connection.payloads.resolve(again)
        if again.payload_error or _digest(again.body) != self._digests.get((pointer.bucket, pointer.key)):
            raise RetryRefused(
                f"its S3 object s3://{pointer.bucket}/{pointer.key[:200]} could not be read again, or changed "
                f"since it was checked ({again.payload_error or 'another body'}); it stays in the DLQ"
            )
        return again.body

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

    def proof(self, job: FailedJob) -> Proof:
        """What a copy read by this store proves about itself (sqsjobs.failed_filters): what filters judge."""
        body_job = self._body_jobs.get(job.message.message_id)
        return proof(job, signed=self.app.signing_key is not None, body_job=body_job, registry=self.app.registry)

    def list(
        self, queue: str | None = None, *, select: Callable[[builtins.list[Copy]], bool] | None = None
    ) -> builtins.list[CollectedFailedJob]:
        """Every failed job once (its copies counted), oldest failure first; `incomplete` says if some were missed.

        `select` (e.g. a `failed_review.Selection`) is given each job's copies, best first, and keeps it or not.
        """
        hold = HeldMessages(self._sqs, _SCAN_VISIBILITY_S)
        try:
            scanned = builtins.list(self._scan(queue, hold))
        finally:
            hold.give_back()
        self.incomplete = hold.incomplete
        every = groups(scanned)
        shown = Counter(group[0][1].id for group in every)
        jobs = [collect(group) for group in every if select is None or select(group)]
        for job in jobs:
            job.claimants = shown[job.id] - 1
        return sorted(jobs, key=lambda j: j.failed_at)

    def find(self, job_id: str) -> CollectedFailedJob | None:
        """The job `retry`/`forget` would act on for this id: a verified envelope before a mere claim."""
        return max((j for j in self.list() if j.id == job_id), key=rank, default=None)

    # -- changing ----------------------------------------------------------------------
    def retry(
        self,
        ids: builtins.list[str] | None = None,
        *,
        queue: str | None = None,
        accept_unverified: bool = False,
        hooks: Hooks | None = None,
    ) -> builtins.list[CollectedFailedJob]:
        """Send failed jobs back to their source queues (SendMessageBatch), once per job; delete all their copies.

        `ids=None` retries all (of `queue`; those `hooks.select` keeps). A copy whose reason is `expired_signature`
        or `signature` is refused (RetryRefused, in `refused`) unless named in `ids` with `accept_unverified`:
        the retry would re-sign an old replay; the operator vouches for the body."""
        wanted = set(ids) if ids else None
        self._accept_unverified = accept_unverified and wanted is not None
        try:
            return self._consume(queue, wanted, self._prepare, hooks or Hooks())
        finally:
            self._accept_unverified = False

    def forget(self, job_id: str) -> bool:
        """Delete every DLQ copy of a failed job."""
        return bool(self._consume(None, {job_id}, lambda job: None, Hooks()))

    def flush(self, queue: str | None = None, *, hooks: Hooks | None = None) -> int:
        """Delete every failed job (of `queue`; those `hooks.select` keeps: `prune` is a flush by age).
        Returns how many jobs (not copies) were deleted; `hooks.confirm` sees them first and may say no."""
        return len(self._consume(queue, None, lambda job: None, hooks or Hooks()))

    def _consume(
        self,
        queue: str | None,
        wanted: set[str] | None,
        action: Callable[[FailedJob], Pending | None],
        hooks: Hooks,
    ) -> builtins.list[CollectedFailedJob]:
        """Act on the best copy of each wanted (and selected) job, then delete every copy of the jobs it succeeded for.

        The whole DLQ is read first (hidden meanwhile): the copy acted on is the best (`rank`), only copies
        of that job (`groups`) go with it, and for a named id only the best job claiming it is acted on
        (other claimants stay: `unmatched`). `hooks.confirm` sees the chosen jobs first. `action` returns
        None (the copies go now), a message to send (they go once SQS took it), or raises RetryRefused (the
        job stays; `refused` says why). An S3 object is deleted after the scan when no kept copy and no sent
        message points at it, a copy's body was read from it and its key is the verified id's own.
        """
        self.refused, self.unmatched, self._done = {}, {}, []
        self._released, self._in_use = {}, set()
        tried: set[str] = set()  # named ids whose best job was chosen
        hold = self._hold = HeldMessages(self._sqs, _CONSUME_VISIBILITY_S)
        self._advance = hooks.advance or (lambda: None)
        sends = RetrySends(self.connection, held=lambda g: _holds_all(hold, g), sent=self._sent, refused=self._not_sent)
        try:
            chosen: builtins.list[builtins.list[Copy]] = []
            for group in groups(builtins.list(self._scan(queue, hold))):
                best = group[0][1]
                if wanted is not None and (best.id not in wanted or best.id in tried):
                    if best.id in tried:
                        self.unmatched[best.id] = self.unmatched.get(best.id, 0) + len(group)
                    self._keep(group)
                    continue
                if wanted is not None:
                    tried.add(best.id)
                if not _holds_all(hold, group) or (hooks.select is not None and not hooks.select(group)):
                    self._keep(group)  # a lapsed hold is said in `incomplete`: another reader may act on it
                    continue
                chosen.append(group)
            self.incomplete = hold.incomplete
            if hooks.confirm is not None and not hooks.confirm([collect(group) for group in chosen]):
                return []
            for group in chosen:
                hold.keep_hidden()
                best = group[0][1]
                try:
                    if not _holds_all(hold, group):
                        raise RetryRefused("the hold on its DLQ copies lapsed before it was acted on")
                    pending = action(best)
                except RetryRefused as exc:
                    self.refused[best.id] = str(exc)
                    self._keep(group)
                except Exception:
                    log.exception("could not act on failed job %s; it stays in the DLQ", best.id)
                    self._keep(group)
                else:
                    if pending is not None:
                        pending.group = group
                        sends.add(pending)  # its copies go once SQS took it (`_sent`)
                        continue
                    self._drop(group)
                self._advance()
            sends.flush()
        finally:
            self._hold = None
            hold.give_back()
            self.incomplete = hold.incomplete
        for key, pointer in self._released.items():
            if key not in self._in_use:
                self.connection.payloads.delete(pointer)
        return self._done

    def _keep(self, group: builtins.list[Copy]) -> None:
        """The job stays in the DLQ: the S3 objects its copies point at must stay too."""
        self._in_use.update((p.bucket, p.key) for _, job in group if (p := job.message.pointer) is not None)

    def _drop(self, group: builtins.list[Copy]) -> None:
        """Delete the copies of a job this command still holds; note the S3 objects that may go with them."""
        assert self._hold is not None
        prefix = self.app.settings.payload_prefix
        for dlq_url, job in group:
            receipt = self._hold.receipt(dlq_url, job.message.message_id)
            if receipt is None:
                continue  # the hold lapsed meanwhile (said in `incomplete`): the copy stays
            self._sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=receipt)
            self._hold.deleted(dlq_url, job.message.message_id)
            pointer = job.message.pointer
            read = not job.message.payload_error and "id" not in job.unverified  # its body came from it, as ours
            if pointer is not None and read and object_keys.is_own(prefix, job.id, pointer.key):
                self._released[(pointer.bucket, pointer.key)] = pointer
        self._done.append(collect(group))

    def _sent(self, item: Pending) -> None:
        """SQS took a retried job's message: its copies go (the object it points at stays)."""
        pointer = item.group[0][1].message.pointer
        if item.reused and pointer is not None:
            self._in_use.add((pointer.bucket, pointer.key))
        self._drop(item.group)
        self._advance()

    def _not_sent(self, item: Pending, why: str) -> None:
        """A retried job's message was not sent: it stays in the DLQ, and a fresh S3 object for it goes."""
        self.refused[item.group[0][1].id] = why
        if item.message.pointer is not None and not item.reused:
            self.connection.payloads.delete(item.message.pointer)
        self._keep(item.group)
        self._advance()

    def _prepare(self, job: FailedJob) -> Pending:
        """The message that sends a failed job back, only to a verified source queue (one of this app's
        that drains into the DLQ it was read from); RetryRefused when it may not go (it stays in the DLQ)."""
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
        body = self.body(job)
        if not resigning.may_resign(self.app.signing_key, job, body, accepted=self._accept_unverified):
            raise RetryRefused(
                "no worker of this deployment vouches for its reason (its sqsjobs.tag is missing or does not "
                "check out: a copy written before DLQ tags, or one sent to the DLQ by someone else), and a retry "
                "would re-sign its body; it stays in the DLQ (`sqsjobs failed retry ID --accept-unverified` "
                "sends it if you vouch for the body)"
            )
        source = job.queue
        try:  # a new life: `max_exceptions` counts again from 0, as `attempts` does
            exception_counts.forget(self.app.store, job.id)
        except Exception:
            log.warning("could not clear the exception count of %s; max_exceptions may end it early", job.id)
        if resigning.in_workflow(body, self.app.signing_key):
            # Undecided again, so it may run and go on. If that cannot be written, the retry would
            # only settle it as failed and drop it: keep it in the DLQ instead (raising does).
            runs.forget_failure(self.app.store, job.id)
        elif job.message.payload_error and job.message.pointer is not None:
            try:  # an unreadable body may be a chain/batch job: clear its marks if there are any
                runs.forget_failure(self.app.store, job.id)
            except Exception:
                log.warning("could not clear the recorded failure of %s; its retry may only settle it", job.id)
        message = OutgoingMessage(body=resigning.fresh_body(body, self.app.signing_key, time.time()))
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
        return Pending([], source, message, reused)

"""Planning a bulk dispatch (`dispatch_many`, a chain's or batch's jobs): every job drafted first, then
each queue's messages taken (unique lock, S3 body) batch by batch, just before that batch is sent.

Drafting everything first keeps a bulk dispatch all-or-nothing about what it refuses (a FIFO delay, a
payload that cannot be encoded, a KMS refusal): nothing is taken or sent then. Encoding bodies batch by
batch keeps its memory to one batch of bodies: 10,000 jobs of 200 KB once held 2 GB of bodies before
the first send, and a CPU bill for fresh pages that the raw `send_message_batch` loop does not pay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType

from . import unique
from .connections.base import OutgoingMessage
from .context import Services
from .dispatch_plan import Draft, Grouped, Planned, draft, forget_payload, message_of, offload, take_unique_lock
from .dispatched import Dispatched
from .envelope import Envelope
from .errors import DispatchError

Taken = tuple[Envelope, OutgoingMessage]
NotQueued = list[tuple[str, str, str]]


def drafts_by_queue(app: Services, planned: Iterable[Planned]) -> dict[str, list[Draft]]:
    """Every job's envelope, by queue, in the order given; raises before anything is taken or sent."""
    queued: dict[str, list[Draft]] = {}
    for index, item in enumerate(planned):
        drafted = draft(
            app,
            item.job,
            queue=item.queue,
            delay=item.delay,
            entry_id=f"e{index}",
            batch_id=item.batch_id,
            chain=item.chain,
            job_id=item.job_id,
            extra=item.extra,
        )
        queued.setdefault(drafted.queue, []).append(drafted)
    return queued


def taken(app: Services, drafts: Iterable[Draft], not_queued: NotQueued, dropped: list[Dispatched]) -> Iterator[Taken]:
    """Each draft's message with its unique lock taken and its large body in S3. A unique job's duplicate
    goes to `dropped`; a job whose body cannot be encoded or whose lock or S3 body could not be written, to
    `not_queued` (the others go on)."""
    for drafted in drafts:
        envelope = drafted.envelope
        try:
            message = message_of(app, drafted)
        except DispatchError as exc:
            not_queued.extend(exc.not_queued)
            continue
        try:
            if not take_unique_lock(app, drafted.job, envelope):
                dropped.append(Dispatched(envelope.id, envelope.job, drafted.queue, queued=False))
                continue
        except DispatchError as exc:
            not_queued.extend(exc.not_queued)
            continue
        try:
            offload(app, envelope, message)
        except BaseException as exc:
            unique.release(app.store, envelope)
            if not isinstance(exc, DispatchError):
                raise
            not_queued.extend(exc.not_queued)
            continue
        yield envelope, message


def free(app: Services, items: Iterable[Taken]) -> None:
    """Give back what was taken for messages that will not be sent: their unique locks and S3 bodies."""
    for envelope, message in items:
        unique.release(app.store, envelope)
        forget_payload(app, message)


def by_queue(app: Services, planned: Iterable[Planned]) -> tuple[Grouped, NotQueued, list[Dispatched]]:
    """Every message taken at once, by queue (what a transaction holds until its commit), the jobs whose
    lock or S3 body could not be written, and the unique duplicates that were dropped."""
    queued = drafts_by_queue(app, planned)
    grouped: Grouped = {}
    not_queued: NotQueued = []
    dropped: list[Dispatched] = []
    try:
        for name, drafts in queued.items():
            grouped.setdefault(name, []).extend(taken(app, drafts, not_queued, dropped))  # freed as it grows
    except BaseException:
        free(app, (item for items in grouped.values() for item in items))
        raise
    return {name: items for name, items in grouped.items() if items}, not_queued, dropped


#: How much of its encoded bodies a bulk dispatch holds before sending them: a few full batches. A body
#: moved to S3 counts as its pointer, so jobs over SQSJOBS_PAYLOAD_THRESHOLD are all uploaded before the
#: first send (the S3 and SQS calls do not take turns, which costs fresh heap pages on every job).
HELD_BYTES = 4 * 1_048_576


class Stream:
    """One queue's messages, taken a few batches' worth at a time as the sender asks for the next batch.
    Used as a context manager: what was taken and not yet handed to the sender is given back if the
    sending stops on an error (what was handed over is the sender's: it frees what SQS did not take)."""

    def __init__(self, app: Services, drafts: Iterable[Draft], not_queued: NotQueued, dropped: list[Dispatched]):
        self._app = app
        self._taken = taken(app, drafts, not_queued, dropped)
        self._round: list[Taken] = []  # taken this round (a carried batch first)
        self._handed = 0  # of which the first so many are the sender's

    def batches(self, cut: Callable[[Iterable[Taken]], Iterable[list[Taken]]]) -> Iterator[list[Taken]]:
        exhausted = False
        while not exhausted:
            held = sum(message.size for _, message in self._round)  # the batch carried over
            exhausted = True
            for item in self._taken:  # resumed where the last round stopped
                self._round.append(item)
                held += item[1].size
                if held >= HELD_BYTES:
                    exhausted = False
                    break
            cut_up = list(cut(self._round))
            carried = [] if exhausted or not cut_up else cut_up.pop()  # maybe short: it fills up next round
            for batch in cut_up:
                self._handed += len(batch)
                yield batch
            self._round, self._handed = list(carried), 0

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:
            free(self._app, self._round[self._handed :])

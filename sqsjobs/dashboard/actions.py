"""What the dashboard's buttons do: the CLI's operations, called the same way, with the same safety rules.

| button | the CLI's | calls |
| --- | --- | --- |
| pause / continue | `pause QUEUE` / `continue QUEUE` | `pausing.pause` / `pausing.resume` |
| retry (a row) | `failed retry ID` | `FailedJobs([q]).retry`, its copies (`One`): a verified queue, no re-signing |
| retry (the filter) | `failed retry [--queue Q] FILTERS` / `--all` | `FailedJobs.retry(None, hooks=Selection)` |
| forget (a row) | `failed forget ID` | `FailedJobs([q]).flush`, its copies (`One`) |
| forget (the filter) | `failed flush [--queue Q] [FILTERS] --yes` | `FailedJobs.flush(hooks=Selection)`, asked first |
| cancel a batch | `Batch.cancel()` | the batch's `cancelled_at` |
| cancel a job | `jobs cancel ID` | `job_log.cancel` |

`--accept-unverified` has no button: a copy whose signature did not check out is retried by a person who
looked at it, with the CLI. Each returns the line to show (what was done, and what was not, with why).

A row's buttons post its job id, the queue whose DLQ it was read from and its best copy's message id, and
act only on the job (its copies) holding that message in that DLQ: a message anyone sent to one DLQ,
claiming the id of a real failed job elsewhere, can only ever take itself with it.
"""

from __future__ import annotations

from .. import job_log, pausing
from ..app import App
from ..failed_copies import CollectedFailedJob, Copy
from ..failed_filters import parse_filter
from ..failed_jobs import FailedJobs
from ..failed_review import Hooks, Selection
from .reading import FailedFilters, Reader


class Refused(Exception):
    """The action was not attempted (a bad value): its text says why."""


def _known(reader: Reader, queue: str) -> str:
    if queue not in reader.queues:
        raise Refused(f"{queue!r} is not a queue of this app ({', '.join(reader.queues)})")
    return queue


def pause(reader: Reader, queue: str, by: str) -> str:
    result = pausing.pause(reader.app, _known(reader, queue), by)
    mapped = f"; Lambda event source mapping(s) disabled: {', '.join(result.mappings)}" if result.mappings else ""
    skipped = "".join(f" Left as it was: {why}." for why in result.skipped)
    beat = reader.app.settings.worker_beat
    return f"Paused {queue}: pollers stop taking its jobs within {beat:g}s{mapped}.{skipped}"


def resume(reader: Reader, queue: str) -> str:
    result = pausing.resume(reader.app, _known(reader, queue))
    if not result.changed:
        return f"{queue} was not paused."
    mapped = f"; Lambda event source mapping(s) enabled: {', '.join(result.mappings)}" if result.mappings else ""
    return f"Continued {queue}{mapped}."


def _selection(app: App, store: FailedJobs, filters: FailedFilters) -> Selection:
    try:
        flt = parse_filter(
            jobs=filters.job or None,
            reasons=filters.reason or None,
            since=filters.since or None,
            now=app.clock(),
            registry=app.registry,
        )
    except ValueError as exc:
        raise Refused(str(exc)) from None
    return Selection(flt, store.proof)


def _report(store: FailedJobs, done: str, selection: Selection | None = None, verb: str = "retried") -> str:
    parts = [done]
    parts.extend(f"Not retried: {job_id}: {why}" for job_id, why in sorted(store.refused.items()))
    if selection is not None and selection.left:
        parts.append(
            f"Not {verb}: {selection.left} job(s) that match only on values their DLQ copies do not prove "
            "(act on them one by one)."
        )
    if store.incomplete:
        parts.append("Incomplete: the DLQ could not be read whole; try again. " + "; ".join(store.incomplete[:3]))
    return " ".join(parts)


class One:
    """The job a row showed: `select` keeps only the copies of `job_id` that hold the row's message."""

    def __init__(self, job_id: str, queue: str, message: str) -> None:
        if not job_id or not message:
            raise Refused("no id or message in the form (use the page's buttons)")
        self.job_id, self.queue, self.message = job_id, queue, message
        self.chosen: list[CollectedFailedJob] = []

    def select(self, group: list[Copy]) -> bool:
        return group[0][1].id == self.job_id and any(job.message.message_id == self.message for _, job in group)

    def confirm(self, jobs: list[CollectedFailedJob]) -> bool:
        self.chosen = jobs
        return True

    def hooks(self) -> Hooks:
        return Hooks(select=self.select, confirm=self.confirm)

    def gone(self) -> str:
        return (
            f"No failed job {self.job_id} in {self.queue}'s DLQ with the copy the page showed (retried, forgotten "
            "or expired since): read the DLQs again."
        )

    def copies(self) -> str:
        count = sum(job.copies for job in self.chosen)
        return f"{count} DLQ cop{'y' if count == 1 else 'ies'}"


def retry(reader: Reader, job_id: str, queue: str, message: str) -> str:
    one = One(job_id, _known(reader, queue), message)
    store = FailedJobs(reader.app, [queue])
    done = store.retry(None, queue=queue, hooks=one.hooks())
    if not done and not store.refused:
        return _report(store, one.gone())
    if not done:
        return _report(store, f"Retried nothing from {queue}'s DLQ.")
    return _report(store, f"Retried {job_id} from {queue}'s DLQ ({one.copies()} deleted).")


def retry_selected(reader: Reader, filters: FailedFilters) -> str:
    queue = _known(reader, filters.queue) if filters.queue else None
    store = FailedJobs(reader.app)
    selection = _selection(reader.app, store, filters)
    done = store.retry(None, queue=queue, hooks=Hooks(select=selection))
    return _report(store, f"Retried {len(done)} job(s).", selection)


def forget(reader: Reader, job_id: str, queue: str, message: str) -> str:
    one = One(job_id, _known(reader, queue), message)
    store = FailedJobs(reader.app, [queue])
    if not store.flush(queue, hooks=one.hooks()):
        return _report(store, one.gone())
    return _report(store, f"Forgot {job_id} from {queue}'s DLQ ({one.copies()} deleted).")


def forget_selected(reader: Reader, filters: FailedFilters) -> str:
    queue = _known(reader, filters.queue) if filters.queue else None
    store = FailedJobs(reader.app)
    selection = _selection(reader.app, store, filters)
    count = store.flush(queue, hooks=Hooks(select=selection if selection.filter.active else None))
    return _report(store, f"Deleted {count} failed job(s).", selection, verb="deleted")


def cancel_batch(reader: Reader, batch_id: str) -> str:
    found = reader.batch(batch_id)
    if found is None:
        raise Refused(f"no batch {batch_id} (never created, pruned, or expired)")
    found.cancel()
    return f"Cancelled batch {batch_id}: jobs using SkipIfBatchCancelled are skipped from now on."


def cancel_job(reader: Reader, job_id: str) -> str:
    app = reader.app
    outcome = job_log.cancel(app.store, job_id, app.clock(), app.settings.job_log_ttl)
    if outcome == "cancelled":
        return f"Cancelled {job_id}: it will be acknowledged unrun when received."
    return f"Not cancelled: {job_id} has {'already finished' if outcome == 'ended' else 'started'}."

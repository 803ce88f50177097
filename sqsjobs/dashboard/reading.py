"""What each page shows, read with the same functions as the CLI verbs (no AWS client of its own).

| page | the CLI's | reads |
| --- | --- | --- |
| overview, queues | `monitor`, `workers` | GetQueueAttributes (queue, DLQ), CloudWatch's age once a minute, beats |
| charts | - | the metric snapshots: one Query per queue, hour and shard (a settled hour only once) |
| failed | `failed list/summary/show` | every DLQ message, held hidden while it is read (never refreshed on a timer) |
| batches | `batches list` | a scan of <= 2,000 items of the table for batch records (<= 50 shown, each one's shards) |
| schedules | `schedule list` | one GetItem per schedule |
| jobs | `jobs list --tag`, `show` | by tag (a Query, <= 50 GetItems), by id (a GetItem), a scan of <= 2,000 items |
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .. import job_log, metric_snapshots, workers
from ..app import App
from ..batches import Batch, find_batch, list_batches_at_most
from ..failed_copies import CollectedFailedJob
from ..failed_filters import parse_filter
from ..failed_jobs import FailedJobs, RetryRefused
from ..failed_review import Selection, SummaryRow, summarize
from ..provisioning import known_queues
from ..queue_monitor import Monitor, Report
from ..scheduling import schedule_states
from . import charts

#: Hours of snapshots a chart may cover (they live 48 hours).
MAX_HOURS = 48
#: Charts are read again at most this often (a minute's counters change once a minute).
CHART_CACHE_S = 20.0
#: A failed job's body is shown up to this many characters (`failed show` without --full).
BODY_CHARS = 4000
#: Rows the jobs page lists (and GetItems a tag's list costs).
JOB_ROWS = 50
#: Items of the table the jobs page (without a tag) and the batches page read, matching or not (a scan has
#: no order: they show the newest of what they read). About 50 read units for small items.
SCAN_ITEMS = 2000
#: Batches the batches page shows, newest of those it read (each one costs a read of its counter shards).
BATCH_ROWS = 50
#: Rows the failed page lists, newest first (its counts by queue, job and reason cover them all).
FAILED_ROWS = 500


@dataclass
class FailedFilters:
    """The failed page's filters, as the CLI's options take them (text, parsed by `parse_filter`)."""

    queue: str = ""
    job: str = ""
    reason: str = ""
    since: str = ""

    @classmethod
    def of(cls, values: Any) -> FailedFilters:
        return cls(
            **{name: str(values.get(name, "") or "").strip()[:200] for name in ("queue", "job", "reason", "since")}
        )

    @property
    def active(self) -> bool:
        return bool(self.job or self.reason or self.since)

    def query(self) -> dict[str, str]:
        return {name: value for name, value in vars(self).items() if value}


@dataclass
class FailedView:
    #: The newest FAILED_ROWS of `total`.
    jobs: list[CollectedFailedJob] = field(default_factory=list)
    total: int = 0
    groups: list[SummaryRow] = field(default_factory=list)
    #: Jobs left out: they match only on values their DLQ copies do not prove.
    left: int = 0
    incomplete: list[str] = field(default_factory=list)
    error: str = ""
    unverified: dict[str, tuple[str, ...]] = field(default_factory=dict)


class Reader:
    """The dashboard's reads of one App; shared by every request (the monitor keeps its CloudWatch pace)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.queues = known_queues(app)
        self._monitor = Monitor(app, self.queues, age_every=60)
        self._lock = threading.Lock()
        self._charts: dict[int, tuple[float, dict[str, list[metric_snapshots.Minute]]]] = {}
        self._history = metric_snapshots.History(app.store)

    # -- queues and workers ------------------------------------------------------------------
    def queue_report(self) -> Report:
        with self._lock:  # the monitor remembers what it read (URLs, the CloudWatch pace)
            return self._monitor.check()

    def workers(self) -> tuple[list[workers.WorkerInfo], dict[str, dict[str, Any]]]:
        store = self.app.store
        return workers.list_workers(store), workers.paused_queues(store)

    def snapshots(self, hours: int) -> tuple[dict[str, list[metric_snapshots.Minute]], float, float]:
        until = self.app.clock()
        since = until - hours * 3600
        cached = self._charts.get(hours)
        if cached is not None and time.monotonic() - cached[0] < CHART_CACHE_S:
            return cached[1], since, until
        series = self._history.read(self.queues, since, until)
        self._charts[hours] = (time.monotonic(), series)
        return series, since, until

    # -- failed jobs -------------------------------------------------------------------------
    def failed(self, filters: FailedFilters) -> FailedView:
        try:
            flt = parse_filter(
                jobs=filters.job or None,
                reasons=filters.reason or None,
                since=filters.since or None,
                now=self.app.clock(),
                registry=self.app.registry,
            )
        except ValueError as exc:
            return FailedView(error=str(exc))
        if filters.queue and filters.queue not in self.queues:
            return FailedView(error=f"{filters.queue!r} is not a queue of this app ({', '.join(self.queues)})")
        store = FailedJobs(self.app, [filters.queue] if filters.queue else None)
        selection = Selection(flt, store.proof)
        jobs = store.list(select=selection)
        shown = jobs[: -FAILED_ROWS - 1 : -1]  # the newest, newest first
        return FailedView(
            jobs=shown,
            total=len(jobs),
            groups=summarize(jobs, selection),
            left=selection.left,
            incomplete=store.incomplete,
            unverified={job.id: selection.unverified(job) for job in shown},
        )

    def failed_job(self, job_id: str) -> tuple[CollectedFailedJob | None, str, str, list[str]]:
        """The job `retry`/`forget` would act on, its body shown bounded (or why not), and any incompleteness."""
        store = FailedJobs(self.app)
        found = store.find(job_id)
        if found is None:
            return None, "", "", store.incomplete
        try:
            body = store.body(found)
        except RetryRefused as exc:
            return found, "", f"body not shown: {exc}", store.incomplete
        note = ""
        if found.encrypted:
            note = "payload encrypted: `sqsjobs failed show ID` decrypts it with credentials that allow kms:Decrypt"
        return found, _pretty(body), note, store.incomplete

    # -- batches, schedules, the job log -----------------------------------------------------
    def batches(self) -> tuple[list[Batch], bool]:
        """The newest BATCH_ROWS batches among SCAN_ITEMS items of the table, and whether that was the whole
        table (else newer batches may be in the part not read): never the whole table for a page."""
        found, whole = list_batches_at_most(self.app, SCAN_ITEMS)
        return found[:BATCH_ROWS], whole

    def batch(self, batch_id: str) -> Batch | None:
        return find_batch(batch_id, self.app)

    def schedules(self) -> list[dict[str, Any]]:
        return schedule_states(self.app)

    def jobs(self, tag: str) -> list[job_log.JobStatus]:
        """A tag's newest JOB_ROWS: one Query with that limit, one GetItem per row."""
        return job_log.by_tag(self.app.store, tag, JOB_ROWS)

    def recent_jobs(self) -> tuple[list[job_log.JobStatus], bool]:
        """The newest JOB_ROWS of the job records among SCAN_ITEMS items of the table, and whether that
        was the whole table (else newer jobs may be in the part not read)."""
        records, whole = self.app.store.scan_at_most("job#", "log", SCAN_ITEMS)
        found = [
            job_log.JobStatus.from_attrs(pk[len("job#") :], attrs)
            for pk, attrs in records
            if "job" in attrs  # a cancel mark waiting for its message has no job yet
        ]
        return sorted(found, key=lambda j: j.dispatched_at, reverse=True)[:JOB_ROWS], whole

    def job(self, job_id: str) -> job_log.JobStatus | None:
        return job_log.status(self.app.store, job_id)


def _pretty(body: str) -> str:
    """JSON indented when it is JSON (and small enough to parse), cut to BODY_CHARS."""
    shown = body
    if len(body) <= 64 * 1024:
        with contextlib.suppress(ValueError, RecursionError):
            shown = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    if len(shown) > BODY_CHARS:
        shown = (
            shown[:BODY_CHARS] + f"\n... {len(shown) - BODY_CHARS} more characters (`sqsjobs failed show ID --full`)"
        )
    return shown


def hours_of(value: str | None, default: int = 3) -> int:
    try:
        return min(MAX_HOURS, max(1, int(value or default)))
    except ValueError:
        return default


def chart_data(reader: Reader, hours: int) -> tuple[list[charts.Chart], dict[str, charts.QueueTotals]]:
    series, since, until = reader.snapshots(hours)
    return charts.charts(series, since, until), {q: charts.queue_totals(m) for q, m in series.items()}

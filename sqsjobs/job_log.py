"""The job log: a compact record per job in the table, with a TTL (SQSJOBS_JOB_LOG, off by default).

Why a table and not the queue: SQS cannot say where a job is (queued, running, done) nor find one by
id; the DLQ only knows the failed. Each job costs one PutItem at dispatch (plus one per tag), one
UpdateItem when it starts and one when it ends: turn it on for the jobs people ask about, knowing
the price (docs/job-log.md).

`cancel` marks a job cancelled before it starts; the start write is conditional on that mark, so a
cancelled job is acknowledged unrun when it is received, with no extra read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .stores.base import Store

_SK = "log"
_TAG_SK = "tag"
#: Tags per job and their length: a tag is a search key (`customer:42`), not a document.
MAX_TAGS = 10
MAX_TAG_CHARS = 128
_TAG = re.compile(r"^[\w.:@/#=+-]{1,128}$")
#: Outcomes a job ends with, and its states before that.
ENDED = ("processed", "failed", "discarded", "cancelled")


def log_key(job_id: str) -> tuple[str, str]:
    return (f"job#{job_id}", _SK)


def tag_key(tag: str, dispatched_at: str, job_id: str) -> tuple[str, str]:
    return (f"jobtag#{tag}", f"{dispatched_at}#{job_id}")


def clean_tags(tags: Any) -> list[str]:
    """A job's tags as the log keeps them: strings of word characters and `.:@/#=+-`, at most MAX_TAGS.
    Anything else is an error at dispatch (a tag is a key people search by, so it must be exact)."""
    if not tags:
        return []
    if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f"job_tags() must return a list of strings, not {tags!r}")
    out = list(dict.fromkeys(tags))
    if len(out) > MAX_TAGS:
        raise ValueError(f"a job has at most {MAX_TAGS} tags; job_tags() returned {len(out)}")
    bad = [t for t in out if not _TAG.match(t)]
    if bad:
        raise ValueError(f"tags must be 1-{MAX_TAG_CHARS} characters of letters, digits and _.:@/#=+-: {bad[:3]!r}")
    return out


@dataclass
class JobStatus:
    """Where a job is, as the log knows it."""

    job_id: str
    job: str = ""
    queue: str = ""
    #: queued, running, released (waiting for its next try), processed, failed, discarded, cancelled.
    status: str = "queued"
    dispatched_at: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    error: str = ""
    tags: list[str] = field(default_factory=list)

    @classmethod
    def from_attrs(cls, job_id: str, attrs: dict[str, Any]) -> JobStatus:
        return cls(
            job_id=job_id,
            job=str(attrs.get("job", "")),
            queue=str(attrs.get("queue", "")),
            status=str(attrs.get("status", "queued")),
            dispatched_at=str(attrs.get("dispatched_at", "")),
            started_at=_seconds(attrs.get("started_ms")),
            finished_at=_seconds(attrs.get("finished_ms")),
            attempts=int(attrs.get("attempts", 0)),
            error=str(attrs.get("error", "")),
            tags=[str(t) for t in attrs.get("tags") or []],
        )

    def as_data(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "job": self.job,
            "queue": self.queue,
            "status": self.status,
            "dispatched_at": self.dispatched_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "error": self.error,
            "tags": self.tags,
        }


def _seconds(ms: Any) -> float | None:
    return int(ms) / 1000 if isinstance(ms, int) else None


def queued(store: Store, job_id: str, job: str, queue: str, dispatched_at: str, tags: list[str], ttl: float) -> None:
    attrs: dict[str, Any] = {"job": job, "queue": queue, "status": "queued", "dispatched_at": dispatched_at}
    if tags:
        attrs["tags"] = tags
    # Written after SQS took the job: a fast worker (or the sync connection) may have started it already,
    # and its record must not go back to `queued` (a cancel would then "cancel" a job that ran).
    store.add(log_key(job_id), attrs, ttl)
    for tag in tags:
        store.put(tag_key(tag, dispatched_at, job_id), {"job_id": job_id, "job": job}, ttl)


def started(
    store: Store, job_id: str, job: str, queue: str, dispatched_at: str, attempt: int, now: float, ttl: float
) -> bool:
    """The job starts (attempt `attempt`); False when it was cancelled, and must not run."""
    changes = {"status": "running", "started_ms": int(now * 1000), "attempts": attempt}
    if store.update(log_key(job_id), set=changes, unless="cancelled_ms") is not None:
        return True
    # No live item (the log was off at dispatch, or another producer sent it), or a cancelled one.
    if store.add(log_key(job_id), {"job": job, "queue": queue, "dispatched_at": dispatched_at, **changes}, ttl):
        return True
    found = store.get(log_key(job_id))
    return not (found and "cancelled_ms" in found)


def finished(store: Store, job_id: str, status: str, now: float, error: str = "") -> None:
    changes: dict[str, Any] = {"status": status, "finished_ms": int(now * 1000)}
    if error:
        changes["error"] = error[:500]
    store.update(log_key(job_id), set=changes)


def cancel(store: Store, job_id: str, now: float, ttl: float) -> str:
    """`cancelled`, or why not: `started` (it runs or ran), `ended` (it finished), `cancelled` again is fine."""
    marked = store.update(
        log_key(job_id), set={"status": "cancelled", "cancelled_ms": int(now * 1000)}, unless="started_ms"
    )
    if marked is not None:
        return "cancelled"
    if store.add(log_key(job_id), {"status": "cancelled", "cancelled_ms": int(now * 1000)}, ttl):
        return "cancelled"  # not in the log (dispatched with it off): the mark waits for its message
    found = store.get(log_key(job_id)) or {}
    if "cancelled_ms" in found:
        return "cancelled"
    return "ended" if found.get("status") in ENDED else "started"


def status(store: Store, job_id: str) -> JobStatus | None:
    found = store.get(log_key(job_id))
    return JobStatus.from_attrs(job_id, found) if found is not None else None


def by_tag(store: Store, tag: str, limit: int = 50) -> list[JobStatus]:
    """The newest `limit` jobs with this tag (live in the log), newest first: one Query of at most `limit`
    tag records, then one GetItem per record (a tag on a million jobs costs what one on fifty does)."""
    found = store.query(f"jobtag#{tag}", limit=limit, newest_first=True)
    jobs = (status(store, str(attrs.get("job_id", ""))) for _, attrs in found)
    return [job for job in jobs if job is not None]

"""`sqsjobs failed list|summary|prune` and what `retry` / `flush` share with them: the daily review, with filters.

`--job`, `--reason`, `--since`, `--older-than` (sqsjobs.failed_filters) judge each failed job on what its
DLQ copies prove; a job that matches only on unverified values is listed with `--include-unverified`
and never retried, flushed or pruned by a filter (the verbs say how many they left). `--json` prints one
JSON document of the values as data (no markup, nothing cleaned for a terminal: JSON escapes them).
`flush` and `prune` ask first (`--yes` does not); on a stdin that is no terminal they refuse (exit 2).
The verbs are registered on `failed.group` by sqsjobs.cli.failed (this module does not import it), which
holds `retry` and `flush`.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ..app import App
from ..failed_copies import CollectedFailedJob
from ..failed_filters import FailedFilter, parse_filter
from ..failed_jobs import FailedJobs
from ..failed_review import Hooks, Selection, summarize
from ..timing import utc_iso
from .common import AppOption, QueueOption, build_app, clean, console, err_console, split, text

_REASON_CHARS = 120

JobFilter = Annotated[
    str | None,
    typer.Option("--job", "-j", help="Only these jobs (registered names, comma-separated).", show_default=False),
]
ReasonFilter = Annotated[
    str | None,
    typer.Option(
        "--reason", "-r", help="Only these failure kinds, e.g. tries_exhausted,invalid_payload.", show_default=False
    ),
]
SinceFilter = Annotated[
    str | None,
    typer.Option("--since", help="Only jobs that failed since: 30m, 2h, 7d, or an ISO time.", show_default=False),
]
OlderThanFilter = Annotated[
    str | None,
    typer.Option(
        "--older-than", help="Only jobs that failed before: 30m, 2h, 7d ago, or an ISO time.", show_default=False
    ),
]
IncludeUnverified = Annotated[
    bool,
    typer.Option(
        "--include-unverified",
        help="Also show jobs that match only on values their DLQ copies do not prove (marked).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; needed when stdin is not a terminal.")]


def build_filter(
    app: App, job: str | None, reason: str | None, since: str | None, older_than: str | None
) -> FailedFilter:
    """The filter the options describe (a bad value is a usage error, exit 2)."""
    try:
        return parse_filter(
            jobs=job, reasons=reason, since=since, older_than=older_than, now=app.clock(), registry=app.registry
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


# -- list and summary ------------------------------------------------------------------------------


def _selected(
    app: str | None,
    queue: str | None,
    job: str | None,
    reason: str | None,
    since: str | None,
    older_than: str | None,
    include_unverified: bool,
) -> tuple[FailedJobs, Selection, list[CollectedFailedJob]]:
    """The failed jobs `list` and `summary` show: read once, judged by the filter on what they prove."""
    the_app = build_app(app)
    flt = build_filter(the_app, job, reason, since, older_than)
    store = FailedJobs(the_app, split(queue))
    selection = Selection(flt, store.proof, include_unverified)
    return store, selection, store.list(select=selection)


def list_(
    app: AppOption = None,
    queue: QueueOption = None,
    job: JobFilter = None,
    reason: ReasonFilter = None,
    since: SinceFilter = None,
    older_than: OlderThanFilter = None,
    include_unverified: IncludeUnverified = False,
    as_json: JsonOption = False,
) -> None:
    """List failed jobs, one row per job id: id, job, queue, when, why, DLQ copies."""
    store, selection, jobs = _selected(app, queue, job, reason, since, older_than, include_unverified)
    if as_json:
        _print_json(
            {
                "jobs": [_job_data(j, selection) for j in jobs],
                "count": len(jobs),
                "left_unverified": selection.left,
                "incomplete": store.incomplete,
            }
        )
    elif not jobs:
        console.print("No failed jobs match." if selection.filter.active else "No failed jobs.")
    else:
        console.print(_table(jobs, selection))
        if any(selection.unverified(j) for j in jobs):
            console.print(
                Text(
                    "(unverified): a value from the message's sqsjobs.* attributes or body that does not check out "
                    "(see `sqsjobs failed show ID`)",
                    style="dim",
                )
            )
    left_note(selection, "listed")
    incomplete(store)


def _table(jobs: list[CollectedFailedJob], selection: Selection) -> Table:
    table = Table(title=f"{len(jobs)} failed job(s)")
    # Ids are copied into `show` / `retry`, so they never wrap or shorten.
    table.add_column("id", no_wrap=True, min_width=36)
    for column in ("job", "queue", "failed at", "attempts", "reason"):
        table.add_column(column, overflow="fold")
    table.add_column("copies", justify="right")
    for job in jobs:
        marks = selection.unverified(job)
        table.add_row(
            field(job, "id", job.id, marks=marks),
            field(job, "job", job.job, marks=marks).append(" (encrypted)" if job.encrypted else "", style="cyan"),
            field(job, "queue", job.queue, marks=marks),
            field(job, "failed_at", job.failed_at, marks=marks),
            field(job, "attempts", str(job.attempts), marks=marks),
            field(job, "reason", reason_line(job.reason, job.error), marks=marks),
            str(job.copies),
        )
    return table


def _job_data(job: CollectedFailedJob, selection: Selection) -> dict[str, Any]:
    at = selection.when(job)
    return {
        "id": job.id,
        "job": job.job,
        "queue": job.queue,
        "failed_at": job.failed_at or None,
        "failed_at_proven": utc_iso(at) if at is not None else None,
        "attempts": job.attempts,
        "reason": job.reason,
        "error_type": job.error_type,
        "error": job.error,
        "copies": job.copies,
        "claimants": job.claimants,
        "encrypted": job.encrypted,
        "verified": job.verified,
        "vouched": job.vouched,
        "unverified": list(selection.unverified(job)),
        "matched_on_unverified": selection.matched_on_claims(job),
    }


def summary(
    app: AppOption = None,
    queue: QueueOption = None,
    job: JobFilter = None,
    reason: ReasonFilter = None,
    since: SinceFilter = None,
    older_than: OlderThanFilter = None,
    include_unverified: IncludeUnverified = False,
    as_json: JsonOption = False,
) -> None:
    """Count failed jobs by queue, job and reason, with the oldest and newest failure of each."""
    store, selection, jobs = _selected(app, queue, job, reason, since, older_than, include_unverified)
    rows = summarize(jobs, selection)
    if as_json:
        _print_json(
            {
                "groups": [row.as_data() for row in rows],
                "jobs": len(jobs),
                "copies": sum(j.copies for j in jobs),
                "left_unverified": selection.left,
                "incomplete": store.incomplete,
            }
        )
    elif not rows:
        console.print("No failed jobs match." if selection.filter.active else "No failed jobs.")
    else:
        table = Table(title=f"{len(jobs)} failed job(s) in {len(rows)} group(s)")
        for column in ("queue", "job", "reason"):
            table.add_column(column, overflow="fold")
        for column in ("jobs", "copies"):
            table.add_column(column, justify="right")
        table.add_column("oldest", no_wrap=True)
        table.add_column("newest", no_wrap=True)
        for row in rows:
            cells = [text(value) for value in (row.queue, row.job, row.reason)]
            for cell, name in zip(cells, ("queue", "job", "reason"), strict=True):
                if name in row.unverified:
                    cell.append(" (unverified)", style="yellow")
            times = [utc_iso(t) if t is not None else "-" for t in (row.oldest, row.newest)]
            table.add_row(*cells, str(row.jobs), str(row.copies), *times)
        console.print(table)
        console.print(
            Text(
                "oldest / newest: the failure times a worker vouched for, else when SQS received the copy", style="dim"
            )
        )
    left_note(selection, "counted")
    incomplete(store)


# -- retry, flush, prune ---------------------------------------------------------------------------


def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete jobs that failed before: 7d, 12h, or an ISO time.")
    ],
    app: AppOption = None,
    queue: QueueOption = None,
    job: JobFilter = None,
    reason: ReasonFilter = None,
    since: SinceFilter = None,
    yes: YesOption = False,
) -> None:
    """Delete failed jobs older than --older-than (of --queue, matching the filters); asks first unless --yes."""
    delete_selected(app, queue, job, reason, since, older_than, yes)


def delete_selected(
    app: str | None,
    queue: str | None,
    job: str | None,
    reason: str | None,
    since: str | None,
    older_than: str | None,
    yes: bool,
) -> None:
    the_app = build_app(app)
    flt = build_filter(the_app, job, reason, since, older_than)
    store = FailedJobs(the_app)
    selection = Selection(flt, store.proof)
    asked: list[bool] = []
    confirm = _confirmer(store, yes, asked)
    count = store.flush(queue, hooks=Hooks(select=selection if flt.active else None, confirm=confirm))
    if asked and not asked[0]:
        console.print("Nothing deleted.")
        raise typer.Exit(1)
    console.print(f"Deleted {count} failed job(s).")
    left_note(selection, "deleted")
    incomplete(store)


def _confirmer(store: FailedJobs, yes: bool, asked: list[bool]) -> Callable[[list[CollectedFailedJob]], bool]:
    """Asks before the chosen jobs are deleted (they stay held meanwhile). Without --yes: an incomplete read
    deletes nothing (exit 1), and a stdin that is no terminal is refused (exit 2)."""

    def confirm(jobs: list[CollectedFailedJob]) -> bool:
        if yes or not jobs:
            return True
        incomplete(store)
        queues = Counter(j.queue + (" (unverified)" if "queue" in j.unverified else "") for j in jobs)
        where = ", ".join(f"{clean(name)}: {count}" for name, count in sorted(queues.items()))
        if not _interactive():
            err_console.print(
                Text(
                    f"Not deleting {len(jobs)} failed job(s) ({where}) without confirmation: stdin is not a "
                    "terminal; add --yes to delete them."
                ),
                soft_wrap=True,
            )
            raise typer.Exit(2)
        answer = typer.confirm(f"Delete {len(jobs)} failed job(s) ({where}) for good?", default=False, err=True)
        asked.append(answer)
        return answer

    return confirm


# -- shared with sqsjobs.cli.failed ----------------------------------------------------------------


def field(
    job: CollectedFailedJob, name: str, value: str, style: str = "", marks: tuple[str, ...] | None = None
) -> Text:
    """`value` as text, marked when the message's claim for `name` did not check out (`marks`, else
    `job.unverified`)."""
    shown = text(value, style=style)
    if name in (job.unverified if marks is None else marks):
        shown.append(" (unverified)", style="yellow")
    return shown


def reason_line(reason: str, error: str) -> str:
    line = f"{reason}: {error}" if error else reason
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 3] + "..."


def incomplete(store: FailedJobs) -> None:
    """Exit 1, saying why on stderr, when the read of the DLQ may have missed jobs: a `flush` or
    `retry --all` that did not see everything must not look like one that did."""
    if store.incomplete:
        err_console.print(Text("Incomplete: the DLQ could not be read whole; run the command again.", style="bold"))
        for why in store.incomplete[:10]:
            err_console.print(Text(f"  {clean(why)}"))
        raise typer.Exit(1)


def unmatched_note(store: FailedJobs) -> None:
    for job_id, count in sorted(store.unmatched.items()):
        err_console.print(
            Text(f"Left {count} other DLQ message(s) claiming {clean(job_id)}: not copies of that job (unverified).")
        )


def left_note(selection: Selection, done: str) -> None:
    if selection.left:
        err_console.print(
            Text(
                f"Not {done}: {selection.left} job(s) that match only on values their DLQ copies do not prove, or "
                "whose copies disagree (`sqsjobs failed list --include-unverified` with the same filters shows "
                "them; act on one by its id)"
            ),
            soft_wrap=True,
        )


def copies_note(done: list[CollectedFailedJob]) -> str:
    copies = sum(j.copies for j in done)
    return f" Removed {copies} DLQ copies." if copies > len(done) else ""


def _print_json(document: dict[str, Any]) -> None:
    """One JSON document on stdout, as data: never through rich (no markup, no highlighting, no wrapping)."""
    sys.stdout.write(json.dumps(document, ensure_ascii=True, indent=2) + "\n")
    sys.stdout.flush()

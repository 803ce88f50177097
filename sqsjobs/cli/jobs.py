"""`sqsjobs jobs show|list|cancel`: the job log (SQSJOBS_JOB_LOG), by id or by tag.

What the log holds was written by workers and producers of this deployment; it is still printed as
text (never markup), like everything the CLI shows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from .. import job_log
from ..job_log import JobStatus
from .common import AppOption, build_app, console, err_console, text

group = typer.Typer(
    help="Where a job is (the job log, SQSJOBS_JOB_LOG): by id, by tag; cancel one not started yet.",
    no_args_is_help=True,
    epilog="""[bold]Examples[/]

  sqsjobs jobs show 6f1c...
  sqsjobs jobs list --tag customer:42
  sqsjobs jobs cancel 6f1c...     [dim]# acknowledged unrun when its message is received[/]
""",
)

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document, for scripts.")]
IdArgument = Annotated[str, typer.Argument(help="The job id (`Dispatched.job_id`).", show_default=False)]
EXIT_NOT_FOUND = 1


def _when(seconds: float | None) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S") if seconds else "-"


def _off_note(on: bool) -> None:
    if not on:
        err_console.print("The job log is off here (SQSJOBS_JOB_LOG): only jobs recorded while it was on are known.")


@group.command("show")
def show(job_id: IdArgument, app: AppOption = None, as_json: JsonOption = False) -> None:
    """One job: status, queue, attempts, when it was dispatched, started and finished, its last error."""
    application = build_app(app)
    found = job_log.status(application.store, job_id)
    if found is None:
        err_console.print(text(f"No job {job_id} in the job log (never recorded, or its record expired)."))
        _off_note(application.settings.job_log)
        raise typer.Exit(EXIT_NOT_FOUND)
    if as_json:
        print(json.dumps(found.as_data()))
        return
    for label, value in (
        ("job id", found.job_id),
        ("job", found.job),
        ("queue", found.queue),
        ("status", found.status),
        ("attempts", str(found.attempts)),
        ("dispatched", found.dispatched_at or "-"),
        ("started", _when(found.started_at)),
        ("finished", _when(found.finished_at)),
        ("tags", ", ".join(found.tags) or "-"),
        ("error", found.error or "-"),
    ):
        console.print(text(f"{label:>10}: {value}"))


@group.command("list")
def list_(
    tag: Annotated[str, typer.Option("--tag", "-t", help="Jobs with this tag (Job.job_tags()).")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many, newest first.")] = 50,
    app: AppOption = None,
    as_json: JsonOption = False,
) -> None:
    """The newest jobs with a tag."""
    application = build_app(app)
    found: list[JobStatus] = job_log.by_tag(application.store, tag, limit)
    if as_json:
        print(json.dumps({"jobs": [j.as_data() for j in found]}))
        return
    if not found:
        console.print(text(f"No job tagged {tag} in the job log."))
        _off_note(application.settings.job_log)
        return
    table = Table(title=f"{len(found)} job(s) tagged {tag}")
    for column in ("job id", "job", "queue", "status", "attempts", "dispatched", "finished"):
        table.add_column(column)
    for j in found:
        table.add_row(
            text(j.job_id),
            text(j.job),
            text(j.queue),
            text(j.status),
            text(str(j.attempts)),
            text(j.dispatched_at or "-"),
            text(_when(j.finished_at)),
        )
    console.print(table)


@group.command("cancel")
def cancel(job_id: IdArgument, app: AppOption = None) -> None:
    """Cancel a job that has not started: its message is acknowledged unrun when a worker receives it."""
    application = build_app(app)
    outcome = job_log.cancel(application.store, job_id, application.clock(), application.settings.job_log_ttl)
    if outcome == "cancelled":
        console.print(text(f"Cancelled {job_id}: it will be acknowledged unrun when received."))
        _off_note(application.settings.job_log)
        return
    err_console.print(text(f"Not cancelled: {job_id} has {'already finished' if outcome == 'ended' else 'started'}."))
    raise typer.Exit(EXIT_NOT_FOUND)

"""`sqsjobs failed ...`: the dead-letter queues as a failed-jobs store."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from ..failed_jobs import FailedJobs
from .common import AppOption, QueueOption, build_app, console, err_console, reported, split

group = typer.Typer(
    help="Inspect, retry and remove failed jobs (they live in each queue's DLQ).",
    no_args_is_help=True,
    epilog="""[bold]Examples[/]

  sqsjobs failed list
  sqsjobs failed show 6f1c...            [dim]# reason, traceback head, payload[/]
  sqsjobs failed retry 6f1c... 9a2b...   [dim]# back to their queues, attempts reset[/]
  sqsjobs failed retry --all --queue default
  sqsjobs failed forget 6f1c...
  sqsjobs failed flush --queue default
""",
)


@group.command("list")
def list_(app: AppOption = None, queue: QueueOption = None) -> None:
    """List failed jobs: id, job, queue, when, why."""
    with reported():
        jobs = FailedJobs(build_app(app), split(queue)).list()
    if not jobs:
        console.print("No failed jobs.")
        return
    table = Table(title=f"{len(jobs)} failed job(s)")
    # Ids are copied into `show` / `retry`, so they never wrap or shorten.
    table.add_column("id", no_wrap=True, min_width=36)
    for column in ("job", "queue", "failed at", "attempts", "reason"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        table.add_row(job.id, job.job, job.queue, job.failed_at, str(job.attempts), _reason(job.reason, job.error))
    console.print(table)


@group.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="The job id (or message id) from `failed list`.")], app: AppOption = None
) -> None:
    """Show one failed job in full: reason, traceback head and payload."""
    with reported():
        job = FailedJobs(build_app(app)).find(job_id)
    if job is None:
        err_console.print(f"No failed job {job_id}.")
        raise typer.Exit(1)
    console.print(f"[bold]{job.job}[/] {job.id}")
    console.print(f"queue {job.queue}  failed at {job.failed_at}  attempts {job.attempts}")
    console.print(f"reason [bold red]{job.reason}[/]: {job.error_type} {job.error}")
    if job.traceback:
        console.print(Panel(job.traceback.rstrip(), title="traceback (innermost frames)"))
    try:
        body = json.dumps(json.loads(job.body), indent=2)
        console.print(Syntax(body, "json", word_wrap=True))
    except ValueError:
        console.print(Panel(job.body, title="body (not JSON)"))


@group.command("retry")
def retry(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Job ids to retry.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every failed job (of --queue).")] = False,
    app: AppOption = None,
    queue: QueueOption = None,
) -> None:
    """Send failed jobs back to their queues: same job id, attempts reset."""
    if not job_ids and not all_ and not queue:
        err_console.print("Name job ids, or use --all / --queue.")
        raise typer.Exit(2)
    with reported(), console.status("retrying failed jobs..."):
        done = FailedJobs(build_app(app)).retry(job_ids or None, queue=queue)
    console.print(f"Retried {len(done)} job(s).")
    missing = set(job_ids or []) - {job.id for job in done}
    if missing:
        err_console.print(f"Not found: {', '.join(sorted(missing))}")
        raise typer.Exit(1)


@group.command("forget")
def forget(job_id: Annotated[str, typer.Argument(help="The job id to delete.")], app: AppOption = None) -> None:
    """Delete one failed job for good."""
    with reported():
        found = FailedJobs(build_app(app)).forget(job_id)
    if not found:
        err_console.print(f"No failed job {job_id}.")
        raise typer.Exit(1)
    console.print(f"Forgot {job_id}.")


@group.command("flush")
def flush(app: AppOption = None, queue: QueueOption = None) -> None:
    """Delete every failed job (of --queue)."""
    with reported():
        count = FailedJobs(build_app(app)).flush(queue)
    console.print(f"Deleted {count} failed job(s).")


def _reason(reason: str, error: str) -> str:
    text = f"{reason}: {error}" if error else reason
    return text if len(text) <= 120 else text[:117] + "..."

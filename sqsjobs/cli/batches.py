"""`sqsjobs batches ...`: the batch records `batch([...]).dispatch()` writes to the DynamoDB table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from botocore.exceptions import ClientError
from rich.table import Table
from rich.text import Text

from ..app import App
from ..batches import BATCH_TTL_S, Batch, find_batch, list_batches, prune_batches
from ..errors import ConfigurationError
from ..stores.memory import MemoryStore
from .common import AppOption, build_app, clean, console, err_console, text

group = typer.Typer(
    help="Inspect batches (progress, counts, failed job ids) and prune old batch records.",
    no_args_is_help=True,
    epilog="""[bold]Examples[/]

  sqsjobs batches list
  sqsjobs batches show 3d0e...                       [dim]# counts, times, failed job ids[/]
  sqsjobs batches prune                              [dim]# finished/cancelled over 24 hours ago[/]
  sqsjobs batches prune --hours 48 --unfinished-hours 168
""",
)

_STATE_STYLE = {"finished": "green", "cancelled": "yellow", "running": "cyan"}


@group.command("list")
def list_(app: AppOption = None) -> None:
    """List batches, newest first: progress, counts and state."""
    with _store(app) as application:
        batches = list_batches(application)
    if not batches:
        console.print("No batches.")
        return
    table = Table(title=f"{len(batches)} batch(es)")
    # Ids are copied into `show`, so they never wrap or shorten.
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("name", overflow="fold")
    for column in ("progress", "total", "processed", "failed", "pending"):
        table.add_column(column, justify="right")
    table.add_column("state")
    table.add_column("created at", no_wrap=True)
    for found in batches:
        table.add_row(
            text(found.id),
            text(found.name),
            f"{found.progress}%",
            str(found.total),
            str(found.processed),
            str(found.failed),
            str(found.pending),
            _styled_state(found),
            text(found.created_at),
        )
    console.print(table)


@group.command("show")
def show(
    batch_id: Annotated[str, typer.Argument(help="The batch id from `batches list`.")], app: AppOption = None
) -> None:
    """Show one batch in full: counts, times, options and the ids of its failed jobs."""
    with _store(app) as application:
        found = find_batch(batch_id, application)
        failed_ids = found.failed_job_ids() if found is not None else []
    if found is None:
        err_console.print(Text(f"No batch {clean(batch_id)} (never created, pruned, or expired)."))
        raise typer.Exit(1)
    console.print(Text.assemble(text(found.name or "(no name)", style="bold"), " ", text(found.id)), soft_wrap=True)
    details = Table.grid(padding=(0, 2))
    details.add_column(style="dim")
    details.add_column()
    details.add_row("state", _styled_state(found))
    details.add_row("progress", f"{found.progress}%")
    details.add_row(
        "jobs", f"{found.total} total, {found.processed} processed, {found.failed} failed, {found.pending} pending"
    )
    details.add_row("created at", text(found.created_at))
    details.add_row("finished at", text(found.finished_at or "-"))
    details.add_row("cancelled at", text(found.cancelled_at or "-"))
    details.add_row("allow failures", "yes" if found.allow_failures else "no")
    details.add_row("queue", text(found.queue or "(each job's own)"))
    console.print(details)
    if not failed_ids:
        console.print("No failed jobs.")
        return
    console.print(f"[bold red]{len(failed_ids)} failed job(s)[/] [dim](see `sqsjobs failed show ID`)[/]")
    for job_id in failed_ids:
        console.print(Text("  " + clean(job_id)), soft_wrap=True, highlight=False)


@group.command(
    "prune",
    help="Delete old batch records and their job outcomes "
    f"(unpruned records expire {BATCH_TTL_S // 86400} days after they were created).",
)
def prune(
    hours: Annotated[
        float, typer.Option(min=0, help="Prune batches finished or cancelled more than this many hours ago.")
    ] = 24,
    unfinished_hours: Annotated[
        float | None,
        typer.Option(
            min=0, help="Also prune unfinished batches created more than this many hours ago.", show_default=False
        ),
    ] = None,
    app: AppOption = None,
) -> None:
    with _store(app) as application:
        count = prune_batches(application, finished_hours=hours, unfinished_hours=unfinished_hours)
    console.print(f"Pruned {count} batch(es).")


@contextmanager
def _store(app_module: str | None) -> Iterator[App]:
    """The App whose store holds the batches; a missing table is a setup step, not a crash."""
    application = build_app(app_module)
    # A memory store belongs to this process alone: every batch would look absent.
    if isinstance(application.store, MemoryStore):
        raise ConfigurationError(
            "batches live in the DynamoDB table (SQSJOBS_TABLE), but these settings give an in-memory "
            "store (SQSJOBS_CONNECTION / SQSJOBS_STORE); use the sqs connection or SQSJOBS_STORE=dynamodb"
        )
    try:
        yield application
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        raise ConfigurationError(
            f"table {application.settings.table!r} not found; check SQSJOBS_TABLE and the AWS region, "
            "or create it with `sqsjobs provision`"
        ) from exc


def _state(found: Batch) -> str:
    # A failure cancels a batch (unless it allows failures) and it still finishes later;
    # "cancelled" is the more telling of the two, and `pending` says whether jobs remain.
    if found.cancelled:
        return "cancelled"
    return "finished" if found.finished else "running"


def _styled_state(found: Batch) -> str:
    state = _state(found)
    return f"[{_STATE_STYLE[state]}]{state}[/]"

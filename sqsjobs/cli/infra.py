"""`sqsjobs local`, `provision` and `check`: the AWS resources sqsjobs needs."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Annotated

import typer
from rich.table import Table

from ..provisioning import check as check_queues
from ..provisioning import known_queues
from ..provisioning import provision as provision_all
from .common import AppOption, QueueOption, build_app, console, split, text

LOCAL_EXAMPLES = """[bold]Examples[/]

  sqsjobs local --port 4566 -a myapp.jobs     [dim]# then paste the export lines in another shell[/]
"""
PROVISION_EXAMPLES = """[bold]Examples[/]

  sqsjobs provision -a myapp.jobs                 [dim]# the queues of the settings and of your jobs[/]
  AWS_ENDPOINT_URL=http://127.0.0.1:4566 sqsjobs provision --queue high,default
"""
CHECK_EXAMPLES = """[bold]Examples[/]

  sqsjobs check -a myapp.jobs      [dim]# exit 1 when any queue has an error[/]
  sqsjobs check --queue reports    [dim]# one queue, and the Lambda functions that consume it[/]
"""


def local(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 4566,
    app: AppOption = None,
    queue: QueueOption = None,
    provision: Annotated[bool, typer.Option(help="Create queues, DLQs, table and bucket.")] = True,
) -> None:
    """Start a local AWS (moto) on 127.0.0.1 and print the exports that point at it."""
    from ..local import LocalAws

    application = build_app(app, needs_aws=False)  # settings and jobs first: a mistake there starts nothing
    server = LocalAws(port=port).start()
    server.export()
    if provision:
        provision_all(application, known_queues(application, split(queue)), report=_report)
    console.print(f"\n[bold]Local AWS is running[/] (pid {os.getpid()}). In another shell:\n")
    for key, value in server.env.items():
        console.print(text(f"export {key}={value}"), highlight=False, soft_wrap=True)
    console.print(
        f"\nCtrl-C stops it, or `kill {os.getpid()}` (`kill %1` if you started it with `&` in this shell). "
        "Its data is kept in memory only."
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    server.stop()


def provision(app: AppOption = None, queue: QueueOption = None) -> None:
    """Create or update queues (each with a DLQ and redrive policy), the table and the bucket."""
    application = build_app(app)
    provision_all(application, known_queues(application, split(queue)), report=_report)


def check(app: AppOption = None, queue: QueueOption = None) -> None:
    """Compare settings and job classes with the real queues and the Lambda functions that consume them
    (through the queues' event source mappings); print each problem and its fix."""
    application = build_app(app)
    problems = check_queues(application, known_queues(application, split(queue)), report=_report)
    if not problems:
        console.print("[green]All queues fit the settings and jobs.[/]")
        return
    table = Table(title="sqsjobs check")
    for column in ("queue", "severity", "problem", "change"):
        table.add_column(column, overflow="fold")
    for p in problems:
        colour = "red" if p.severity == "error" else "yellow"
        table.add_row(text(p.queue), text(p.severity, style=colour), text(p.problem), text(p.fix))
    console.print(table)
    if any(p.severity == "error" for p in problems):
        raise typer.Exit(1)


def _report(line: str) -> None:
    """Progress lines of `provision` (names from settings, never markup)."""
    console.print(text(line), highlight=False, soft_wrap=True)

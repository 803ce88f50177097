"""What every verb shares: building the App from options and reporting errors plainly."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from .. import logs
from ..app import App, use
from ..errors import SqsJobsError

# Piped output (CI logs, `| grep`) gets wide tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

AppOption = Annotated[
    str | None,
    typer.Option(
        "--app", "-a", help="Module that defines your jobs, e.g. myapp.jobs (SQSJOBS_APP).", show_default=False
    ),
]
QueueOption = Annotated[
    str | None,
    typer.Option("--queue", "-q", help="Queue name(s), comma-separated, highest priority first.", show_default=False),
]


def build_app(app_module: str | None, **overrides: Any) -> App:
    """The App for this command, with the user's jobs imported (from the current directory too)."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if app_module:
        overrides["app"] = app_module
    app = App(**{k: v for k, v in overrides.items() if v is not None})
    logs.configure(app.settings.log_format, app.settings.log_level)
    app.load_jobs()
    use(app)
    return app


def split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


@contextmanager
def reported() -> Iterator[None]:
    """Turn our errors into one red line and exit code 2, instead of a traceback."""
    try:
        yield
    except SqsJobsError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None

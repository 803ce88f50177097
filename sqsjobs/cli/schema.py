"""`sqsjobs schema dump|check`: commit the jobs' payload contracts, and catch a deploy that breaks queued messages.

Both read only the job classes (no AWS call): they run in CI before a deploy, where there are no
credentials. `check` exits 1 on a breaking change, as `sqsjobs check` does on an error.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ..schema_compat import Change, compare
from ..schemas import DEFAULT_FILE, load, snapshot, write
from .common import AppOption, build_app, console, text

group = typer.Typer(
    help="Job payload schemas: write them to a committed file, and check a change against it before a deploy.",
    no_args_is_help=True,
    epilog=f"""[bold]Examples[/]

  sqsjobs schema dump -a myapp.jobs                  [dim]# writes {DEFAULT_FILE}; commit it[/]
  sqsjobs schema check -a myapp.jobs                 [dim]# exit 1 when queued messages would break[/]
  sqsjobs schema check -a myapp.jobs --json          [dim]# for CI[/]
""",
)


@group.command("dump")
def dump(
    app: AppOption = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write the snapshot.")] = DEFAULT_FILE,
) -> None:
    """Write every registered job's name, aliases and payload JSON Schema to a file, sorted (diffs stay clean)."""
    application = build_app(app, needs_aws=False)
    data = snapshot(application.registry)
    changed = write(output, data)
    jobs = len(data["jobs"])
    state = "written" if changed else "unchanged"
    console.print(text(f"{output}: {jobs} job(s), {state}."), highlight=False)


@group.command("check")
def check(
    app: AppOption = None,
    against: Annotated[str, typer.Option("--against", help="The committed snapshot to compare with.")] = DEFAULT_FILE,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document, for CI.")] = False,
) -> None:
    """Compare today's jobs with the snapshot: fail on changes that break queued messages, with each fix.

    Safe changes (a new job, a new optional field, a widened type) are listed as info."""
    application = build_app(app, needs_aws=False)
    committed = load(against)
    changes = compare(committed, snapshot(application.registry))
    breaking = [c for c in changes if c.breaking]
    if as_json:
        print(
            json.dumps(
                {
                    "ok": not breaking,
                    "against": against,
                    "breaking": [c.to_dict() for c in breaking],
                    "safe": [c.to_dict() for c in changes if not c.breaking],
                }
            )
        )
    else:
        _print(changes, against)
    if breaking:
        raise typer.Exit(1)


def _print(changes: list[Change], against: str) -> None:
    if not changes:
        console.print(text(f"No change from {against}."), highlight=False)
        return
    table = Table(title=f"sqsjobs schema check against {against}")
    for column in ("job", "where", "change", "detail", "make it safe"):
        table.add_column(column, overflow="fold")
    for c in changes:
        kind = text(c.kind, style="red" if c.breaking else "green")
        table.add_row(text(c.job), text(c.where), kind, text(c.detail), text(c.fix or "safe"))
    console.print(table)
    breaking = sum(c.breaking for c in changes)
    if breaking:
        console.print(
            text(
                f"{breaking} breaking change(s): messages queued before this deploy (or waiting in a DLQ) would "
                "fail as invalid_payload or unknown_job. Make them safe as shown, or, once nothing old can be "
                f"queued, run `sqsjobs schema dump --output {against}`.",
                style="red",
            ),
            highlight=False,
        )
    else:
        console.print(text(f"Compatible with {against}: {len(changes)} safe change(s).", style="green"))

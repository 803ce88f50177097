"""`sqsjobs monitor`: how full each queue is, as a table, a live table or JSON; exit 1 when one is too full.

The numbers and the thresholds live in `sqsjobs.queue_monitor`; this module only shows them. A
breach is announced once through the app's event bus (`queue_busy`), so what happens next -- a
page, a Slack message, scaling -- is the user's listener, not a flag here.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..provisioning import known_queues
from ..queue_monitor import Limits, Monitor, QueueRow, Report, parse_limits, unmonitored
from .common import AppOption, build_app, console, err_console, split, text

EXAMPLES = """[bold]Examples[/]

  sqsjobs monitor -a myapp.jobs                       [dim]# every queue the app knows, once[/]
  sqsjobs monitor --queue high,default --watch        [dim]# refresh every 5 s until Ctrl-C[/]
  sqsjobs monitor --watch --interval 30
  sqsjobs monitor --max-depth 1000 --max-age 600      [dim]# exit 1 and emit queue_busy when over[/]
  sqsjobs monitor --max-depth default=100,high=10     [dim]# per queue (or repeat the option)[/]
  sqsjobs monitor --json | jq '.queues[] | {queue, depth}'
"""

#: CloudWatch's age is a 1-minute metric billed per query: a watch re-reads it once a minute.
AGE_EVERY_S = 60.0
INTERVAL_S = 5.0
EXIT_BUSY = 1
EXIT_MISSING = 2

QueuesOption = Annotated[
    str | None,
    typer.Option(
        "--queue",
        "-q",
        help="Queue name(s), comma-separated (default: every queue of the settings and the jobs).",
        show_default=False,
    ),
]
MaxDepthOption = Annotated[
    list[str] | None,
    typer.Option(
        "--max-depth",
        metavar="N|QUEUE=N",
        help="Busy when more than N messages wait (visible); QUEUE=N for one queue, comma lists, repeatable.",
        show_default=False,
    ),
]
MaxAgeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--max-age",
        metavar="S|QUEUE=S",
        help="Busy when the oldest message is older than S seconds (CloudWatch); same forms as --max-depth.",
        show_default=False,
    ),
]
# Typer has no option with an optional value (`--watch [SECONDS]`): the interval is its own option.
IntervalOption = Annotated[
    float | None,
    typer.Option(
        "--interval",
        min=1,
        metavar="SECONDS",
        help="Seconds between --watch refreshes (default 5).",
        show_default=False,
    ),
]


def monitor(
    app: AppOption = None,
    queue: QueuesOption = None,
    max_depth: MaxDepthOption = None,
    max_age: MaxAgeOption = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh a live table until Ctrl-C.")] = False,
    interval: IntervalOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per refresh) for scripts.")] = False,
    refreshes: Annotated[int | None, typer.Option(hidden=True, min=1, help="Stop --watch after N refreshes.")] = None,
) -> None:
    """Show each queue's depth, in-flight, delayed, oldest-message age and DLQ depth (docs/monitoring.md).

    Exit 1 when a queue is over a threshold (and emit `queue_busy`), 2 when a queue does not exist."""
    if not watch and interval is not None:
        raise typer.BadParameter("only applies with --watch", param_hint="--interval")
    depth_limits = _limits(max_depth, "--max-depth")
    age_limits = _limits(max_age, "--max-age")
    application = build_app(app)
    queues = list(dict.fromkeys(split(queue) or known_queues(application)))
    for option, limits in (("--max-depth", depth_limits), ("--max-age", age_limits)):
        if names := unmonitored(limits, queues):
            raise typer.BadParameter(
                f"names {', '.join(map(repr, names))}, not monitored here (queues: {', '.join(queues)})",
                param_hint=option,
            )
    checker = Monitor(application, queues, depth_limits, age_limits, age_every=AGE_EVERY_S if watch else 0)
    if not watch:
        report = checker.check()
        (_print_json if as_json else _print_table)(report)
        raise typer.Exit(status(report))
    raise typer.Exit(_watch(checker, interval or INTERVAL_S, refreshes, as_json))


def _limits(values: list[str] | None, option: str) -> Limits:
    try:
        return parse_limits(values or [], option)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def status(report: Report) -> int:
    """A missing queue is the setup's problem (2: restarting will not help); a busy one is the answer (1)."""
    if report.missing:
        return EXIT_MISSING
    return EXIT_BUSY if report.busy else 0


# -- watching ---------------------------------------------------------------------------------


def _watch(checker: Monitor, interval: float, refreshes: int | None, as_json: bool) -> int:
    if as_json:
        return watch_loop(checker.check, _print_json, interval, refreshes)
    with Live(console=console, auto_refresh=False) as live:
        return watch_loop(checker.check, lambda report: live.update(render(report), refresh=True), interval, refreshes)


def watch_loop(
    check: Callable[[], Report],
    show: Callable[[Report], None],
    interval: float,
    refreshes: int | None = None,
    wait: Callable[[float], None] = time.sleep,
) -> int:
    """Check and show until Ctrl-C (or `refreshes` checks); the exit status is the last check's."""
    last = 0
    done = 0
    try:
        while refreshes is None or done < refreshes:
            if done:
                wait(interval)
            report = check()
            show(report)
            last, done = status(report), done + 1
    except KeyboardInterrupt:
        pass
    return last


# -- showing ----------------------------------------------------------------------------------


def _print_json(report: Report) -> None:
    """One line of JSON on stdout (nothing else goes there); what went wrong also goes to stderr."""
    sys.stdout.write(json.dumps(report.as_dict()) + "\n")
    sys.stdout.flush()
    for line in problems(report):
        err_console.print(line, soft_wrap=True)


def _print_table(report: Report) -> None:
    console.print(render(report, errors=False))
    for line in problems(report, notes=False):
        err_console.print(line, soft_wrap=True)


def render(report: Report, *, errors: bool = True) -> RenderableType:
    """The table and, under it, a line per busy or missing queue (the same view once or live)."""
    table = Table(title=f"sqsjobs monitor · {report.checked_at:%Y-%m-%d %H:%M:%S}Z")
    table.add_column("queue", overflow="fold")
    for column in ("depth", "in flight", "delayed", "oldest", "DLQ"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for row in report.rows:
        table.add_row(*_cells(row))
    return Group(table, *problems(report, errors=errors))


def _cells(row: QueueRow) -> list[Text]:
    if not row.exists:
        return [text(row.queue), *(text("-", style="dim") for _ in range(5)), text("missing", style="bold red")]
    return [
        text(row.queue),
        text(row.depth, style="bold red" if "depth" in row.over else ""),
        text(row.in_flight),
        text(row.delayed),
        text(age(row.age_s), style="bold red" if "age" in row.over else "" if row.age_s is not None else "dim"),
        text("no DLQ", style="yellow") if row.dlq_depth is None else text(row.dlq_depth, style=_dlq_style(row)),
        text("busy", style="bold red") if row.busy else text("ok", style="green"),
    ]


def _dlq_style(row: QueueRow) -> str:
    return "yellow" if row.dlq_depth else ""


def problems(report: Report, *, errors: bool = True, notes: bool = True) -> list[Text]:
    """What needs someone: missing queues (`errors`); busy queues (which threshold), missing DLQs and
    unknown ages (`notes`)."""
    lines = []
    for row in report.rows:
        if not row.exists:
            if errors:
                lines.append(Text.assemble(("error: ", "bold red"), text(row.error, style="red")))
            continue
        if not notes:
            continue
        if "depth" in row.over:
            lines.append(text(f"queue {row.queue}: depth {row.depth} is over --max-depth {row.max_depth}", style="red"))
        if "age" in row.over:
            lines.append(
                text(
                    f"queue {row.queue}: oldest message {age(row.age_s)} is over --max-age {row.max_age_s}s",
                    style="red",
                )
            )
        if row.max_age_s is not None and row.age_s is None:
            lines.append(text(f"queue {row.queue}: oldest message age unknown, --max-age not checked", style="yellow"))
        if row.dlq_note:
            lines.append(text(f"queue {row.queue}: no DLQ ({row.dlq_note})", style="yellow"))
    if report.age_note and notes:
        lines.append(text(f"oldest unknown: {report.age_note}", style="dim"))
    return lines


def age(seconds: float | None) -> str:
    """412 -> "6m52s"; None -> "unknown" (never 0: an unknown age is not a young one)."""
    if seconds is None:
        return "unknown"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"

"""`sqsjobs schedule list|run|test`: the schedules SQSJOBS_APP declares, run them, try one now.

Only the runner decides ticks (sqsjobs.scheduling); these verbs read its records or call it. What the
records say was written by this deployment's runners and workers, and is still printed as text.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from ..errors import ConfigurationError
from ..scheduling import Scheduler, schedule_states
from .common import AppOption, build_app, console, text

group = typer.Typer(
    help="Schedules declared in code (sqsjobs.schedule): list them, run them, dispatch one now.",
    no_args_is_help=True,
    epilog="""[bold]Examples[/]

  sqsjobs schedule list -a myapp.jobs
  sqsjobs schedule run -a myapp.jobs            [dim]# a pass every minute; any number of runners agree[/]
  sqsjobs schedule run --once -a myapp.jobs     [dim]# one pass (cron, a CI job)[/]
  sqsjobs schedule test daily-report            [dim]# dispatch its job now (not a tick)[/]
""",
)

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document, for scripts.")]


def _at(ms: Any, tz: str) -> str:
    if not isinstance(ms, int | float) or not ms:
        return "-"
    return datetime.fromtimestamp(float(ms) / 1000, UTC).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


@group.command("list")
def list_schedules(app: AppOption = None, as_json: JsonOption = False) -> None:
    """Every schedule: when it runs, its next tick (in its zone), its last run and how it ended, ticks missed."""
    application = build_app(app)
    rows = schedule_states(application)
    if as_json:
        print(json.dumps({"schedules": rows}, default=str))
        return
    if not rows:
        console.print(
            "No schedules. Declare them with sqsjobs.schedule(...) in the SQSJOBS_APP module (docs/scheduler.md)."
        )
        return
    table = Table(title=f"{len(rows)} schedule(s)")
    for column in ("schedule", "job", "when", "next", "last tick", "last run", "missed"):
        table.add_column(column)
    for row in rows:
        last = row["state"]
        if row["outcome"]:
            last = f"{row['outcome']} in {row['duration_ms'] / 1000:.1f}s" if row["duration_ms"] else row["outcome"]
        missed = str(row["missed"]) + (f" (last {_at(row['last_missed_ms'], row['tz'])})" if row["missed"] else "")
        table.add_row(
            text(row["name"]),
            text(row["job"]),
            text(row["when"]),
            text(_at(row["next_ms"], row["tz"])),
            text(_at(row["last_tick_ms"], row["tz"])),
            text(last),
            text(missed),
        )
    console.print(table)


@group.command("run")
def run(
    app: AppOption = None,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
) -> None:
    """Dispatch due ticks: a pass a second after every minute until stopped (SIGTERM/SIGINT). Run as many as
    you like: each tick is dispatched once across all of them (and the schedule Lambda)."""
    application = build_app(app)
    if not len(application.schedules):
        raise ConfigurationError("no schedules are declared: is SQSJOBS_APP (--app) the module that declares them?")
    scheduler = Scheduler(application, owner=f"{socket.gethostname()}:{os.getpid()}")
    metrics = application.start_metrics()  # `schedule_missed` (SQSJOBS_METRICS), flushed after each pass
    if once:
        outcomes = scheduler.run_due(log_failures=False)
        if not outcomes:
            console.print("Nothing was due.")
        failed = [o.error for o in outcomes if o.error is not None]
        # The first failure is the error line below; any other is printed with the outcomes.
        _print([o for o in outcomes if not failed or o.error is not failed[0]])
        if metrics is not None:
            metrics.flush()
        if failed:
            raise failed[0]  # a cron job or CI step running `--once` must see the pass fail
        return
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    console.print(text(f"Running {len(application.schedules)} schedule(s); Ctrl-C to stop."))
    scheduler.run_forever(stop, flush_metrics=True)


@group.command("test")
def test(
    name: Annotated[str, typer.Argument(help="The schedule's name.", show_default=False)], app: AppOption = None
) -> None:
    """Dispatch NAME's job now, to see it run. It is not a tick: the schedule's record does not change."""
    application = build_app(app)
    job_id = Scheduler(application).dispatch_now(name)
    console.print(text(f"Dispatched {application.schedules.get(name).job_name} for schedule {name}: job {job_id}"))


def _print(outcomes: list[Any]) -> None:
    for outcome in outcomes:
        detail = f" ({outcome.detail})" if outcome.detail else ""
        console.print(text(f"{outcome.schedule} {outcome.tick:%Y-%m-%d %H:%M}Z {outcome.what}{detail}"))

"""`sqsjobs workers`, `restart`, `pause QUEUE`, `continue QUEUE`: see the pollers and steer them.

Pollers beat into the table and read `restart` / `pause` every SQSJOBS_WORKER_BEAT seconds
(sqsjobs.workers, sqsjobs.worker.reporting); a queue consumed by Lambda is paused through its event
source mappings (sqsjobs.pausing). Everything shown here was written by workers of this deployment,
and is still printed as text (never markup), like everything else the CLI shows.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from typing import Annotated

import typer
from rich.table import Table

from .. import pausing, workers
from ..errors import ConfigurationError
from .common import AppOption, build_app, console, err_console, split, text

WORKERS_EXAMPLES = """[bold]Examples[/]

  sqsjobs workers -a myapp.jobs
  sqsjobs workers --json
"""
RESTART_EXAMPLES = """[bold]Examples[/]

  sqsjobs restart -a myapp.jobs   [dim]# after a deploy: every poller finishes its jobs and exits 0[/]
"""
PAUSE_EXAMPLES = """[bold]Examples[/]

  sqsjobs pause emails             [dim]# pollers take nothing more; its Lambda mappings are disabled[/]
  sqsjobs continue emails
"""

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document, for scripts.")]
QueuesArgument = Annotated[str, typer.Argument(help="Queue name(s), comma-separated.", show_default=False)]


def _who() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "?"
    return f"{user}@{socket.gethostname()}"


def list_workers(app: AppOption = None, as_json: JsonOption = False) -> None:
    """The pollers alive now (their beat has not expired): host, pid, queues, jobs done, running jobs."""
    application = build_app(app)
    found = workers.list_workers(application.store)
    paused = workers.paused_queues(application.store)
    now = application.clock()
    if as_json:
        print(
            json.dumps(
                {
                    "workers": [
                        {**w.to_attrs(), "worker_id": w.worker_id, "started_at": w.started_at, "last_seen": w.last_seen}
                        for w in found
                    ],
                    "paused": sorted(paused),
                }
            )
        )
        return
    if not found:
        console.print("No live workers.")
    else:
        table = Table(title=f"{len(found)} worker(s)")
        for column in ("worker", "queues", "status", "version", "started", "last seen", "jobs done", "running"):
            table.add_column(column)
        for w in found:
            table.add_row(
                text(w.worker_id),
                text(",".join(w.queues)),
                text(w.status + (f" ({','.join(w.paused)} paused)" if w.paused else "")),
                text(w.version),
                text(workers.ago(now - w.started_at)),
                text(workers.ago(now - w.last_seen)),
                text(str(w.jobs_done)),
                text(", ".join(w.current) or "-"),
            )
        console.print(table)
    if paused:
        console.print(text(f"Paused queues: {', '.join(sorted(paused))} (sqsjobs continue QUEUE)"))


def restart(app: AppOption = None) -> None:
    """Every poller finishes its running jobs and exits 0 on its next beat, for its supervisor to restart it."""
    application = build_app(app)
    beat = application.settings.worker_beat
    workers.request_restart(application.store, time.time(), _who())
    alive = len(workers.list_workers(application.store))
    console.print(
        f"Restart requested: {alive} live worker(s) finish their running jobs and exit within "
        f"{beat:g}s (SQSJOBS_WORKER_BEAT). Their supervisor (ECS, systemd) starts them again."
    )


def pause(queue: QueuesArgument, app: AppOption = None) -> None:
    """Stop taking jobs from QUEUE: pollers on their next beat (running jobs finish); Lambda mappings disabled now."""
    application = build_app(app)
    for name in _queues(queue):
        result = pausing.pause(application, name, _who())
        mapped = f"; Lambda event source mapping(s) disabled: {', '.join(result.mappings)}" if result.mappings else ""
        console.print(
            text(f"Paused {name}: pollers stop taking its jobs within {application.settings.worker_beat:g}s{mapped}.")
        )
        for why in result.skipped:
            err_console.print(text(f"Lambda event source mapping left as it was: {why}"))


def continue_(queue: QueuesArgument, app: AppOption = None) -> None:
    """Take jobs from QUEUE again (and enable the Lambda mappings `pause` disabled)."""
    application = build_app(app)
    for name in _queues(queue):
        result = pausing.resume(application, name)
        if not result.changed:
            console.print(text(f"{name} was not paused."))
            continue
        mapped = f"; Lambda event source mapping(s) enabled: {', '.join(result.mappings)}" if result.mappings else ""
        console.print(text(f"Continued {name}{mapped}."))


def _queues(value: str) -> list[str]:
    names = split(value)
    if not names:
        raise ConfigurationError("name at least one queue, e.g. `sqsjobs pause emails`")
    return names

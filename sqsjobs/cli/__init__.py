"""`sqsjobs`: the command line. One small module per verb group.

Every verb runs inside `common.reported()`: expected failures (configuration, AWS not
reachable, no credentials) print one line and exit with a documented code (docs/cli.md).
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import batches, dashboard, failed, infra, jobs, keys, monitor, schedule, schema, work, workers
from .common import guard_all, set_debug

cli = typer.Typer(
    name="sqsjobs",
    help="Background jobs on Amazon SQS: run workers, inspect and retry failed jobs, provision queues.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
    epilog="Exit codes: 0 done, 1 not found / `check` found errors / `schema check` a breaking change / "
    "`work`: a job could not be interrupted, "
    "2 usage or configuration, 3 AWS unreachable or no credentials/region, 12 `work --memory` limit. "
    "See docs/cli.md.",
)


@cli.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="SQSJOBS_DEBUG", help="Show the traceback behind an error (SQSJOBS_DEBUG=1)."),
    ] = False,
) -> None:
    set_debug(debug)


cli.command("work", epilog=work.EXAMPLES)(work.work)
cli.add_typer(failed.group, name="failed")
cli.add_typer(batches.group, name="batches")
cli.add_typer(jobs.group, name="jobs")
cli.add_typer(keys.group, name="keys")
cli.add_typer(schedule.group, name="schedule")
cli.add_typer(schema.group, name="schema")
cli.command("local", epilog=infra.LOCAL_EXAMPLES)(infra.local)
cli.command("provision", epilog=infra.PROVISION_EXAMPLES)(infra.provision)
cli.command("check", epilog=infra.CHECK_EXAMPLES)(infra.check)
cli.command("monitor", epilog=monitor.EXAMPLES)(monitor.monitor)
cli.command("workers", epilog=workers.WORKERS_EXAMPLES)(workers.list_workers)
cli.command("restart", epilog=workers.RESTART_EXAMPLES)(workers.restart)
cli.command("pause", epilog=workers.PAUSE_EXAMPLES)(workers.pause)
cli.command("continue", epilog=workers.PAUSE_EXAMPLES)(workers.continue_)
cli.command("dashboard", epilog=dashboard.EXAMPLES)(dashboard.dashboard)
guard_all(cli)


def main() -> None:
    cli(prog_name="sqsjobs")

"""`sqsjobs`: the command line. One small module per verb group."""

from __future__ import annotations

import typer

from . import batches, failed, infra, work

cli = typer.Typer(
    name="sqsjobs",
    help="Background jobs on Amazon SQS: run workers, inspect and retry failed jobs, provision queues.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)
cli.command("work", epilog=work.EXAMPLES)(work.work)
cli.add_typer(failed.group, name="failed")
cli.add_typer(batches.group, name="batches")
cli.command("local", epilog=infra.LOCAL_EXAMPLES)(infra.local)
cli.command("provision", epilog=infra.PROVISION_EXAMPLES)(infra.provision)
cli.command("check", epilog=infra.CHECK_EXAMPLES)(infra.check)


def main() -> None:
    cli()

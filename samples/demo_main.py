"""The one `main()` the samples share: local AWS (embedded moto), provision, run, show, and exit 0 only
when the outcome is what the sample's README promises (`--json` prints the facts for the tests)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from rich.console import Console

import sqsjobs
from sqsjobs import App
from sqsjobs.local import LocalAws
from sqsjobs.logs import configure as configure_logs
from sqsjobs.provisioning import provision

Facts = dict[str, Any]


def demo_main(
    prog: str,
    description: str | None,
    queue_prefix: str,
    run: Callable[[App, Console], Facts],
    show: Callable[[Facts, Console], None],
    ok: Callable[[Facts], bool],
    argv: list[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--json", action="store_true", help="print the facts as JSON on stdout (for tests)")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json, width=max(120, Console().width))
    configure_logs("text", "WARNING")
    with LocalAws() as local:
        local.export()
        console.print(f"[bold]1.[/] local AWS (moto) on {local.endpoint}")
        app = App(connection="sqs", queue_prefix=queue_prefix, queues=["default"])
        provision(app, ["default"], report=lambda line: console.print(f"   {line}"))
        sqsjobs.use(app)
        facts = run(app, console)
    show(facts, console)
    if args.json:
        print(json.dumps(facts))
    return 0 if ok(facts) else 1

"""`python -m samples.nightly_report`: a nightly schedule, one of its ticks run, and the report it wrote.

Runs moto's server on 127.0.0.1 in this process, provisions a queue (with its DLQ), the table and the
buckets, records yesterday's sales, then runs one scheduler pass with its clock at 02:00:05 last night
(the tick is dispatched, and a second pass at that moment dispatches nothing), a worker until the report
is in S3, and `sqsjobs schedule list` to show the run the schedule recorded. Exit status 0 when the
report adds up.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from samples.demo_main import demo_main
from sqsjobs import App, aws
from sqsjobs.scheduling import Scheduler
from sqsjobs.worker import Worker, WorkerOptions

from .jobs import BUCKET, ZONE, report, yesterday

SCHEDULE = "nightly-sales-report"
PRODUCTS = {"tea": 450, "coffee": 380, "cake": 295}
ROOT = Path(__file__).resolve().parents[2]


def record_sales(day: str, count: int, seed: int) -> dict[str, dict[str, int]]:
    """`count` sales on `day`; returns what the report must say."""
    pick = random.Random(seed)
    s3 = aws.client("s3")
    expected: dict[str, dict[str, int]] = {}
    for n in range(count):
        product = pick.choice(sorted(PRODUCTS))
        amount = PRODUCTS[product] * pick.randint(1, 3)
        s3.put_object(
            Bucket=BUCKET,
            Key=f"sales/{day}/{n:05d}.json",
            Body=json.dumps({"product": product, "amount_cents": amount}).encode(),
        )
        totals = expected.setdefault(product, {"orders": 0, "revenue_cents": 0})
        totals["orders"] += 1
        totals["revenue_cents"] += amount
    return dict(sorted(expected.items()))


def schedule_list(app: App, width: int) -> str:
    """`sqsjobs schedule list -a samples.nightly_report.jobs`, as a user types it, against this app's AWS."""
    env = dict(os.environ)
    env.update(
        SQSJOBS_QUEUE_PREFIX=app.settings.queue_prefix,
        SQSJOBS_QUEUES=",".join(app.settings.queues),
        SQSJOBS_TABLE=app.settings.table,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
        COLUMNS=str(width),
    )
    command = [sys.executable, "-m", "sqsjobs", "schedule", "list", "-a", "samples.nightly_report.jobs"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


def run(app: App, console: Console, timeout: float = 60) -> dict[str, Any]:
    """Record sales, run last night's tick, work until the report is written; the facts."""
    aws.client("s3").create_bucket(Bucket=BUCKET)
    now = time.time()
    item = app.schedules.get(SCHEDULE)
    tick = item.cron.ticks_between(datetime.fromtimestamp(now - 2 * 86_400, UTC), datetime.fromtimestamp(now, UTC))[-1]
    at = tick.timestamp() + 5
    day = yesterday(tick.timestamp())  # the night the tick is for, whenever the worker gets to it
    expected = record_sales(day, 60, seed=7)
    record_sales((datetime.fromisoformat(day) - timedelta(days=1)).date().isoformat(), 25, seed=8)  # not in it
    console.print(f"[bold]2.[/] recorded 60 sales on {day} (and 25 the day before, which the report must leave out)")

    scheduler = Scheduler(app, owner="sample")
    first = scheduler.run_due(now=at)
    again = scheduler.run_due(now=at)
    clock = f"{datetime.fromtimestamp(at, ZoneInfo(ZONE)):%Y-%m-%d %H:%M:%S %Z}"
    console.print(
        f"[bold]3.[/] a scheduler pass with its clock at {clock}: "
        + ", ".join(f"{o.what} {o.job_id}" for o in first)
        + f"; a second pass at that moment: {[o.what for o in again] or 'nothing due'}"
    )

    worker = Worker(app, WorkerOptions(queues=["default"], concurrency=1, sleep=1))
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    written = None
    try:
        while time.monotonic() < deadline:
            written = report(day)
            record = app.store.get((f"schedule#{SCHEDULE}", "run")) or {}
            if written is not None and record.get("finished_job_id") == record.get("last_job_id"):
                break
            time.sleep(0.1)
    finally:
        worker.stop("the sample is done")
        thread.join(30)
    console.print("[bold]4.[/] sqsjobs schedule list -a samples.nightly_report.jobs")
    listed = schedule_list(app, console.width)
    console.print(listed, markup=False, highlight=False)
    return {
        "day": day,
        "tick": tick.isoformat(),
        "first_pass": [o.what for o in first],
        "second_pass": [o.what for o in again],
        "report": written,
        "expected": expected,
        "schedule_list": listed,
    }


def ok(facts: dict[str, Any]) -> bool:
    written = facts["report"]
    return bool(
        facts["first_pass"] == ["dispatched"]
        and facts["second_pass"] == []
        and written is not None
        and written["products"] == facts["expected"]
        and SCHEDULE in facts["schedule_list"]
    )


def show(facts: dict[str, Any], console: Console) -> None:
    written = facts["report"]
    if written is None:
        console.print("[red]no report: the job did not run in time[/]")
        return
    table = Table(title=f"Sales on {written['day']}", caption=f"s3://{BUCKET}/reports/sales-{written['day']}.json")
    for column in ("product", "orders", "revenue"):
        table.add_column(column)
    for product, totals in written["products"].items():
        table.add_row(product, str(totals["orders"]), f"£{totals['revenue_cents'] / 100:,.2f}")
    console.print(table)
    console.print(
        f"The tick of {facts['tick']} (02:00 in {ZONE}) was dispatched once and ran once; `schedule list` shows "
        "its run. In production the schedule Lambda, `sqsjobs schedule run` or `sqsjobs work --schedule` "
        "makes these passes every minute."
    )


def main(argv: list[str] | None = None) -> int:
    return demo_main("python -m samples.nightly_report", __doc__, "nightly-", run, show, ok, argv)


if __name__ == "__main__":
    sys.exit(main())

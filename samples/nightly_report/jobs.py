"""A report built every night by the scheduler: yesterday's sales, aggregated per product, written to S3.

The schedule sits next to the job, in the module `SQSJOBS_APP` (`-a`) names, so every runner — the
schedule Lambda, `sqsjobs schedule run`, `sqsjobs work --schedule` — knows it, and each night's tick is
dispatched once however many of them run. `without_overlapping` skips a night while the last report
still runs.

Which day a run reports is fixed when its tick fired, not when it runs: a retry after midnight, a
backlog, or `sqsjobs failed retry` days later still builds the night it was meant for. `sqsjobs.scheduled_for(job)`
is the tick the scheduler sent it for (kept through retries and redrives); `sqsjobs.dispatched_at(job)`
the dispatch time of a message sent by hand. Both come from the app's clock.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from samples.s3_json import read_json
from sqsjobs import Job, aws, current_app, dispatched_at, schedule, scheduled_for
from sqsjobs.cron import daily

BUCKET = "sample-nightly-report"
ZONE = "Europe/London"


def yesterday(now: float) -> str:
    """The day before `now`, in the shop's zone (the report runs after midnight there)."""
    return (datetime.fromtimestamp(now, ZoneInfo(ZONE)).date() - timedelta(days=1)).isoformat()


def fired_at(job: Job) -> float:
    """When `job`'s message was meant for: its schedule's tick, else when it was dispatched; the app's
    clock for a job that did not come in a message (its `handle()` called directly)."""
    meant = scheduled_for(job) or dispatched_at(job)
    return meant.timestamp() if meant is not None else current_app().clock()


class BuildSalesReport(Job, name="reports.daily-sales"):
    timeout = 300

    #: The day to report (YYYY-MM-DD); None, as scheduled, means the day before the tick (or the
    #: dispatch) that sent this job, however late it runs. Set it to rebuild a past day.
    day: date | None = None

    def handle(self) -> None:
        day = self.day.isoformat() if self.day else yesterday(fired_at(self))
        s3 = aws.client("s3")
        totals: dict[str, dict[str, int]] = defaultdict(lambda: {"orders": 0, "revenue_cents": 0})
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"sales/{day}/"):
            for item in page.get("Contents", []):
                sale = json.loads(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
                totals[sale["product"]]["orders"] += 1
                totals[sale["product"]]["revenue_cents"] += sale["amount_cents"]
        report = {"day": day, "products": dict(sorted(totals.items()))}
        s3.put_object(Bucket=BUCKET, Key=f"reports/sales-{day}.json", Body=json.dumps(report).encode())


def report(day: str) -> dict[str, object] | None:
    return read_json(BUCKET, f"reports/sales-{day}.json")


schedule(
    BuildSalesReport(),
    daily(at="02:00", tz=ZONE),
    name="nightly-sales-report",
    without_overlapping=True,
)

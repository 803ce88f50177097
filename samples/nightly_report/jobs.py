"""A report built every night by the scheduler: yesterday's sales, aggregated per product, written to S3.

The schedule sits next to the job, in the module `SQSJOBS_APP` (`-a`) names, so every runner — the
schedule Lambda, `sqsjobs schedule run`, `sqsjobs work --schedule` — knows it, and each night's tick is
dispatched once however many of them run. `without_overlapping` skips a night while the last report
still runs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from botocore.exceptions import ClientError

from sqsjobs import Job, aws, schedule
from sqsjobs.cron import daily

BUCKET = "sample-nightly-report"
ZONE = "Europe/London"


def yesterday(now: float) -> str:
    """The day before `now`, in the shop's zone (the report runs after midnight there)."""
    return (datetime.fromtimestamp(now, ZoneInfo(ZONE)).date() - timedelta(days=1)).isoformat()


class BuildSalesReport(Job, name="reports.daily-sales"):
    timeout = 300

    #: The day to report (YYYY-MM-DD); None, as scheduled, means yesterday. Set it to rebuild a past day.
    day: date | None = None

    def handle(self) -> None:
        import time

        day = self.day.isoformat() if self.day else yesterday(time.time())
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
    try:
        body = aws.client("s3").get_object(Bucket=BUCKET, Key=f"reports/sales-{day}.json")["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    found = json.loads(body)
    assert isinstance(found, dict)
    return found


schedule(
    BuildSalesReport(),
    daily(at="02:00", tz=ZONE),
    name="nightly-sales-report",
    without_overlapping=True,
)

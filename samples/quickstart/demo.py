"""`make demo`: a local AWS, two queues with DLQs, a handful of jobs, and what happened to each.

Everything runs over real HTTP against an embedded moto server on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from rich.console import Console
from rich.table import Table

import sqsjobs
from sqsjobs import App, JobEvent
from sqsjobs.local import LocalAws
from sqsjobs.logs import configure as configure_logs
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions

from .jobs import (
    ArchiveLog,
    ChargeCard,
    GenerateReport,
    ImportFinished,
    ImportRow,
    PublishAlbum,
    ResizePhoto,
    SendReminder,
    SendWelcomeEmail,
    SyncInventory,
)

console = Console(width=max(120, Console().width))


def main() -> int:
    started = time.monotonic()
    with LocalAws() as local:
        local.export()
        console.print(f"[bold]1.[/] local AWS (moto) on {local.endpoint}")
        app = App(connection="sqs", queues={"high": "high", "default": "default"}, queue_prefix="demo-")
        configure_logs("text", "WARNING")
        provision(app, ["high", "default"], report=lambda line: console.print(f"   {line}"))
        sqsjobs.use(app)

        outcomes: dict[str, dict[str, object]] = {}

        def record(event: JobEvent) -> None:
            row = outcomes.setdefault(event.job_id, {"job": event.job_name, "queue": event.queue})
            row["attempts"] = event.attempt
            if event.kind != "processing":
                row["outcome"] = event.kind
                row["reason"] = f"{event.error_type}: {event.error}" if event.error else ""

        app.events.listen(record)

        console.print("[bold]2.[/] dispatching jobs")
        SendWelcomeEmail(user_id=42).dispatch()
        SyncInventory(sku="SKU-1").dispatch()
        GenerateReport(report="q3-sales").dispatch()
        ChargeCard(order_id=7, amount_cents=-500).dispatch()
        SendReminder(user_id=42).dispatch(delay=3)
        # A message from an older producer whose payload no longer fits the job.
        bad = {
            "v": 1, "id": "legacy-0001", "job": SendWelcomeEmail.job_name, "payload": {"user_id": "forty-two"},
            "queue": "high", "dispatched_at": "2026-01-01T00:00:00Z",
        }  # fmt: skip
        sqs = sqsjobs.aws.client("sqs")
        sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName="demo-high")["QueueUrl"], MessageBody=json.dumps(bad))

        console.print("   a chain (resize 2 photos, then publish), a batch of 3 rows with a `then`, a 2 MiB job")
        sqsjobs.chain([ResizePhoto(photo_id=1), ResizePhoto(photo_id=2), PublishAlbum(album_id=9)]).dispatch()
        imported = sqsjobs.batch([ImportRow(row=n) for n in range(3)]).then(ImportFinished()).name("rows").dispatch()
        ArchiveLog(lines=["GET /health 200"] * 120_000).dispatch()

        console.print("[bold]3.[/] running a worker on high,default until the queues are empty")
        worker = Worker(app, WorkerOptions(queues=["high", "default"], concurrency=4, sleep=1, stop_when_empty=True))
        worker.run(install_signals=False)

        from sqsjobs.failed_jobs import FailedJobs

        in_dlq = {job.id: job for job in FailedJobs(app, ["high", "default"]).list()}
        found = sqsjobs.find_batch(imported.id)
        assert found is not None
        batch_line = f"batch {found.name!r}: {found.processed}/{found.total} processed, finished={found.finished}"
        payloads_left = sqsjobs.aws.client("s3").list_objects_v2(Bucket=app.settings.bucket).get("KeyCount", 0)

    table = Table(title="What happened")
    for column in ("job", "queue", "attempts", "outcome", "reason (from the DLQ)"):
        table.add_column(column, overflow="fold")
    for job_id, row in outcomes.items():
        outcome = str(row.get("outcome", "?"))
        failed = in_dlq.get(job_id)
        reason = f"{failed.reason}: {failed.error}" if failed else ""
        colour = {"processed": "green", "failed": "red", "rejected": "red"}.get(outcome, "yellow")
        table.add_row(
            str(row["job"]), str(row["queue"]), str(row.get("attempts", "")), f"[{colour}]{outcome}[/]", reason
        )
    console.print(table)
    console.print(f"{batch_line}; S3 payload objects left: {payloads_left}")
    console.print(
        f"{len(in_dlq)} job(s) in the DLQs; `sqsjobs failed retry ID` would send one back. "
        f"Done in {time.monotonic() - started:.1f}s."
    )
    # 3 plain + 3 chain links + 3 rows + 1 batch callback + 1 large payload
    expected = {"processed": 11, "failed": 2, "rejected": 1}
    got = {kind: sum(1 for r in outcomes.values() if r.get("outcome") == kind) for kind in expected}
    return 0 if got == expected and len(in_dlq) == 3 and found.finished and payloads_left == 0 else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())

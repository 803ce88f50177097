"""`python -m samples.csv_import`: a 1,000-row CSV in S3, imported by a batch of chunk jobs, with a live
progress bar read from the batch's counters and the summary its `finally` job wrote.

Runs moto's server on 127.0.0.1 in this process, provisions a queue (with its DLQ), the table and the
buckets, uploads the file, dispatches `ImportCsv`, runs a worker on a thread, and follows the batch.
Exit status 0 when every good row was imported and every bad one reported.
"""

from __future__ import annotations

import csv
import io
import sys
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from samples.demo_main import demo_main
from sqsjobs import App, find_batch
from sqsjobs.worker import Worker, WorkerOptions

from . import files
from .jobs import ImportCsv

ROWS = 1_000
#: line number -> (what is wrong with that row, as written into the file)
BAD_ROWS = {
    17: ("name", ""),
    120: ("email", "not-an-email"),
    121: ("balance", "12,50"),
    333: ("balance", "-40"),
    402: ("email", "ada@"),
    615: ("name", "   "),
    777: ("balance", "lots"),
    968: ("email", "grace hopper@example.com"),
}


def make_csv() -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "name", "email", "balance"])
    for n in range(1, ROWS + 1):
        row = {"name": f"Customer {n}", "email": f"customer{n}@example.com", "balance": f"{n % 97}.{n % 100:02d}"}
        field, value = BAD_ROWS.get(n + 1, ("", ""))  # row n is line n + 1 (line 1 is the header)
        if field:
            row[field] = value
        writer.writerow([n, row["name"], row["email"], row["balance"]])
    return out.getvalue()


def run(app: App, console: Console, timeout: float = 60) -> dict[str, Any]:
    """Upload, import, follow the batch; the facts, for the table and the tests."""
    files.create_bucket()
    key = "uploads/customers.csv"
    files.put_text(key, make_csv())
    import_id = ImportCsv(key=key).dispatch().job_id
    console.print(f"[bold]2.[/] uploaded s3://{files.BUCKET}/{key} ({ROWS} rows); dispatched ImportCsv")

    worker = Worker(app, WorkerOptions(queues=["default"], concurrency=4, sleep=1))
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    summary: Any = None
    seen: list[tuple[int, int]] = []
    try:
        manifest = None
        while manifest is None and time.monotonic() < deadline:
            manifest = files.get_json(f"imports/{import_id}/manifest.json")
            time.sleep(0.1)
        if manifest is not None:
            console.print(
                f"[bold]3.[/] the parent fanned out {manifest['chunks']} chunk jobs (batch {manifest['batch_id']})"
            )
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=False) as progress:
                task = progress.add_task("chunks", total=manifest["chunks"])
                while time.monotonic() < deadline:
                    found = find_batch(manifest["batch_id"])
                    if found is not None:
                        done = found.processed + found.failed
                        seen.append((done, found.total))
                        progress.update(task, completed=done, description=f"chunks ({found.failed} failed)")
                        if found.finished:
                            break
                    time.sleep(0.1)
            while summary is None and time.monotonic() < deadline:  # the `finally` job runs after the last chunk
                summary = files.get_json(f"imports/{import_id}/summary.json")
                time.sleep(0.1)
    finally:
        worker.stop("the sample is done")
        thread.join(30)
    return {"import_id": import_id, "progress": seen, "summary": summary}


def ok(facts: dict[str, Any]) -> bool:
    summary = facts["summary"]
    if summary is None:
        return False
    lines = sorted(error["line"] for error in summary["errors"])
    return bool(
        summary["rows_imported"] == ROWS - len(BAD_ROWS)
        and lines == sorted(BAD_ROWS)
        and summary["chunks_failed"] == 0
        and summary["chunks_ok"] == summary["chunks"]
    )


def show(facts: dict[str, Any], console: Console) -> None:
    summary = facts["summary"]
    if summary is None:
        console.print("[red]no summary: the batch did not finish in time[/]")
        return
    table = Table(title=f"Rejected rows of {summary['file']}")
    for column in ("line", "reason"):
        table.add_column(column)
    for error in sorted(summary["errors"], key=lambda e: e["line"]):
        table.add_row(str(error["line"]), error["reason"])
    console.print(table)
    console.print(
        f"{summary['rows_imported']} rows imported, {summary['rows_rejected']} rejected; "
        f"{summary['chunks_ok']}/{summary['chunks']} chunks succeeded ({summary['chunks_failed']} failed; "
        "one was retried after a dropped connection and counted once). The summary was written by the batch's "
        f"`finally` job to s3://{files.BUCKET}/imports/{facts['import_id']}/summary.json."
    )


def main(argv: list[str] | None = None) -> int:
    return demo_main("python -m samples.csv_import", __doc__, "csv-import-", run, show, ok, argv)


if __name__ == "__main__":
    sys.exit(main())

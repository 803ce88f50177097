"""`sqsjobs batches list|show|prune` against batch records a real worker wrote to DynamoDB.

Each test gets its own table (`SQSJOBS_TABLE`), so `list` and `prune` see only its batches.
"""

from __future__ import annotations

import re
import subprocess

from sqsjobs import App, aws, batch
from tests.e2e.conftest import E2E
from tests.e2e.e2e_jobs import FailsWhileFlagged, Record


def _setup(e2e: E2E) -> tuple[App, dict[str, str]]:
    """Fresh queues and a fresh table; the env that points workers and the CLI at both."""
    table = f"{e2e.prefix}batches"
    return e2e.setup(table=table), e2e.env(SQSJOBS_TABLE=table)


def _drain(e2e: E2E, env: dict[str, str]) -> None:
    worker = e2e.worker("--stop-when-empty", env=env)
    assert worker.wait(30) == 0, worker.stderr()[-3000:]


def _batches(e2e: E2E, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return e2e.cli("batches", *args, env=env)


def _rows(listing: str) -> dict[str, list[str]]:
    """`batches list` rows by batch id: the cells, split on the table's borders and spaces."""
    rows = {}
    for line in listing.splitlines():
        cells = [cell for cell in re.split(r"[\s│┃|]+", line) if cell]
        if cells and re.fullmatch(r"[0-9a-f-]{36}", cells[0]):
            rows[cells[0]] = cells[1:]
    return rows


def _failed_job_ids(e2e: E2E) -> set[str]:
    """Which jobs failed, by the markers the jobs themselves wrote (not by the batch record)."""
    return {path.stem for path in e2e.dir.glob("*.log") if ("fail", 1) in e2e.events(path.stem)}


def test_list_shows_each_batch_newest_first_with_counts_and_state(e2e: E2E) -> None:
    app, env = _setup(e2e)
    empty = _batches(e2e, env, "list")
    assert empty.returncode == 0, empty.stderr
    assert "No batches." in empty.stdout

    (e2e.dir / "flag").touch()
    # A failure cancels a batch that does not allow failures; it still finishes.
    failing = batch([Record(tag="a"), Record(tag="b"), FailsWhileFlagged()]).name("nightly").dispatch(app)
    succeeding = batch([Record(tag="c"), Record(tag="d")]).name("thumbs").dispatch(app)
    _drain(e2e, env)
    waiting = batch([Record(tag=str(i)) for i in range(4)]).name("waiting").dispatch(app)

    listed = _batches(e2e, env, "list")
    assert listed.returncode == 0, listed.stderr
    rows = _rows(listed.stdout)
    assert list(rows) == [waiting.id, succeeding.id, failing.id], listed.stdout
    # name, progress, total, processed, failed, pending, state, created at
    assert rows[waiting.id][:7] == ["waiting", "0%", "4", "0", "0", "4", "running"]
    assert rows[succeeding.id][:7] == ["thumbs", "100%", "2", "2", "0", "0", "finished"]
    assert rows[failing.id][:7] == ["nightly", "100%", "3", "2", "1", "0", "cancelled"]
    assert rows[failing.id][7] == failing.created_at
    assert "3 batch(es)" in listed.stdout


def test_show_prints_the_batch_and_the_ids_of_its_failed_jobs(e2e: E2E) -> None:
    app, env = _setup(e2e)
    (e2e.dir / "flag").touch()
    report = (
        batch([Record(tag="ok"), FailsWhileFlagged(), FailsWhileFlagged()])
        .name("report")
        .allow_failures()
        .dispatch(app)
    )
    _drain(e2e, env)
    failed = _failed_job_ids(e2e)
    assert len(failed) == 2
    succeeded = {path.stem for path in e2e.dir.glob("*.log")} - failed
    assert len(succeeded) == 1

    shown = _batches(e2e, env, "show", report.id)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert report.id in out
    assert "report" in out
    assert "3 total, 1 processed, 2 failed, 0 pending" in out
    assert re.search(r"state\s+finished", out), out  # allow_failures: not cancelled
    assert re.search(r"allow failures\s+yes", out), out
    assert "2 failed job(s)" in out
    assert all(job_id in out for job_id in failed), out
    assert not any(job_id in out for job_id in succeeded), out
    # The ids are the ones `failed show` (the hint under the list) knows the job by.
    in_dlq = e2e.cli("failed", "show", min(failed), env=env)
    assert in_dlq.returncode == 0, in_dlq.stderr


def test_show_of_an_unknown_batch_exits_1_and_says_so(e2e: E2E) -> None:
    _, env = _setup(e2e)
    unknown = "00000000-0000-4000-8000-000000000000"
    shown = _batches(e2e, env, "show", unknown)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert f"No batch {unknown}" in shown.stderr
    assert shown.stdout == ""


def test_prune_removes_finished_batches_then_with_unfinished_hours_the_rest(e2e: E2E) -> None:
    app, env = _setup(e2e)
    done = batch([Record(tag="a"), Record(tag="b")]).name("done").dispatch(app)
    _drain(e2e, env)
    running = batch([Record(tag="c")]).name("running").dispatch(app)

    kept = _batches(e2e, env, "prune")
    assert kept.returncode == 0, kept.stderr
    assert "Pruned 0 batch(es)." in kept.stdout, "by default only batches finished over 24 hours ago go"

    pruned = _batches(e2e, env, "prune", "--hours", "0")
    assert pruned.returncode == 0, pruned.stderr
    assert "Pruned 1 batch(es)." in pruned.stdout
    listed = _batches(e2e, env, "list")
    assert listed.returncode == 0, listed.stderr
    assert list(_rows(listed.stdout)) == [running.id], listed.stdout
    # The record and its member outcomes are gone, not only hidden.
    items = aws.client("dynamodb").query(
        TableName=app.settings.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"batch#{done.id}"}},
    )["Items"]
    assert items == []

    rest = _batches(e2e, env, "prune", "--hours", "0", "--unfinished-hours", "0")
    assert rest.returncode == 0, rest.stderr
    assert "Pruned 1 batch(es)." in rest.stdout
    assert "No batches." in _batches(e2e, env, "list").stdout

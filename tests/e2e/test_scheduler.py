"""The scheduler end to end: two worker subprocesses with `--schedule` against moto's HTTP server
(through the strict layer) dispatch each tick of an every-minute schedule once, and it runs once;
`schedule list`, `run --once` and `test` as a user types them."""

from __future__ import annotations

import json
import time
from typing import Any

from sqsjobs.schedules import run_id
from tests.e2e.conftest import E2E
from tests.helpers import wait_for


def setup(e2e: E2E) -> dict[str, str]:
    e2e.setup(visibility=30, table=f"{e2e.prefix}table")
    return e2e.env(SQSJOBS_TABLE=f"{e2e.prefix}table", E2E_SCHEDULES="1")


def listed(e2e: E2E, env: dict[str, str]) -> dict[str, Any]:
    result = e2e.cli("schedule", "list", "--json", "--app", "tests.e2e.e2e_jobs", env=env)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["schedules"]
    return dict(row)


def dispatched(output: str) -> set[str]:
    """The ticks a `schedule run --once` printed as dispatched."""
    return {" ".join(line.split()[1:3]) for line in output.splitlines() if line.endswith(" dispatched")}


def minute_ticks(around: float) -> list[int]:
    """The minute ticks (ms) a run of this test may have seen (it waits up to 90 s for the first)."""
    start = int(around // 60) * 60
    return [(start + 60 * n) * 1000 for n in range(-1, 5)]


def test_two_workers_with_schedule_dispatch_a_tick_once_and_it_runs_once(e2e: E2E) -> None:
    env = setup(e2e)
    began = time.time()
    workers = [e2e.worker("--schedule", env=env) for _ in range(2)]
    # A new schedule's first tick is the next minute's: up to 60 s away, then the job runs.
    row = wait_for(
        lambda: (r := listed(e2e, env))["state"] == "finished" and r, timeout=90, what="the tick's job finished"
    )
    assert row["outcome"] == "ok" and row["name"] == "e2e.every-minute" and row["job"] == "e2e.record"
    for worker in workers:
        worker.signal(15)
    assert [w.wait(30) for w in workers] == [0, 0]
    ended = time.time()
    # A minute may have turned while they stopped: its tick, dispatched but not started, was handed back.
    assert e2e.worker("--stop-when-empty", env=env).wait(30) == 0
    ran = {tick: e2e.events(run_id("e2e.every-minute", tick)) for tick in minute_ticks(began)}
    ran = {tick: events for tick, events in ran.items() if events}
    # One tick per minute that turned during the test: each dispatched once, run once.
    assert ran, "no tick's job ran"
    due = [tick for tick in minute_ticks(began) if began - 60 < tick / 1000 <= ended]
    assert set(ran) <= set(due), f"ticks ran that were not due while the workers ran: {sorted(set(ran) - set(due))}"
    twice = {tick: events for tick, events in ran.items() if events != [("start", 1), ("end", 1)]}
    assert twice == {}, f"a tick's job ran other than once: {twice}"
    assert e2e.queue_depth() == 0 and e2e.dlq_depth() == 0


def test_schedule_run_once_and_test_from_the_cli(e2e: E2E) -> None:
    env = setup(e2e)
    first = e2e.cli("schedule", "run", "--once", "--app", "tests.e2e.e2e_jobs", env=env)
    assert first.returncode == 0, first.stderr
    assert len(dispatched(first.stdout)) == 1, first.stdout
    again = e2e.cli("schedule", "run", "--once", "--app", "tests.e2e.e2e_jobs", env=env)
    # The same tick is never dispatched twice (a minute may turn between the two passes: then only the new one).
    assert not dispatched(first.stdout) & dispatched(again.stdout)
    tried = e2e.cli("schedule", "test", "e2e.every-minute", "--app", "tests.e2e.e2e_jobs", env=env)
    assert tried.returncode == 0 and "job" in tried.stdout
    unknown = e2e.cli("schedule", "test", "nope", "--app", "tests.e2e.e2e_jobs", env=env)
    assert unknown.returncode == 2 and "no schedule named 'nope'" in unknown.stderr
    worker = e2e.worker("--stop-when-empty", env=env)
    assert worker.wait(30) == 0
    assert e2e.queue_depth() == 0 and e2e.dlq_depth() == 0
    row = listed(e2e, env)
    assert row["missed"] == 0 and row["last_job_id"] is not None

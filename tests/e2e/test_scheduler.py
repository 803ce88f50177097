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


def minute_ticks(start: float, end: float) -> list[int]:
    """The minute ticks (ms) from the minute before `start` to `end`."""
    first = int(start // 60) * 60 - 60
    return [tick * 1000 for tick in range(first, int(end) + 1, 60)]


def test_two_workers_with_schedule_dispatch_a_tick_once_and_it_runs_once(e2e: E2E) -> None:
    env = setup(e2e)
    began = time.time()
    workers = [e2e.worker("--schedule", env=env) for _ in range(2)]
    # A new schedule takes the current minute's tick; one that starts as a minute turns waits for the next.
    row = wait_for(
        lambda: (r := listed(e2e, env))["state"] == "finished" and r, timeout=90, what="the tick's job finished"
    )
    assert row["outcome"] == "ok" and row["name"] == "e2e.every-minute" and row["job"] == "e2e.record"
    signalled = time.time()
    for worker in workers:
        worker.signal(15)
    assert [w.wait(30) for w in workers] == [0, 0]
    ended = time.time()
    # A minute may have turned while they stopped: its tick, dispatched but not started, was handed back.
    assert e2e.worker("--stop-when-empty", env=env).wait(30) == 0
    ticks = minute_ticks(began, ended)
    ran = {tick: e2e.events(run_id("e2e.every-minute", tick)) for tick in ticks}
    ran = {tick: events for tick, events in ran.items() if events}
    assert ran, "no tick's job ran"
    twice = {tick: events for tick, events in ran.items() if events != [("start", 1), ("end", 1)]}
    assert twice == {}, f"a tick's job ran other than once: {twice}"
    # Every minute from the first tick that ran to the signal ran (none skipped as overlapping a run long over).
    first = min(ran)
    assert first / 1000 >= int(began // 60) * 60 - 60, "a tick from before the workers started ran"
    expected = [tick for tick in ticks if first <= tick <= (signalled - 5) * 1000]
    assert sorted(set(expected) - set(ran)) == [], f"ticks that did not run: {sorted(set(expected) - set(ran))}"
    final = listed(e2e, env)
    assert (final["state"], final["last_job_id"], final["missed"]) == (
        "finished",
        run_id("e2e.every-minute", max(ran)),
        0,
    )
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

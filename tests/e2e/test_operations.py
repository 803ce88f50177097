"""Operating real worker subprocesses: `restart` after a deploy, `pause`/`continue`, and `monitor`
thresholds that reach a listener, over moto's HTTP server through the strict layer."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import E2E, Process
from tests.e2e.e2e_jobs import Record, Triaged
from tests.helpers import wait_for

BEAT = "0.3"


def setup(e2e: E2E) -> dict[str, str]:
    """Queues and a table of this test's own (beats of other tests' workers never show here)."""
    e2e.setup(visibility=30, table=f"{e2e.prefix}table")
    return e2e.env(SQSJOBS_TABLE=f"{e2e.prefix}table", SQSJOBS_WORKER_BEAT=BEAT)


def live(e2e: E2E, env: dict[str, str]) -> list[dict[str, Any]]:
    result = e2e.cli("workers", "--json", env=env)
    assert result.returncode == 0, result.stderr
    workers: list[dict[str, Any]] = json.loads(result.stdout)["workers"]
    return workers


def events(e2e: E2E) -> list[tuple[str, str, int]]:
    path = e2e.dir / "queue-events.txt"
    if not path.exists():
        return []
    return [(kind, queue, int(pid)) for kind, queue, pid in (line.split() for line in path.read_text().splitlines())]


def test_restart_lets_every_worker_finish_its_job_and_exit_0(e2e: E2E) -> None:
    env = setup(e2e)
    first, second = e2e.dispatch(Record(tag="a", sleep=2)), e2e.dispatch(Record(tag="b", sleep=2))
    workers: list[Process] = [e2e.worker("--concurrency", "1", env=env) for _ in range(2)]
    e2e.wait_mark(first.job_id, "start")
    e2e.wait_mark(second.job_id, "start")
    wait_for(lambda: len(live(e2e, env)) == 2, what="two beats")
    result = e2e.cli("restart", env=env)
    assert result.returncode == 0 and "2 live worker(s)" in result.stdout
    assert [w.wait(30) for w in workers] == [0, 0]
    assert e2e.events(first.job_id) == [("start", 1), ("end", 1)]
    assert e2e.events(second.job_id) == [("start", 1), ("end", 1)]
    assert e2e.queue_depth() == 0 and e2e.dlq_depth() == 0
    stopping = {(kind, pid) for kind, _, pid in events(e2e) if kind == "worker_stopping"}
    assert stopping == {("worker_stopping", w.pid) for w in workers}
    assert all("restart requested" in w.stderr() for w in workers)
    assert live(e2e, env) == []


def test_pause_keeps_jobs_on_the_queue_until_continue(e2e: E2E) -> None:
    env = setup(e2e)
    worker = e2e.worker(env=env)
    wait_for(lambda: live(e2e, env), what="the worker's beat")
    assert e2e.cli("pause", "default", env=env).returncode == 0
    wait_for(lambda: [w for w in live(e2e, env) if w["paused"] == ["default"]], what="the pause seen")
    job = e2e.dispatch(Record(tag="waits"))
    beats = live(e2e, env)[0]["last_seen"]
    wait_for(lambda: live(e2e, env)[0]["last_seen"] >= beats + 1.5, what="beats while paused")
    assert e2e.marks(job.job_id) == [] and e2e.queue_depth() == 1
    assert e2e.cli("continue", "default", env=env).returncode == 0
    e2e.wait_mark(job.job_id, "end")
    assert worker.poll() is None
    assert e2e.events(job.job_id) == [("start", 1), ("end", 1)]


def test_a_monitor_threshold_exits_1_and_reaches_the_apps_listener(e2e: E2E) -> None:
    env = setup(e2e)
    for n in range(3):
        e2e.dispatch(Record(tag=f"waiting{n}"))
    result = e2e.cli(
        "monitor", "--app", "tests.e2e.e2e_jobs", "--queue", "default", "--max-depth", "2", "--json", env=env
    )
    assert result.returncode == 1, result.stderr
    (row,) = json.loads(result.stdout)["queues"]
    assert row["queue"] == "default" and row["depth"] == 3
    assert [(kind, queue) for kind, queue, _ in events(e2e)] == [("queue_busy", "default")]
    calm = e2e.cli("monitor", "--app", "tests.e2e.e2e_jobs", "--queue", "default", "--max-depth", "3", env=env)
    assert calm.returncode == 0
    assert len(events(e2e)) == 1


def test_triage_discards_one_failure_and_retries_another_from_the_dlq(e2e: E2E) -> None:
    env = setup(e2e)
    (e2e.dir / "flag").touch()
    outage = e2e.dispatch(Triaged())
    gone = e2e.dispatch(Triaged(gone=True))
    worker = e2e.worker("--stop-when-empty", env=env)
    assert worker.wait(60) == 0
    assert e2e.events(gone.job_id) == [("start", 1), ("failed:RowGone", 1)]
    assert e2e.events(outage.job_id) == [("start", 1), ("failed:GatewayDown", 1)]
    assert e2e.dlq_depth() == 1  # the outage only: the deleted row was discarded
    (e2e.dir / "flag").unlink()
    triage = e2e.cli("failed", "triage", "--app", "tests.e2e.e2e_jobs", env=env)
    assert triage.returncode == 0 and "Retried 1 job(s)" in triage.stdout and outage.job_id in triage.stdout
    assert e2e.worker("--stop-when-empty", env=env).wait(60) == 0
    assert e2e.events(outage.job_id)[-1] == ("end", 1)  # attempts reset: its first try again
    assert e2e.dlq_depth() == 0 and e2e.queue_depth() == 0

"""A worker SIGKILLed between a job's chain/batch work and the deletion of its message.

The kill lands exactly in that window: `Step` (tests/e2e/e2e_workflow_jobs.py) kills its own
worker on its `processed` event, which the runner emits after sending the next link or counting
the batch member, and before the poller deletes the message. The message then comes back after
the (short) visibility timeout on a second worker, which finds the job's run already decided
(the "ended" mark): it redoes only the bookkeeping, whose marks absorb what was done — the job
does not run again, the next link is not sent again, the member is not counted again.
"""

from __future__ import annotations

import signal

from sqsjobs import App, batch, chain, find_batch
from tests.e2e.conftest import E2E, Process
from tests.e2e.e2e_workflow_jobs import LAST_MEMBER, Step, crash_file, steps

JOBS = "tests.e2e.e2e_workflow_jobs"


def _setup(e2e: E2E) -> tuple[App, dict[str, str]]:
    """Fresh queues (2 s visibility, so the redelivery comes quickly) and a fresh table."""
    table = f"{e2e.prefix}workflow"
    return e2e.setup(visibility=2, table=table), e2e.env(SQSJOBS_TABLE=table)


def _worker(e2e: E2E, env: dict[str, str], *args: str) -> Process:
    # --prefetch 0: a killed worker would otherwise also have held the next link, which then comes back
    # on its second receive (attempt 2; docs/attempts.md). These tests are about the chain's bookkeeping.
    return e2e.spawn(["work", "--app", JOBS, "--sleep", "1", "--concurrency", "1", "--prefetch", "0", *args], env)


def _killed(e2e: E2E, worker: Process) -> None:
    """The worker died by its own SIGKILL (the crash file is gone: it fired, and fires no more)."""
    assert worker.wait(30) == -signal.SIGKILL, worker.stderr()[-3000:]
    assert not crash_file(e2e.dir).exists()


def test_a_link_killed_after_sending_the_next_one_is_not_run_again_and_the_next_link_runs_once(e2e: E2E) -> None:
    app, env = _setup(e2e)
    crash_file(e2e.dir).write_text("a")
    chain([Step(tag="a"), Step(tag="b"), Step(tag="c")]).dispatch(app)

    first = _worker(e2e, env)
    _killed(e2e, first)
    assert steps(e2e.dir) == [("a", 1)]
    # Link a's message is still there (in flight), and link b was already sent next to it.
    assert e2e.queue_depth() == 2

    second = _worker(e2e, env, "--stop-when-empty")
    assert second.wait(30) == 0, second.stderr()[-3000:]
    runs = steps(e2e.dir)
    assert runs == [("a", 1), ("b", 1), ("c", 1)], runs
    assert e2e.queue_depth() == 0
    assert e2e.dlq_depth() == 0


def test_the_last_batch_member_killed_after_being_counted_is_not_run_again_and_then_runs_once(e2e: E2E) -> None:
    app, env = _setup(e2e)
    crash_file(e2e.dir).write_text(LAST_MEMBER)
    members = [Step(tag=f"m{i}") for i in range(5)]
    b = batch(members).then(Step(tag="then")).name("crash").dispatch(app)

    first = _worker(e2e, env)
    _killed(e2e, first)
    runs = steps(e2e.dir)
    assert sorted(runs) == [(f"m{i}", 1) for i in range(5)], runs
    killed_member = runs[-1][0]
    # Counted (and finished) before the kill; the killed member's message was not deleted.
    counted = find_batch(b.id, app)
    assert counted is not None
    assert (counted.total, counted.processed, counted.failed, counted.finished) == (5, 5, 0, True)

    second = _worker(e2e, env, "--stop-when-empty")
    assert second.wait(30) == 0, second.stderr()[-3000:]
    done = find_batch(b.id, app)
    assert done is not None
    assert (done.total, done.processed, done.failed) == (5, 5, 0)
    assert done.finished and not done.cancelled
    assert done.failed_job_ids() == []

    runs = steps(e2e.dir)
    assert [tag for tag, _ in runs].count("then") == 1, runs
    # The killed member's message comes back, and so may others' (the worker deletes finished
    # messages in batches, `delete_flush_s`, and the kill lost the deletes not flushed yet). None
    # runs again: each was decided, so its redelivery only settles its bookkeeping.
    assert sorted(tag for tag, _ in runs if tag != "then") == [f"m{i}" for i in range(5)], runs
    assert killed_member in {tag for tag, _ in runs}
    assert e2e.queue_depth() == 0
    assert e2e.dlq_depth() == 0

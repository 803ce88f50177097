"""The asyncio way: dispatch from async code (aiobotocore), and `sqsjobs work --async`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

from sqsjobs import DispatchError, Job, JobTimeoutError
from tests.e2e.conftest import E2E, JOBS_MODULE, Mark
from tests.e2e.e2e_jobs import AsyncHangs, AsyncNap, Record
from tests.helpers import counts, dead_letters, wait_for


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of [start, end] spans that overlap at one instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = best = 0
    for _, step in edges:
        running += step
        best = max(best, running)
    return best


def span(marks: list[Mark]) -> tuple[float, float]:
    times = {m.event: m.at for m in marks}
    return times["start"], times["end"]


def test_async_dispatch_and_an_async_worker_run_jobs_concurrently_on_one_loop(e2e: E2E) -> None:
    app = e2e.setup()

    async def dispatch() -> list[str]:
        with app.activate():
            single = await AsyncNap(seconds=1).dispatch_async()
            many = await AsyncNap.dispatch_many_async([AsyncNap(seconds=1) for _ in range(11)])
            sync_job = await Record(tag="sync in a thread").dispatch_async()
            await app.async_sender.aclose()
        return [single.job_id, *(d.job_id for d in many), sync_job.job_id]

    *naps, sync_id = asyncio.run(dispatch())
    worker = e2e.worker("--async", "--concurrency", "20", "--stop-when-empty")

    assert worker.wait(60) == 0, worker.stderr()
    assert all(e2e.events(job_id) == [("start", 1), ("end", 1)] for job_id in naps)
    assert e2e.events(sync_id) == [("start", 1), ("end", 1)]
    # Twelve one-second naps overlapped: they ran as tasks on the loop, not one after another.
    assert most_at_once([span(e2e.marks(job_id)) for job_id in naps]) >= 10
    assert any("mode=asyncio" in line for line in worker.stderr().splitlines())


def test_an_async_bulk_dispatch_streams_large_jobs_and_names_the_one_it_cannot_encode(e2e: E2E) -> None:
    """25 jobs of 200 KB go a few batches at a time (sqsjobs.bulk_plan); one whose text UTF-8 cannot carry
    (a lone surrogate, which pydantic accepts) is the one entry of `not_queued`, and the others are queued."""
    app = e2e.setup()
    jobs = [Record(tag=f"{n:03d}" + "x" * 200_000) for n in range(25)]
    broken = Record(tag="a\ud800")

    async def dispatch() -> DispatchError:
        with app.activate():
            try:
                await Record.dispatch_many_async([*jobs[:12], broken, *jobs[12:]])
            except DispatchError as exc:
                return exc
            finally:
                await app.async_sender.aclose()
        raise AssertionError("the job that cannot be encoded was not reported")

    caught = asyncio.run(dispatch())
    ((_, name, reason),) = caught.not_queued
    assert name == "e2e.record" and "not valid Unicode" in reason
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 25


def test_an_async_job_past_its_timeout_is_cancelled_and_failed(e2e: E2E) -> None:
    app = e2e.setup()
    hangs = e2e.dispatch(AsyncHangs())
    worker = e2e.worker("--async", "--stop-when-empty")

    assert worker.wait(30) == 0, worker.stderr()
    assert e2e.events(hangs.job_id) == [("start", 1), ("cancelled", 1), ("failed:JobTimeoutError", 1)]
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.error_type"] == "JobTimeoutError"
    assert letter["attrs"]["sqsjobs.reason"] == "tries_exhausted"


def test_sigterm_lets_running_async_jobs_finish(e2e: E2E) -> None:
    e2e.setup()
    nap = e2e.dispatch(AsyncNap(seconds=2))
    worker = e2e.worker("--async", "--concurrency", "5")
    e2e.wait_mark(nap.job_id, "start")
    worker.signal(signal.SIGTERM)

    assert worker.wait(30) == 0, worker.stderr()
    assert e2e.events(nap.job_id) == [("start", 1), ("end", 1)]
    wait_for(lambda: e2e.queue_depth() == 0, timeout=5, what="the finished job's message to be deleted")


class StubbornSync(Job, name="e2e.async-stubborn-sync"):
    """A plain `def handle` that swallows its timeout interrupt for a minute, as code blocked in C does."""

    timeout = 1

    def handle(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(JobTimeoutError):
                time.sleep(0.05)


def test_a_sync_job_stuck_past_its_timeout_makes_the_async_worker_exit_1(e2e: E2E) -> None:
    """The worker gives up on it after the grace period and the process ends while the job's thread is
    still stuck (it must not wait for it at exit); the message returns after its visibility timeout."""
    e2e.setup(visibility=5)
    e2e.dispatch(StubbornSync())
    worker = e2e.worker("--async", "--app", f"{JOBS_MODULE},{__name__}")

    assert worker.wait(40) == 1, worker.stderr()
    assert "could not be interrupted" in worker.stderr()
    assert e2e.dlq_depth() == 0
    wait_for(lambda: e2e.queue_depth() == 1, timeout=15, what="the stuck job's message to be left in its queue")

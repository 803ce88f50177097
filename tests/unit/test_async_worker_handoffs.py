"""`--async` after its hand-offs were cut: a plain coroutine job crosses no thread; others cross without waiting.

A plain coroutine job (no feature acts on it) is begun, awaited, finished and settled on the loop
(`Runner.begin_quiet`, docs/asyncio.md). Any other job is begun by a pool thread, which hands the
coroutine to the loop without waiting; the loop hands the outcome back without waiting. A coroutine
job's timeout is the watchdog's, which asks the loop to cancel it (no timer per job).
These check what a user sees of that: every job runs once with the right outcome, whichever side it
ran on; a timeout still cancels and fails the job and the loop goes on; a job's own `asyncio.timeout`
is its own; `--max-jobs` starts exactly that many; and the worker stops without losing a message.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import ClassVar

import pytest

from sqsjobs import App, PermanentError
from sqsjobs.job_class import Job
from sqsjobs.worker import Worker, WorkerOptions
from sqsjobs.worker.event_loop import AsyncJobs
from sqsjobs.worker.lanes import Lanes
from tests.helpers import dead_letters, drain, queue_url, wait_for

_lock = threading.Lock()
_ran: list[str] = []


def _record(what: str) -> None:
    with _lock:
        _ran.append(what)


class AwaitsSomething(Job, name="handoffs.awaits"):
    n: int

    async def handle(self) -> None:
        await asyncio.sleep(0.01)
        _record(f"async-{self.n}")


class PlainJob(Job, name="handoffs.plain"):
    n: int

    def handle(self) -> None:
        _record(f"sync-{self.n}")


class AsyncRefuses(Job, name="handoffs.async-refuses"):
    async def handle(self) -> None:
        await asyncio.sleep(0)
        raise PermanentError("async refuses")


class PlainRefuses(Job, name="handoffs.plain-refuses"):
    def handle(self) -> None:
        raise PermanentError("plain refuses")


class OverstaysAwaiting(Job, name="handoffs.overstays"):
    timeout = 1
    tries = 1
    cancelled: ClassVar[threading.Event] = threading.Event()

    async def handle(self) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            OverstaysAwaiting.cancelled.set()
            raise


class OwnTimeout(Job, name="handoffs.own-timeout"):
    async def handle(self) -> None:
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5)
        except TimeoutError:
            _record("own-timeout-caught")


def _work(app: App, **options: object) -> int:
    opts = WorkerOptions(sleep=1, event_loop=True, stop_when_empty=True, max_time=30, **options)  # type: ignore[arg-type]
    return Worker(app, opts).run(install_signals=False)


def test_every_job_runs_once_with_its_outcome_on_either_side_of_the_loop(sqs_app: App) -> None:
    _ran.clear()
    sqs_app.dispatch_many(
        [AwaitsSomething(n=n) for n in range(8)] + [PlainJob(n=n) for n in range(4)] + [AsyncRefuses(), PlainRefuses()]
    )
    assert _work(sqs_app, concurrency=4) == 0
    assert sorted(_ran) == sorted([f"async-{n}" for n in range(8)] + [f"sync-{n}" for n in range(4)])
    letters = dead_letters(sqs_app)
    assert sorted(letter["attrs"]["sqsjobs.error"] for letter in letters) == ["async refuses", "plain refuses"]
    assert {letter["attrs"]["sqsjobs.reason"] for letter in letters} == {"permanent"}
    assert drain(queue_url(sqs_app, "default")) == []


def test_a_coroutine_past_its_timeout_is_cancelled_by_the_watchdog_and_the_loop_goes_on(sqs_app: App) -> None:
    _ran.clear()
    OverstaysAwaiting.cancelled.clear()
    OverstaysAwaiting().dispatch()
    sqs_app.dispatch_many([AwaitsSomething(n=n) for n in range(3)])
    started = time.monotonic()
    assert _work(sqs_app, concurrency=2) == 0
    assert time.monotonic() - started < 15, "the job was awaited for its 30 s instead of cancelled at 1 s"
    assert OverstaysAwaiting.cancelled.is_set(), "the cancellation reached the job's own await"
    (letter,) = dead_letters(sqs_app)
    assert letter["attrs"]["sqsjobs.error_type"] == "JobTimeoutError"
    assert "ran longer than its timeout of 1s" in letter["attrs"]["sqsjobs.error"]
    assert sorted(_ran) == ["async-0", "async-1", "async-2"]


def test_a_jobs_own_asyncio_timeout_is_its_own(sqs_app: App) -> None:
    _ran.clear()
    OwnTimeout().dispatch()
    assert _work(sqs_app) == 0
    assert _ran == ["own-timeout-caught"]
    assert dead_letters(sqs_app) == []
    assert drain(queue_url(sqs_app, "default")) == []


def test_max_jobs_starts_exactly_that_many_and_leaves_the_rest_in_the_queue(sqs_app: App) -> None:
    _ran.clear()
    sqs_app.dispatch_many([AwaitsSomething(n=n) for n in range(7)])
    options = WorkerOptions(sleep=1, event_loop=True, concurrency=3, max_jobs=4, max_time=30)
    assert Worker(sqs_app, options).run(install_signals=False) == 0
    assert len(_ran) == 4
    left = drain(queue_url(sqs_app, "default"))
    assert len(left) == 3
    assert dead_letters(sqs_app) == []


class RaisesItsOwnTimeout(Job, name="handoffs.own-timeout-error"):
    tries = 1
    fail_on_timeout = True

    async def handle(self) -> None:
        raise TimeoutError("the partner API did not answer")


class RaisesCancelled(Job, name="handoffs.stray-cancel"):
    tries = 1

    async def handle(self) -> None:
        raise asyncio.CancelledError()  # as a cancelled inner task's result re-raised would


def test_errors_a_job_raises_itself_are_its_own_not_the_workers_timeout_or_cancel(sqs_app: App) -> None:
    """A TimeoutError from the job's own client is not "ran past its timeout" (the thread worker never said
    it was), and a CancelledError nobody asked for is judged as the job's error, not left unsettled."""
    RaisesItsOwnTimeout().dispatch()
    RaisesCancelled().dispatch()
    started = time.monotonic()
    assert _work(sqs_app) == 0
    assert time.monotonic() - started < 15, "the worker waited for a job that had ended"
    letters = {letter["attrs"]["sqsjobs.job"]: letter["attrs"] for letter in dead_letters(sqs_app)}
    assert letters["handoffs.own-timeout-error"]["sqsjobs.error_type"] == "TimeoutError"
    assert letters["handoffs.own-timeout-error"]["sqsjobs.reason"] == "tries_exhausted"
    assert letters["handoffs.stray-cancel"]["sqsjobs.error_type"] == "StrayCancellationError"


class ExitsAsync(Job, name="handoffs.exits-async"):
    async def handle(self) -> None:
        raise SystemExit(3)


class ExitsSync(Job, name="handoffs.exits-sync"):
    def handle(self) -> None:
        raise SystemExit(3)


def test_sys_exit_inside_a_job_is_a_crash_the_worker_outlives(sqs_app: App) -> None:
    """As on the thread worker: the message returns after its visibility timeout (not to the DLQ), and the
    worker neither dies nor waits for ever for a message nobody will settle."""
    _ran.clear()
    ExitsAsync().dispatch()
    ExitsSync().dispatch()
    sqs_app.dispatch_many([AwaitsSomething(n=n) for n in range(3)])
    started = time.monotonic()
    options = WorkerOptions(sleep=1, event_loop=True, concurrency=2, max_jobs=5, max_time=30)
    assert Worker(sqs_app, options).run(install_signals=False) == 0
    assert time.monotonic() - started < 15, "the worker waited for messages nobody would settle"
    assert sorted(_ran) == ["async-0", "async-1", "async-2"]
    assert dead_letters(sqs_app) == []
    counts = sqs_app.connection.counts("default")
    assert counts["ApproximateNumberOfMessagesNotVisible"] == 2, "both wait out their visibility timeout"


_seen: contextvars.ContextVar[str] = contextvars.ContextVar("handoffs_seen", default="clean")
_saw: list[str] = []


class SetsAVariable(Job, name="handoffs.sets-variable"):
    def handle(self) -> None:
        _seen.set("left by the plain job before")


class ReadsTheVariable(Job, name="handoffs.reads-variable"):
    async def handle(self) -> None:
        _saw.append(_seen.get())


def test_a_coroutine_job_starts_from_the_loops_context_not_a_pool_threads(sqs_app: App) -> None:
    _saw.clear()
    sqs_app.dispatch_many([SetsAVariable(), ReadsTheVariable()])
    assert _work(sqs_app, concurrency=1) == 0
    assert _saw == ["clean"]


class HoldsTheLoop(Job, name="handoffs.holds-loop"):
    async def handle(self) -> None:
        time.sleep(0.5)  # blocks the loop (what a job must not do): the pool goes on beginning jobs meanwhile
        _record("held")


class SetsAVariableAsync(Job, name="handoffs.sets-variable-async"):
    n: int

    async def handle(self) -> None:
        _seen.set(f"left by async job {self.n}")
        await asyncio.sleep(0)


def test_jobs_handed_over_while_the_loop_is_busy_start_together_each_once_in_a_context_of_its_own(
    sqs_app: App,
) -> None:
    """Pool threads that begin coroutine jobs while the loop has not turned add to one wake-up; the loop
    then starts them all, each once, each in its own copy of the loop's context."""
    _ran.clear()
    _saw.clear()
    HoldsTheLoop().dispatch()
    sqs_app.dispatch_many(
        [AwaitsSomething(n=n) for n in range(6)]
        + [SetsAVariableAsync(n=n) for n in range(3)]
        + [ReadsTheVariable() for _ in range(3)]
    )
    assert _work(sqs_app, concurrency=8) == 0
    assert sorted(_ran) == sorted(["held", *(f"async-{n}" for n in range(6))])
    assert _saw == ["clean"] * 3
    assert dead_letters(sqs_app) == []
    assert drain(queue_url(sqs_app, "default")) == []


class AsyncUnique(Job, name="handoffs.async-unique"):
    unique_for = 600

    async def handle(self) -> None:
        await asyncio.sleep(0)
        _record("unique")


class AsyncKeyed(Job, name="handoffs.async-keyed"):
    order: int

    def idempotency_key(self) -> str | None:
        return f"order-{self.order}"

    async def handle(self) -> None:
        await asyncio.sleep(0)
        _record(f"keyed-{self.order}")


def test_jobs_whose_features_call_the_store_are_begun_and_finished_in_the_pool_each_once(memory_app: App) -> None:
    """Unique locks, idempotency keys and chains call the store or SQS on the way in and out, which the loop
    must never wait for: such jobs take the pool's way and keep every promise of their feature."""
    from sqsjobs.chains import chain

    _ran.clear()
    assert AsyncUnique().dispatch().queued
    assert not AsyncUnique().dispatch().queued, "the lock refuses a copy while the first is queued"
    AsyncKeyed(order=1).dispatch()
    chain([AwaitsSomething(n=1), AwaitsSomething(n=2), PlainJob(n=3)]).dispatch()
    assert _work(memory_app, concurrency=4) == 0
    assert sorted(_ran) == sorted(["unique", "keyed-1", "async-1", "async-2", "sync-3"])
    assert _ran.index("async-1") < _ran.index("async-2") < _ran.index("sync-3"), "a chain runs in its order"
    assert AsyncUnique().dispatch().queued, "the lock was released when the job ran"
    AsyncKeyed(order=1).dispatch()
    assert _work(memory_app, concurrency=4) == 0
    assert sorted(_ran).count("keyed-1") == 1, "a completed key is not run again"
    assert sorted(_ran).count("unique") == 2


def test_a_job_begun_by_the_loop_after_another_does_not_inherit_its_context(memory_app: App) -> None:
    """One slot: the loop settles a job and begins the next in the same turn; the next still starts from
    a clean copy of the loop's context, not the one the job before left behind."""
    _saw.clear()
    memory_app.dispatch_many([SetsAVariableAsync(n=1), ReadsTheVariable(), SetsAVariableAsync(n=2), ReadsTheVariable()])
    assert _work(memory_app, concurrency=1, prefetch=3) == 0
    assert _saw == ["clean", "clean"]


class BrokenMiddleware(Job, name="handoffs.broken-middleware"):
    async def handle(self) -> None:
        _record("broken")

    def middleware(self) -> list[object]:
        raise RuntimeError("middleware() is broken")


def test_a_job_whose_middleware_cannot_be_listed_is_a_crash_and_the_rest_run(memory_app: App) -> None:
    """Whether a job runs on the loop asks its `middleware()`; one that raises is settled as a crash (its
    message returns after the visibility timeout), never lost with the messages handed over beside it."""
    _ran.clear()
    memory_app.dispatch_many([BrokenMiddleware(), AwaitsSomething(n=1), AwaitsSomething(n=2), PlainJob(n=3)])
    options = WorkerOptions(sleep=1, event_loop=True, concurrency=1, prefetch=4, max_jobs=4, max_time=30)
    started = time.monotonic()
    assert Worker(memory_app, options).run(install_signals=False) == 0
    assert time.monotonic() - started < 15, "the worker waited for a message nobody would settle"
    assert sorted(_ran) == ["async-1", "async-2", "sync-3"]


def test_plain_coroutine_jobs_are_decided_on_the_loop_and_featured_ones_in_the_pool(memory_app: App) -> None:
    """Where each job was decided (the thread its `processed` event was heard on): a plain coroutine job
    on the loop, a job whose unique lock must be released in the pool, each exactly once."""
    heard: list[tuple[str, str]] = []
    memory_app.events.listen(lambda e: heard.append((e.job_name, threading.current_thread().name)), kinds=["processed"])
    _ran.clear()
    AsyncUnique().dispatch()
    memory_app.dispatch_many([AwaitsSomething(n=n) for n in range(4)])
    assert _work(memory_app, concurrency=2) == 0
    where = {
        name: [thread for job, thread in heard if job == name] for name in ("handoffs.awaits", "handoffs.async-unique")
    }
    assert len(where["handoffs.awaits"]) == 4 and set(where["handoffs.awaits"]) == {"sqsjobs-loop"}
    (unique_thread,) = where["handoffs.async-unique"]
    assert unique_thread.startswith("sqsjobs-pool")


_bound: contextvars.ContextVar[str] = contextvars.ContextVar("handoffs_bound", default="unbound")


class ReadsWhatWasBound(Job, name="handoffs.reads-bound"):
    n: int

    def handle(self) -> None:
        _saw.append(f"sync-{self.n}:{_bound.get()}")


class ReadsWhatWasBoundAsync(Job, name="handoffs.reads-bound-async"):
    n: int

    async def handle(self) -> None:
        _saw.append(f"async-{self.n}:{_bound.get()}")


def test_what_a_processing_listener_binds_reaches_that_jobs_handle_and_no_other(memory_app: App) -> None:
    """A listener that binds a request id for a job's log lines (structlog's `bind_contextvars`), as on the
    thread worker: each job sees its own, plain or coroutine, wherever it was begun."""
    _saw.clear()
    memory_app.events.listen(lambda e: _bound.set(f"bound-{e.job_id}"), kinds=["processing"])
    jobs = [ReadsWhatWasBound(n=n) for n in range(3)] + [ReadsWhatWasBoundAsync(n=n) for n in range(3)]
    dispatched = {f"{'async' if 'async' in type(j).job_name else 'sync'}-{j.n}": j.dispatch().job_id for j in jobs}
    assert _work(memory_app, concurrency=2) == 0
    assert sorted(_saw) == sorted(f"{name}:bound-{job_id}" for name, job_id in dispatched.items())


def test_a_held_message_whose_queue_was_paused_starts_once_it_resumes_without_another_receive(
    sqs_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing tells the loop that a queue resumed: it looks at the held messages again on its own, every
    `Lanes.look_again_s`, as the thread worker's waiting job loops do."""
    monkeypatch.setattr(Lanes, "look_again_s", 0.05)
    _ran.clear()
    AwaitsSomething(n=1).dispatch()
    worker = Worker(sqs_app, WorkerOptions(queues=["default"], event_loop=True, concurrency=1))
    jobs = worker._jobs
    assert isinstance(jobs, AsyncJobs)
    received = sqs_app.connection.receive("default", 1, 1, visibility_timeout=60)
    assert len(received) == 1
    worker._heartbeat.track(received, 60)
    worker._control.paused = frozenset({"default"})  # paused during the receive's long poll
    jobs.start()
    try:
        wait_for(lambda: jobs._loop is not None, timeout=5, what="the loop to run")
        assert jobs._loop is not None
        assert worker._lanes.add(received)
        # The loop has looked at it (told by the lanes) once this runs on it, and left it held.
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), jobs._loop).result(5)
        assert _ran == [] and worker._lanes.held == 1
        worker._control.paused = frozenset()
        wait_for(lambda: _ran == ["async-1"], timeout=5, what="the held message to start after the resume")
    finally:
        worker._control.stop("the test is over")
        jobs.join(lambda thread: False)
        worker._deleter.stop()
    assert drain(queue_url(sqs_app, "default")) == []


def test_received_messages_start_and_a_stop_ends_the_loop_when_told_not_at_its_next_look(
    sqs_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lanes tell the loop of each receive and of the stop: with its own look pushed out to 30 s, the
    jobs still run and the worker still stops at once."""
    monkeypatch.setattr(Lanes, "look_again_s", 30.0)
    _ran.clear()
    sqs_app.dispatch_many([AwaitsSomething(n=n) for n in range(3)])
    started = time.monotonic()
    assert _work(sqs_app, concurrency=2) == 0
    assert sorted(_ran) == ["async-0", "async-1", "async-2"]
    assert time.monotonic() - started < 20, "the loop waited for its own look instead of being told"
    assert drain(queue_url(sqs_app, "default")) == []

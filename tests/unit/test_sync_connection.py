"""The sync connection: jobs dispatched from async code, and decisions with the meaning they have on a queue."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sqsjobs import App, Job, NeverRanError, policy
from sqsjobs.connections.base import Connection, OutgoingMessage, ReceivedMessage
from sqsjobs.connections.inline import SyncConnection
from sqsjobs.decisions import Ack, Decision, Fail, Postpone, Release
from sqsjobs.middleware import Middleware, Next

Seen = list[tuple[str, int, asyncio.AbstractEventLoop]]


def test_async_jobs_dispatched_from_a_running_loop_run_on_a_loop_of_their_own() -> None:
    """A FastAPI endpoint or an async test dispatching on the sync connection: every way of dispatching works."""
    seen: Seen = []

    class Notify(Job, name="sync-conn.notify"):
        via: str

        async def handle(self) -> None:
            await asyncio.sleep(0)
            seen.append((self.via, self.attempts, asyncio.get_running_loop()))

    async def endpoint() -> asyncio.AbstractEventLoop:
        await Notify(via="dispatch_async").dispatch_async()
        Notify(via="dispatch").dispatch()
        Notify(via="dispatch_sync").dispatch_sync()
        return asyncio.get_running_loop()

    with App(connection="sync").activate():
        caller = asyncio.run(endpoint())
    expected = [("dispatch_async", 1), ("dispatch", 1), ("dispatch_sync", 1)]
    assert [(via, attempts) for via, attempts, _ in seen] == expected
    assert all(loop is not caller for _, _, loop in seen), "the caller's loop is never re-entered"


def test_a_job_dispatched_from_an_async_job_runs_after_it_with_the_same_app() -> None:
    ran: list[str] = []

    class Child(Job, name="sync-conn.child"):
        async def handle(self) -> None:
            ran.append("child")

    class Parent(Job, name="sync-conn.parent"):
        async def handle(self) -> None:
            await Child().dispatch_async()
            ran.append("parent")

    async def endpoint() -> None:
        await Parent().dispatch_async()

    with App(connection="sync").activate():
        asyncio.run(endpoint())
    assert ran == ["parent", "child"]


def test_a_job_given_up_raises_its_error_to_an_async_caller_of_dispatch_sync() -> None:
    class Broken(Job, name="sync-conn.broken"):
        tries = 2
        backoff = 0

        async def handle(self) -> None:
            raise ValueError("no such invoice")

    async def endpoint() -> None:
        await asyncio.sleep(0)
        Broken().dispatch_sync()

    with App(connection="sync").activate(), pytest.raises(ValueError, match="no such invoice"):
        asyncio.run(endpoint())


def test_outside_a_loop_jobs_run_on_the_callers_thread() -> None:
    """No thread is started where none is needed: thread-locals and the caller's stack stay as they were."""
    threads: list[threading.Thread] = []

    class Here(Job, name="sync-conn.here"):
        def handle(self) -> None:
            threads.append(threading.current_thread())

    with App(connection="sync").activate():
        Here().dispatch()
    assert threads == [threading.current_thread()]


def test_a_job_held_back_before_it_ran_does_not_spend_a_try() -> None:
    """A middleware that does not call `next()` (a rate limit, an overlap lock) postpones; only runs count."""
    calls: list[str] = []
    ran: list[int] = []

    class EveryOtherTime(Middleware):
        def handle(self, job: Job, next: Next) -> object:
            calls.append("held" if len(calls) % 2 == 0 else "ran")
            if calls[-1] == "held":
                job.release(5)
                return None
            return next()

    class Guarded(Job, name="sync-conn.guarded"):
        tries = 2
        backoff = 0

        def middleware(self) -> list[object]:
            return [EveryOtherTime()]

        def handle(self) -> None:
            ran.append(self.attempts)
            if self.attempts == 1:
                raise RuntimeError("the first run fails")

    with App(connection="sync").activate():
        Guarded().dispatch()
    assert calls == ["held", "ran", "held", "ran"]
    assert ran == [1, 2], "held back twice, run twice: two tries, the second one succeeds"


# -- decisions, with a stand-in for the runner: what each one means on the sync connection ------------


class Scripted:
    """Answers each delivery with the next decision, and records the attempt the runner would see."""

    def __init__(self, *decisions: Decision, then: Decision | None = None) -> None:
        self.decisions = list(decisions)
        self.then = then
        self.attempts: list[int] = []

    def __call__(self, message: ReceivedMessage, via: Connection) -> Decision:
        self.attempts.append(policy.attempt(message.receive_count, message.attributes))
        if self.decisions:
            return self.decisions.pop(0)
        assert self.then is not None, "ran once too often"
        return self.then


def _send(connection: SyncConnection) -> None:
    connection.send("default", OutgoingMessage(body='{"job": "x"}'))


def test_a_postponed_job_runs_again_without_spending_a_try_and_a_release_spends_one() -> None:
    run = Scripted(Postpone(30, "rate limited"), Release(0), Postpone(5, "overlap"), Release(0), Ack())
    _send(SyncConnection(run))
    assert run.attempts == [1, 1, 2, 2, 3]


def test_a_job_that_is_postponed_forever_ends_with_an_error_saying_why() -> None:
    run = Scripted(then=Postpone(60, "rate limited: 1 per minute"))
    with pytest.raises(NeverRanError, match=r"did not get to run \(last: rate limited: 1 per minute\)"):
        _send(SyncConnection(run, max_postpones=3))
    assert set(run.attempts) == {1}, "never a try spent"


def test_a_fail_ends_the_job_at_once() -> None:
    run = Scripted(Release(0), Fail("failed_by_job", "JobFailedError"))
    connection = SyncConnection(run)
    _send(connection)
    assert run.attempts == [1, 2]
    assert isinstance(connection.last_decision, Fail)
    assert connection.dead_letters("default") == [], "the runner writes the DLQ copy; the connection adds none"

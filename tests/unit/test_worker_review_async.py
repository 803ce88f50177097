"""`--async` and coroutine jobs: a release inside `async def handle` spends a try, and a coroutine
job that blocks the loop or swallows its cancellation makes the worker exit 1, as a stuck thread does.

Before, a coroutine job without middleware was awaited without being marked as run, so its
`self.release()` was judged "held back before it ran": Postpone(0), no try spent, a hot loop for
ever. And the watchdog only watched threads, so a coroutine job past its timeout was never noticed:
the worker waited for it (or for a loop it blocked) and exited 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import ClassVar

import pytest

from sqsjobs import App
from sqsjobs.job_class import Job
from sqsjobs.worker import Worker, WorkerOptions
from sqsjobs.worker.control import EXIT_WEDGED
from tests.helpers import dead_letters


class AsyncReleaser(Job, name="worker-review.async-releaser"):
    tries = 2
    attempts_seen: ClassVar[list[int]] = []

    async def handle(self) -> None:
        AsyncReleaser.attempts_seen.append(self.attempts)
        self.release(0)


def test_a_release_inside_async_handle_spends_a_try(sqs_app: App) -> None:
    AsyncReleaser.attempts_seen.clear()
    AsyncReleaser().dispatch()
    options = WorkerOptions(sleep=1, event_loop=True, stop_when_empty=True, max_time=15)
    assert Worker(sqs_app, options).run(install_signals=False) == 0
    assert AsyncReleaser.attempts_seen == [1, 2], "each run is an attempt; the third delivery is not run"
    (letter,) = dead_letters(sqs_app)
    assert letter["attrs"]["sqsjobs.reason"] == "tries_exhausted"


#: Lets the stuck jobs below go once the test has seen the worker give up on them (they give up
#: by themselves after 6 s, so a worker that waits for them fails the test instead of hanging it).
_let_go = threading.Event()


class BlocksTheLoop(Job, name="worker-review.blocks-the-loop"):
    timeout = 1
    entered: ClassVar[threading.Event] = threading.Event()

    async def handle(self) -> None:
        BlocksTheLoop.entered.set()
        _let_go.wait(6)  # a blocking call inside `async def`: the loop cannot cancel it


class SwallowsCancellation(Job, name="worker-review.swallows-cancellation"):
    timeout = 1
    entered: ClassVar[threading.Event] = threading.Event()

    async def handle(self) -> None:
        SwallowsCancellation.entered.set()
        deadline = time.monotonic() + 6
        while not _let_go.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)


@pytest.mark.parametrize("job", [BlocksTheLoop, SwallowsCancellation])
def test_a_coroutine_job_stuck_past_its_timeout_makes_the_async_worker_exit_1(
    sqs_app: App, job: type[BlocksTheLoop] | type[SwallowsCancellation]
) -> None:
    _let_go.clear()
    job.entered.clear()
    job().dispatch()
    worker = Worker(sqs_app, WorkerOptions(sleep=1, event_loop=True, timeout_grace=0.5, max_time=8))
    started = time.monotonic()
    try:
        code = worker.run(install_signals=False)
        took = time.monotonic() - started
    finally:
        _let_go.set()  # the stuck job returns; its loop thread (a daemon) ends
        for thread in threading.enumerate():
            if thread.name == "sqsjobs-loop":
                thread.join(5)
    assert job.entered.is_set()
    assert code == EXIT_WEDGED
    assert job.job_name in worker.stop_reason
    assert took < 5, f"the worker waited {took:.1f}s for a job it had given up on"
    assert dead_letters(sqs_app) == []

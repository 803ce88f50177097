"""`--async` notices a sync job stuck past its timeout, as the thread worker does, and exits 1.

Before, the job's timeout guard ran on the loop thread, so the job's own thread was never seen
as stuck: the worker hung, and the heartbeat kept its message hidden for up to 12 hours.
"""

from __future__ import annotations

import threading
import time
from typing import ClassVar

from sqsjobs import App, JobTimeoutError, aws
from sqsjobs.job_class import Job
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import dead_letters, drain, queue_url, wait_for, work_for


class StubbornSync(Job, name="async-worker.stubborn-sync"):
    """Swallows the timeout interrupt, as code blocked outside Python effectively does."""

    timeout = 1
    ignored: ClassVar[threading.Event] = threading.Event()

    def handle(self) -> None:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                work_for(0.05)
            except JobTimeoutError:
                StubbornSync.ignored.set()


class Nap(Job, name="async-worker.nap"):
    done: ClassVar[list[str]] = []

    async def handle(self) -> None:
        Nap.done.append(self.job_id or "")


def test_a_sync_job_that_ignores_its_timeout_makes_the_async_worker_exit_1(sqs_app: App) -> None:
    aws.client("sqs").set_queue_attributes(
        QueueUrl=queue_url(sqs_app, "default"), Attributes={"VisibilityTimeout": "5"}
    )
    StubbornSync.ignored.clear()
    StubbornSync().dispatch()
    worker = Worker(sqs_app, WorkerOptions(sleep=1, timeout_grace=1, event_loop=True))
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run(install_signals=False)), daemon=True)
    thread.start()
    wait_for(lambda: not thread.is_alive(), timeout=30, what="the async worker to give up on the stuck job")
    assert codes == [1]
    assert StubbornSync.ignored.is_set()
    # Its message was not deleted, nor extended any more: it returns after the visibility timeout.
    assert dead_letters(sqs_app) == []
    assert wait_for(lambda: drain(queue_url(sqs_app, "default")), timeout=10, what="the message to return")


def test_the_async_worker_still_runs_async_jobs_and_exits_0(sqs_app: App) -> None:
    Nap.done.clear()
    Nap.dispatch_many([Nap() for _ in range(3)])
    options = WorkerOptions(sleep=1, concurrency=3, event_loop=True, stop_when_empty=True)
    assert Worker(sqs_app, options).run(install_signals=False) == 0
    assert len(Nap.done) == 3

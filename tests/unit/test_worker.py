"""The poller against in-process moto: receive, run, delete, heartbeat, timeouts, limits, stop."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import pytest

from sqsjobs import App, ConfigurationError, Job, JobTimeoutError, aws
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, dead_letters, drain, queue_url, sqs_requests, wait_for, work_for


class Log(Job, abstract=True):
    events: ClassVar[list[tuple[str, str, int]]] = []

    def note(self, what: str) -> None:
        Log.events.append((what, type(self).job_name, self.attempts))


class Quick(Log, name="worker.quick"):
    n: int = 0

    def handle(self) -> None:
        self.note(f"run {self.n}")


class QuickHigh(Quick, name="worker.quick-high"):
    queue = "high"


class Slow(Log, name="worker.slow"):
    seconds: float

    def handle(self) -> None:
        self.note("start")
        work_for(self.seconds)
        self.note("end")


class Hangs(Log, name="worker.hangs"):
    timeout = 1
    tries = 1

    def handle(self) -> None:
        self.note("start")
        work_for(10)
        self.note("end")


class Stubborn(Log, name="worker.stubborn"):
    """Swallows the timeout interrupt, as code blocked outside Python effectively does."""

    timeout = 1

    def handle(self) -> None:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                work_for(0.05)
            except JobTimeoutError:
                self.note("ignored timeout")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Log.events.clear()


def run(app: App, **options: Any) -> int:
    options.setdefault("sleep", 1)
    options.setdefault("stop_when_empty", True)
    return Worker(app, WorkerOptions(**options)).run(install_signals=False)


def set_visibility(app: App, seconds: int) -> None:
    url = queue_url(app, "default")
    aws.client("sqs").set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": str(seconds)})


def test_each_job_runs_once_and_is_deleted_in_batches(sqs_app: App) -> None:
    deletes = sqs_requests("DeleteMessageBatch")
    single = sqs_requests("DeleteMessage")
    Quick.dispatch_many([Quick(n=i) for i in range(25)])
    assert run(sqs_app, concurrency=4) == 0
    assert sorted(e[0] for e in Log.events) == sorted(f"run {i}" for i in range(25))
    assert sum(len(call["Entries"]) for call in deletes) == 25 and single == []
    assert not any(counts(sqs_app, "default").values())


def test_strict_priority_drains_high_before_default(sqs_app: App) -> None:
    for i in range(3):
        Quick(n=i).dispatch()
    for i in range(3):
        QuickHigh(n=i).dispatch()
    assert run(sqs_app, queues=["high", "default"]) == 0
    assert [name for _, name, _ in Log.events] == ["worker.quick-high"] * 3 + ["worker.quick"] * 3


def test_a_job_past_its_timeout_is_interrupted_and_counted_as_a_failed_try(sqs_app: App) -> None:
    Hangs().dispatch()
    Quick(n=1).dispatch()
    assert run(sqs_app, concurrency=2) == 0
    assert ("end", "worker.hangs", 1) not in Log.events
    assert ("run 1", "worker.quick", 1) in Log.events
    (letter,) = dead_letters(sqs_app)
    assert letter["attrs"]["sqsjobs.error_type"] == "JobTimeoutError"
    assert "timeout of 1s" in letter["attrs"]["sqsjobs.error"]


def test_a_job_that_cannot_be_interrupted_stops_the_worker_with_exit_1(sqs_app: App) -> None:
    aws.client("sqs").set_queue_attributes(
        QueueUrl=queue_url(sqs_app, "default"), Attributes={"VisibilityTimeout": "5"}
    )
    Stubborn().dispatch()
    code = Worker(sqs_app, WorkerOptions(sleep=1, timeout_grace=1)).run(install_signals=False)
    assert code == 1
    assert ("ignored timeout", "worker.stubborn", 1) in Log.events
    # Its message was not deleted: it returns after the visibility timeout and counts an attempt.
    assert dead_letters(sqs_app) == []
    assert wait_for(lambda: drain(queue_url(sqs_app, "default")), timeout=10, what="the message to return")


def test_timeout_grace_is_a_work_option(sqs_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/executors.md named `--timeout-grace`, but `sqsjobs work` had no such option. The stubborn job
    ignores its 1 s timeout and ends by itself after 8 s: inside the default grace (10 s) the worker
    would exit 0; with a second of grace it gives up on the job and exits 1."""
    from typer.testing import CliRunner

    from sqsjobs.cli import cli

    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", sqs_app.settings.queue_prefix)
    Stubborn().dispatch()
    result = CliRunner().invoke(cli, ["work", "-q", "default", "--sleep", "1", "--once", "--timeout-grace", "1"])
    assert result.exit_code == 1, result.output
    assert ("ignored timeout", "worker.stubborn", 1) in Log.events


def test_max_jobs_stops_the_worker_and_leaves_the_rest_queued(sqs_app: App) -> None:
    Quick.dispatch_many([Quick(n=i) for i in range(5)])
    assert run(sqs_app, max_jobs=2, stop_when_empty=False) == 0
    assert len(Log.events) == 2
    assert len(drain(queue_url(sqs_app, "default"))) == 3


def test_memory_limit_stops_after_the_current_job_with_exit_12(sqs_app: App) -> None:
    Quick.dispatch_many([Quick(n=i) for i in range(3)])
    assert run(sqs_app, memory_mb=1, stop_when_empty=False) == 12
    assert len(Log.events) == 1


def test_stopping_returns_held_messages_at_once_and_finishes_running_jobs(sqs_app: App) -> None:
    Slow(seconds=1.5).dispatch()
    wait_for(lambda: counts(sqs_app, "default")["ApproximateNumberOfMessages"] == 1)
    Quick.dispatch_many([Quick(n=i) for i in range(4)])
    worker = Worker(sqs_app, WorkerOptions(sleep=1, concurrency=1, prefetch=4))
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()
    wait_for(lambda: ("start", "worker.slow", 1) in Log.events, what="the slow job to start")
    wait_for(lambda: worker.held == 4, what="the worker to hold four messages")
    worker.stop("test")
    # Held messages are visible again right away, long before the 30 s visibility timeout.
    returned = wait_for(lambda: drain(queue_url(sqs_app, "default")), timeout=3, what="held messages to return")
    thread.join(10)
    assert len(returned) == 4
    assert worker.exit_code == 0
    assert [e[0] for e in Log.events] == ["start", "end"]


def test_a_queue_without_a_dlq_is_refused_at_start(moto: None, prefix: str) -> None:
    aws.client("sqs").create_queue(QueueName=f"{prefix}default")
    app = App(connection="sqs", queue_prefix=prefix)
    with pytest.raises(ConfigurationError, match="no dead-letter queue"):
        Worker(app, WorkerOptions(sleep=1)).run(install_signals=False)


def test_bad_messages_never_stop_the_worker(sqs_app: App) -> None:
    sqs = aws.client("sqs")
    for body in ("garbage", '{"v": 1}', "[]"):
        sqs.send_message(QueueUrl=queue_url(sqs_app, "default"), MessageBody=body)
    Quick(n=9).dispatch()
    assert run(sqs_app) == 0
    assert ("run 9", "worker.quick", 1) in Log.events
    assert sorted(m["attrs"]["sqsjobs.reason"] for m in dead_letters(sqs_app)) == ["malformed"] * 3

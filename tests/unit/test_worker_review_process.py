"""`--executor process` when the job processes cannot run a job: the worker's setup, not the job.

Before, a child that could not start, or that did not know the job (its module is not in
SQSJOBS_APP), raised a ConfigurationError the runner counted as the job's failure: every message
spent a try, and a `tries = 1` job went to the DLQ as `tries_exhausted` without ever running,
while the worker went on doing the same to the next. Now the message is put back unspent and the
worker stops with exit 2 (configuration), as `sqsjobs work` does for any other setup error.

And `Worker.poll_once` ran jobs on its own thread even with `--executor process`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import ClassVar

import pytest

from sqsjobs import App, Job
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions, poller
from sqsjobs.worker.control import EXIT_CONFIG
from tests.helpers import dead_letters
from tests.unit import executor_jobs


class UnknownToChildren(Job, name="worker-review.unknown-to-children"):
    """Defined here, so a child importing only SQSJOBS_APP's modules does not know it."""

    tries = 1
    runs: ClassVar[list[int]] = []

    def handle(self) -> None:
        UnknownToChildren.runs.append(self.attempts)


@pytest.mark.parametrize(
    ("modules", "said"),
    [
        ("tests.unit.executor_jobs", "know no job named"),  # children start, but do not know the job
        ("tests.unit.no_such_module", "could not start"),  # children cannot start at all
    ],
)
def test_a_job_the_processes_cannot_run_keeps_its_try_and_the_worker_exits_2(
    moto: None, prefix: str, modules: str, said: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(poller, "CONFIG_RETRY_S", 0)  # 30 s in production; the test runs it again at once
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, app=modules)
    provision(app, ["default"], table=False, bucket=False)
    UnknownToChildren.runs.clear()
    with app.activate(), caplog.at_level(logging.ERROR, "sqsjobs.worker"):
        UnknownToChildren().dispatch()
        options = WorkerOptions(sleep=1, executor="process", max_time=30)
        worker = Worker(app, options)
        assert worker.run(install_signals=False) == EXIT_CONFIG
        assert "worker-review.unknown-to-children" in worker.stop_reason
        assert said in caplog.text and "SQSJOBS_APP" in caplog.text
        assert dead_letters(app) == [], "the job never ran: no try spent, nothing in the DLQ"
        assert UnknownToChildren.runs == []

        # A worker that can run it (here: on its threads) runs it as its first attempt.
        options = WorkerOptions(sleep=1, stop_when_empty=True, max_time=20)
        assert Worker(app, options).run(install_signals=False) == 0
    assert UnknownToChildren.runs == [1]
    assert dead_letters(app) == []


def test_poll_once_runs_jobs_in_a_process_with_the_process_executor(tmp_path: Path) -> None:
    app = App(connection="memory", app="tests.unit.executor_jobs")
    out = tmp_path / "echo.json"
    with app.activate():
        executor_jobs.Echo(out=str(out)).dispatch()
        worker = Worker(app, WorkerOptions(queues=["default"], executor="process"))
        try:
            assert worker.poll_once() == 1
        finally:
            if worker._executor is not None:
                worker._executor.close()
    assert json.loads(out.read_text())["pid"] != os.getpid(), "it ran in a child process"

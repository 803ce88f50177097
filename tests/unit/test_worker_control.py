"""`sqsjobs workers`, `restart`, `pause`, `continue` against running pollers (threads here; the end-to-end
test with worker subprocesses is tests/e2e/test_worker_control_e2e.py), in-process moto, strict layer."""

from __future__ import annotations

import io
import json
import logging
import threading
import zipfile
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner, Result

from sqsjobs import App, Job, aws
from sqsjobs.cli import cli
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, queue_url, wait_for

runner = CliRunner()


class Gate(Job, name="control.gate"):
    """Runs until the test opens the gate."""

    opened: ClassVar[threading.Event] = threading.Event()
    ran: ClassVar[list[int]] = []
    n: int = 0

    def handle(self) -> None:
        Gate.opened.wait(20)
        Gate.ran.append(self.n)


class Quick(Job, name="control.quick"):
    ran: ClassVar[list[int]] = []
    n: int = 0

    def handle(self) -> None:
        Quick.ran.append(self.n)


@pytest.fixture(autouse=True)
def _reset() -> None:
    Gate.opened.clear()
    Gate.ran.clear()
    Quick.ran.clear()


@pytest.fixture
def app(moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """Queues and the table; the CLI builds its own App from the same environment, as for a user."""
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("SQSJOBS_TABLE", f"{prefix}table")
    monkeypatch.setenv("SQSJOBS_WORKER_BEAT", "0.2")
    application = App(connection="sqs", visibility_timeout=30)
    provision(application, ["default"], table=True, bucket=False)
    with application.activate():
        yield application


def cli_run(*args: str) -> Result:
    # The CLI points the sqsjobs loggers at its own (captured, then closed) output; the worker threads of
    # these tests keep logging after it returns, so the loggers are put back as they were.
    logger = logging.getLogger("sqsjobs")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    try:
        result = runner.invoke(cli, list(args), terminal_width=200)
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]
    assert result.exit_code == 0, result.output
    return result


def live_workers() -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = json.loads(cli_run("workers", "--json").stdout)["workers"]
    return workers


class Running:
    """A worker on its own thread, as `sqsjobs work` would run it (no stop when empty)."""

    def __init__(self, app: App) -> None:
        self.worker = Worker(app, WorkerOptions(queues=["default"], sleep=1))
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.worker.run(install_signals=False)

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(30)


def test_workers_lists_a_live_poller_with_its_running_job_and_forgets_it_when_it_stops(app: App) -> None:
    Gate(n=1).dispatch()
    running = Running(app)
    try:
        seen = wait_for(lambda: [w for w in live_workers() if w["current"] == ["control.gate"]], what="a beat")
        (worker,) = seen
        assert worker["queues"] == ["default"] and worker["status"] == "running" and worker["jobs_done"] == 0
        Gate.opened.set()
        wait_for(lambda: [w for w in live_workers() if w["jobs_done"] == 1 and w["current"] == []], what="done")
    finally:
        Gate.opened.set()
        running.stop()
    assert live_workers() == []


def test_restart_lets_the_running_job_finish_then_the_worker_exits_0(app: App) -> None:
    Gate(n=1).dispatch()
    running = Running(app)
    wait_for(lambda: [w for w in live_workers() if w["current"] == ["control.gate"]], what="the job running")
    out = cli_run("restart").stdout
    assert "Restart requested: 1 live worker(s)" in out
    wait_for(lambda: [w for w in live_workers() if w["status"] == "stopping"], what="the worker stopping")
    assert running.thread.is_alive()  # still finishing its job
    Gate.opened.set()
    running.thread.join(30)
    assert running.code == 0 and running.worker.stop_reason == "restart requested"
    assert Gate.ran == [1]
    assert set(counts(app, "default").values()) == {0}  # deleted, not handed back


def test_a_worker_started_after_a_restart_request_keeps_working(app: App) -> None:
    cli_run("restart")
    running = Running(app)
    try:
        Quick(n=1).dispatch()
        wait_for(lambda: Quick.ran == [1], what="the job")
        # Several beats later it still runs: the standing request predates it.
        wait_for(lambda: [w for w in live_workers() if w["last_seen"] > w["started_at"] + 1], what="beats")
        assert running.thread.is_alive()
        Quick(n=2).dispatch()
        wait_for(lambda: Quick.ran == [1, 2], what="a second job")
    finally:
        running.stop()
    assert running.worker.stop_reason == "stop requested"


def test_pause_stops_taking_jobs_and_continue_resumes(app: App) -> None:
    running = Running(app)
    try:
        wait_for(live_workers, what="the worker's first beat")
        out = cli_run("pause", "default").stdout
        assert "Paused default" in out
        wait_for(lambda: [w for w in live_workers() if w["paused"] == ["default"]], what="the pause seen")
        Quick(n=1).dispatch()
        # It stays on the queue, untouched, across several beats.
        wait_for(lambda: [w for w in live_workers() if w["last_seen"] > w["started_at"] + 1.5], what="beats")
        assert Quick.ran == [] and counts(app, "default")["ApproximateNumberOfMessages"] == 1
        assert "Paused queues: default" in cli_run("workers").stdout
        assert "Continued default." in cli_run("continue", "default").stdout
        wait_for(lambda: Quick.ran == [1], what="the job after continue")
    finally:
        running.stop()
    assert "default was not paused." in cli_run("continue", "default").stdout


def test_pausing_a_queue_nobody_has_is_an_error_naming_it(app: App) -> None:
    result = runner.invoke(cli, ["pause", "nope"], terminal_width=200)
    assert result.exit_code == 2 and "queue 'nope'" in result.output and "sqsjobs provision" in result.output


def _function_on(app: App, queue: str, name: str) -> str:
    iam = aws.client("iam")
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("h.py", "def handler(event, context):\n    return {}\n")
    aws.client("lambda").create_function(
        FunctionName=name, Runtime="python3.12", Role=role, Handler="h.handler", Code={"ZipFile": code.getvalue()}
    )
    sqs = aws.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=queue_url(app, queue), AttributeNames=["QueueArn"])["Attributes"]
    mapping: str = aws.client("lambda").create_event_source_mapping(
        EventSourceArn=arn["QueueArn"], FunctionName=name, BatchSize=10
    )["UUID"]
    return mapping


def _state(uuid: str) -> str:
    state: str = aws.client("lambda").get_event_source_mapping(UUID=uuid)["State"]
    return state


def test_pause_disables_the_lambda_mappings_and_continue_enables_only_those(app: App, prefix: str) -> None:
    ours = _function_on(app, "default", f"{prefix}consumer")
    theirs = _function_on(app, "default", f"{prefix}other")
    aws.client("lambda").update_event_source_mapping(UUID=theirs, Enabled=False)  # off for a reason of its own
    out = cli_run("pause", "default").stdout
    assert ours in out and theirs not in out
    assert (_state(ours), _state(theirs)) == ("Disabled", "Disabled")
    assert ours in cli_run("continue", "default").stdout
    assert (_state(ours), _state(theirs)) == ("Enabled", "Disabled")


def test_without_the_table_a_worker_runs_jobs_and_warns_once(
    moto: None, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    application = App(connection="sqs", queue_prefix=prefix, worker_beat=0.2, table=f"{prefix}missing")
    provision(application, ["default"], table=False, bucket=False)
    caplog.set_level(logging.WARNING, logger="sqsjobs.worker")
    with application.activate():
        Quick(n=1).dispatch()
        Worker(application, WorkerOptions(queues=["default"], sleep=1, stop_when_empty=True)).run(install_signals=False)
    assert Quick.ran == [1]
    warnings = [r.getMessage() for r in caplog.records if "worker beats" in r.getMessage()]
    assert len(warnings) == 1 and "sqsjobs provision" in warnings[0]


def test_pause_hands_back_what_a_worker_holds_but_has_not_started(app: App) -> None:
    Gate(n=1).dispatch()
    for n in range(4):
        Quick(n=n).dispatch()
    running = Running(app)  # concurrency 1, prefetch 9: it holds the four quick jobs behind the gate
    try:
        wait_for(lambda: [w for w in live_workers() if w["current"] == ["control.gate"]], what="the gate running")
        wait_for(lambda: counts(app, "default")["ApproximateNumberOfMessagesNotVisible"] == 5, what="all held")
        cli_run("pause", "default")
        wait_for(lambda: counts(app, "default")["ApproximateNumberOfMessages"] == 4, what="the held four back")
        Gate.opened.set()
        wait_for(lambda: Gate.ran == [1], what="the running job to finish")
        assert Quick.ran == []  # none of the held jobs started after the pause
        cli_run("continue", "default")
        wait_for(lambda: sorted(Quick.ran) == [0, 1, 2, 3], what="the four after continue")
    finally:
        Gate.opened.set()
        running.stop()


def test_a_passing_table_error_keeps_the_pause_and_beats_go_on(
    app: App, faults: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # each injected error fails its call at once
    aws.reset_clients()
    running = Running(app)
    try:
        wait_for(live_workers, what="the first beat")
        cli_run("pause", "default")
        wait_for(lambda: [w for w in live_workers() if w["paused"] == ["default"]], what="the pause seen")
        faults.add(service="dynamodb", operation="Query", kind="500", times=20)
        wait_for(lambda: faults.count(operation="Query") >= 5, what="some failed reads")
        Quick(n=1).dispatch()
        faults.clear()
        seen = live_workers()[0]["last_seen"]
        wait_for(lambda: live_workers()[0]["last_seen"] > seen, what="beats again after the errors")
        assert Quick.ran == [] and running.worker.exit_code == 0  # still paused, still running
        cli_run("continue", "default")
        wait_for(lambda: Quick.ran == [1], what="the job after continue")
    finally:
        running.stop()

"""The process executor: a job's `handle()` in a child process that is killed when its time is up."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from sqsjobs import App, Job, PermanentError
from sqsjobs.decisions import Fail, Release
from sqsjobs.errors import ConfigurationError, JobTimeoutError
from sqsjobs.executors import ChildJobError, ChildPermanentError, ProcessExecutor
from sqsjobs.job_class import JobContext
from sqsjobs.runner import Run
from tests.unit import executor_jobs as jobs

MODULES = ["tests.unit.executor_jobs"]


@pytest.fixture(scope="module")
def executor() -> Iterator[ProcessExecutor]:
    with ProcessExecutor(MODULES, grace=0.5) as shared:
        yield shared


def _context(job: Job, attempts: int = 1) -> JobContext:
    job._ctx = JobContext("job-7", attempts, "default")
    return job._ctx


def test_a_cpu_bound_job_that_swallows_interrupts_is_killed_at_its_timeout(executor: ProcessExecutor) -> None:
    with pytest.raises(JobTimeoutError, match=r"executor.spin ran longer than its timeout of 0.3s.*killed \(SIGKILL"):
        executor.run(jobs.Spin(), timeout=0.3)
    executor.run(jobs.Echo(out=os.devnull), timeout=30)  # and the executor goes on with a fresh process


def test_a_job_blocked_in_c_is_interrupted_at_its_timeout_and_its_finally_runs(
    executor: ProcessExecutor, tmp_path: Path
) -> None:
    out = tmp_path / "nap.txt"
    with pytest.raises(JobTimeoutError, match="stopped with SIGTERM"):
        executor.run(jobs.Nap(out=str(out)), timeout=0.3)
    assert out.read_text() == "cleaned up"


def test_an_exception_in_the_child_comes_back_as_its_type_name_message_and_traceback(
    executor: ProcessExecutor,
) -> None:
    with pytest.raises(ChildJobError) as raised:
        executor.run(jobs.Broken(invoice_id=42), timeout=30)
    error = raised.value
    assert (error.type_name, error.message, str(error)) == ("ValueError", "no invoice 42", "ValueError: no invoice 42")
    assert not isinstance(error, PermanentError), "an ordinary exception is retried"
    assert "executor_jobs.py" in error.child_traceback and 'raise ValueError(f"no invoice' in error.child_traceback
    assert any("in the job's process" in note for note in error.__notes__), "logs and the DLQ copy show where"


def test_permanent_errors_and_fail_on_types_stay_permanent(executor: ProcessExecutor) -> None:
    with pytest.raises(ChildPermanentError, match="PermanentError: card declined"):
        executor.run(jobs.Refused(), timeout=30)
    with pytest.raises(PermanentError, match="KeyError: 'sku-9'"):
        executor.run(jobs.Picky(), timeout=30)


def test_release_and_fail_in_the_child_reach_the_parents_job(executor: ProcessExecutor) -> None:
    later = jobs.Later()
    ctx = _context(later)
    executor.run(later, timeout=30)
    assert (ctx.released, ctx.release_delay, ctx.fail_reason) == (True, 17, None)

    gone = jobs.OutOfStock()
    ctx = _context(gone)
    executor.run(gone, timeout=30)
    assert (ctx.released, ctx.fail_reason) == (False, "out of stock")


def test_the_payload_and_the_jobs_context_round_trip(executor: ProcessExecutor, tmp_path: Path) -> None:
    out = tmp_path / "echo.json"
    job = jobs.Echo(
        out=str(out),
        when=datetime(2024, 2, 29, 23, 59, 1, 500, tzinfo=UTC),
        amounts=[Decimal("0.10"), Decimal("1e3")],
        note='naïve café ☕ \u2028 "quoted"',
        meta={"nested": {"list": [1, None, True], "empty": {}}},
    )
    _context(job, attempts=3)
    executor.run(job, timeout=30)
    seen = json.loads(out.read_text())
    assert jobs.Echo.model_validate(seen["payload"]).model_dump() == job.model_dump()  # the child saw these values
    assert (seen["attempts"], seen["job_id"]) == (3, "job-7")
    assert seen["pid"] != os.getpid()


def test_a_process_is_reused_for_the_next_job(tmp_path: Path) -> None:
    """Start-up (an interpreter importing the job modules) is paid per process, not per job."""
    pids = []
    with ProcessExecutor(MODULES) as executor:
        for n in range(3):
            out = tmp_path / f"{n}.json"
            executor.run(jobs.Echo(out=str(out)), timeout=30)
            pids.append(json.loads(out.read_text())["pid"])
    assert len(set(pids)) == 1


def test_a_job_whose_process_dies_fails_this_attempt_and_the_next_job_runs(executor: ProcessExecutor) -> None:
    with pytest.raises(ChildJobError, match="ended before it answered"):
        executor.run(jobs.Dies(), timeout=30)
    executor.run(jobs.Echo(out=os.devnull), timeout=30)


def test_the_child_runs_registered_names_only_and_never_imports_one(tmp_path: Path) -> None:
    class Sneaky(Job, name="json.tool"):  # registered here, in the parent, but in no module the children import
        def handle(self) -> None:
            raise AssertionError("never runs")

    with ProcessExecutor(MODULES, grace=0.5) as executor:
        with pytest.raises(ConfigurationError, match=r"know no job named 'json\.tool'.*tests\.unit\.executor_jobs"):
            executor.run(Sneaky(), timeout=30)
        out = tmp_path / "echo.json"
        executor.run(jobs.Echo(out=str(out), probe="json.tool"), timeout=30)  # the same, only child
    assert json.loads(out.read_text())["probe_imported"] is False


def test_children_build_their_app_from_the_factory_they_are_given(tmp_path: Path) -> None:
    out = tmp_path / "echo.json"
    factory = functools.partial(App, connection="null", default_queue="from-the-factory")
    with ProcessExecutor(MODULES, app_factory=factory) as executor:
        executor.run(jobs.Echo(out=str(out)), timeout=30)
    assert json.loads(out.read_text())["app_queue"] == "from-the-factory"


def test_a_child_that_cannot_import_the_job_modules_is_a_configuration_error() -> None:
    with (
        ProcessExecutor(["tests.unit.no_such_module"]) as executor,
        pytest.raises(ConfigurationError, match=r"could not start.*No module named 'tests\.unit\.no_such_module'"),
    ):
        executor.run(jobs.Echo(out=os.devnull), timeout=30)


def test_the_runner_decides_on_what_the_job_asked_for_in_its_process(executor: ProcessExecutor) -> None:
    """The wiring a worker uses: the runner begins, the executor runs `handle()`, the runner finishes."""
    app = App(connection="memory")
    decisions = []
    with app.activate():
        for job in (jobs.Later(), jobs.OutOfStock()):
            job.dispatch()
            (message,) = app.connection.receive("default", 1, 0)
            run = app.runner.begin(message)
            assert isinstance(run, Run)
            executor.run(run.job, timeout=30)
            decisions.append(app.runner.finish(run, None, 0.0))
    released, failed = decisions
    assert isinstance(released, Release) and released.delay == 17
    assert isinstance(failed, Fail) and failed.reason == "failed_by_job"
    (letter,) = app.connection.dead_letters("default")  # type: ignore[attr-defined]
    assert json.loads(letter.body)["job"] == "executor.out-of-stock"


def test_a_worker_with_the_process_executor_kills_a_deaf_job_and_goes_on(tmp_path: Path) -> None:
    """`sqsjobs work --executor process`: the job that swallows every interrupt is killed at its
    timeout and retried later; the worker does not wedge (exit 0, not 1) and runs the next job in a child."""
    from sqsjobs.worker import Worker, WorkerOptions

    app = App(connection="memory", app="tests.unit.executor_jobs", timeout=1)
    out = tmp_path / "echo.json"
    with app.activate():
        jobs.Spin().dispatch()
        jobs.Echo(out=str(out)).dispatch()
        events: list[str] = []
        app.events.listen(lambda event: events.append(f"{event.kind}:{event.job_name}"))
        options = WorkerOptions(queues=["default"], executor="process", max_jobs=2, sleep=1, timeout_grace=0.5)
        code = Worker(app, options).run(install_signals=False)
    assert code == 0
    assert "released:executor.spin" in events, "killed at its timeout: a try spent, retried later"
    assert "processed:executor.echo" in events
    seen = json.loads(out.read_text())
    assert seen["pid"] != os.getpid(), "it ran in a child process"


def test_the_process_executor_cannot_be_combined_with_async() -> None:
    from sqsjobs.worker import WorkerOptions

    with pytest.raises(ConfigurationError, match="--async"):
        WorkerOptions(executor="process", event_loop=True)


def test_triage_and_the_dlq_know_a_childs_exception_by_its_name(executor: ProcessExecutor) -> None:
    """What a job raised in its process comes back as a name: `discard(RowGone)` still matches it, and the
    DLQ copy of another failure records the child's exception type, not the carrier's."""
    app = App(connection="memory")
    decisions = []
    with app.activate():
        for job in (jobs.Gone(), jobs.Gone(other=True)):
            job.dispatch()
            (message,) = app.connection.receive("default", 1, 0)
            run = app.runner.begin(message)
            assert isinstance(run, Run)
            try:
                executor.run(run.job, timeout=30)
            except Exception as exc:
                decisions.append(app.runner.finish(run, exc, 0.0))
    discarded, failed = decisions
    assert isinstance(discarded, Fail) and discarded.reason == "discarded"
    assert isinstance(failed, Fail) and failed.reason == "tries_exhausted"
    (letter,) = app.connection.dead_letters("default")  # type: ignore[attr-defined]
    assert letter.attributes["sqsjobs.error_type"] == "KeyError"

"""What the per-job fast path (events by kind, shared botocore data, lazy tracing, the bench's floors)
must keep: each test is a promise a user or a benchmark reader relies on, found by a hostile review.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import botocore
import botocore.exceptions
import pytest
from botocore.config import Config

from sqsjobs import aws
from sqsjobs import events as events_module
from sqsjobs.events import Events, JobEvent

ROOT = Path(__file__).resolve().parents[2]


# -- events ------------------------------------------------------------------------------------------


def test_two_listeners_registered_at_once_from_two_threads_both_hear_their_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Registering rebuilds the index by kind that emit reads: a second thread registering while the
    first rebuilds must not be overwritten by a stale index (its listener would never hear anything).
    The thread switch is forced at the worst moment, in a real second thread."""
    bus = Events()
    heard: list[str] = []
    other = threading.Thread(target=lambda: bus.listen(lambda event: heard.append(event.kind), kinds=["queued"]))
    state = {"switched": False}

    class Kinds(tuple):  # type: ignore[type-arg]
        """JOB_KINDS, letting the other thread run once `_index` has built its first entry."""

        def __iter__(self) -> Iterator[str]:
            for position, kind in enumerate(tuple.__iter__(self)):
                if position == 1 and not state["switched"] and _inside("_index"):
                    state["switched"] = True
                    other.start()
                    other.join(timeout=0.5)  # a lock in listen() would keep it waiting: that is a fix
                yield kind

    monkeypatch.setattr(events_module, "JOB_KINDS", Kinds(events_module.JOB_KINDS))
    bus.listen(lambda event: None, kinds=["processed"])
    other.join(timeout=5)
    assert state["switched"] and not other.is_alive()
    bus.emit(JobEvent("queued", "id", "a.job", "default", 0))
    assert heard == ["queued"]
    assert bus.wants("queued")


def _inside(function: str) -> bool:
    frame = sys._getframe(1)
    for _ in range(4):
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return False
        if frame.f_code.co_name == function:
            return True
    return False


def test_a_listener_of_every_job_event_hears_a_job_event_of_a_kind_of_its_own() -> None:
    """docs/events.md: `app.events.listen(fn)` receives every `JobEvent`, including kinds an application
    emits of its own."""
    bus = Events()
    heard: list[str] = []
    bus.listen(lambda event: heard.append(event.kind))
    bus.emit(JobEvent("audited", "id", "a.job", "default", 1))
    assert heard == ["audited"]


# -- tracing -----------------------------------------------------------------------------------------

_TRACED_RUN = """
import sys
sys.path.insert(0, {root!r})
from sqsjobs import tracing
with tracing.run_span("a.job", "default", "id", 1, None):
    from opentelemetry import trace
    print(trace.get_current_span().get_span_context().is_valid)
"""


def test_a_tracer_provider_named_by_OTEL_PYTHON_TRACER_PROVIDER_traces_the_run() -> None:
    """OpenTelemetry loads the provider `OTEL_PYTHON_TRACER_PROVIDER` names on first use, without the
    application importing `opentelemetry.trace`: sqsjobs' "nobody imported it" shortcut must not skip it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_PYTHON_TRACER_PROVIDER"] = "sdk_tracer_provider"  # opentelemetry-sdk's entry point
    done = subprocess.run(
        [sys.executable, "-c", _TRACED_RUN.format(root=str(ROOT))],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


# -- aws ---------------------------------------------------------------------------------------------


@pytest.fixture
def custom_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A service model only AWS_DATA_PATH knows: SQS's own, under another name."""
    name = "sqsjobsreview"
    source = Path(botocore.__file__).parent / "data" / "sqs" / "2012-11-05"
    target = tmp_path / name / "2012-11-05"
    target.mkdir(parents=True)
    for path in source.iterdir():
        shutil.copy(path, target / path.name)
    with gzip.open(target / "service-2.json.gz", "rt") as f:
        model = json.load(f)
    assert model["metadata"]["endpointPrefix"] == "sqs"
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    return name


def test_AWS_DATA_PATH_models_reach_sqsjobs_clients_as_they_reach_boto3s(custom_model: str) -> None:
    """botocore builds a session's data loader from `data_path` (AWS_DATA_PATH or the config file): the
    loader sqsjobs shares between its sessions must see the same models every other boto3 client sees."""
    boto3.session.Session().client(custom_model, region_name="us-east-1")  # boto3's own: found
    try:
        aws.new_client(custom_model, Config(region_name="us-east-1"))
    except botocore.exceptions.UnknownServiceError as exc:
        pytest.fail(f"sqsjobs' client does not see AWS_DATA_PATH: {str(exc)[:60]}")


# -- benchmarks --------------------------------------------------------------------------------------


def test_the_checked_floors_sqs_calls_per_job_count_its_producer_as_every_other_row() -> None:
    """The results table counts the producer's and the consumer's calls for every row: the checked loop's
    jobs are sent by the bench process (SQSJOBS_DISPATCH_KEY), so that is the key its row must count."""
    from benchmarks import harness, systems

    producer_key = harness.SQSJOBS_DISPATCH_KEY  # Bench.__init__ puts it in os.environ for sqsjobs' clients
    assert systems.CHECKED.keys[0] == producer_key
    assert systems.CHECKED_POOL.keys[0] == producer_key  # the same floor on 4 threads (`--concurrency 4`)
    assert systems.CHECKED_ASYNCIO.keys[0] == producer_key  # the same checks as asyncio tasks (`--async`)


# -- settings and log lines --------------------------------------------------------------------------


def test_settings_given_in_code_are_taken_in_any_case_as_the_environment_is(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqsjobs import Settings

    monkeypatch.setenv("sqsjobs_tries", "7")
    monkeypatch.setenv("SQSJOBS_QUEUES", "high,default")
    settings = Settings(TIMEOUT=9)
    assert (settings.tries, settings.timeout, settings.queues) == (7, 9, {"high": "high", "default": "default"})
    assert Settings(tries=2).tries == 2  # code wins over the environment


def test_at_warning_a_failed_job_is_still_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    """SQSJOBS_LOG_LEVEL=WARNING quiets the `processed` lines, never the failures (they are WARNING)."""
    from sqsjobs import logs

    logs.configure("text", "WARNING")  # the suite's fixture puts the loggers back afterwards
    logs.log_event(JobEvent("processed", "id-1", "a.job", "default", 1))
    logs.log_event(JobEvent("failed", "id-2", "a.job", "default", 3, error_type="RuntimeError", error="boom"))
    logs.flush()
    err = capsys.readouterr().err
    assert "job failed" in err and "id-2" in err and "RuntimeError: boom" in err
    assert "id-1" not in err


def test_values_given_next_to_a_settings_object_are_validated_and_taken_in_any_case() -> None:
    from sqsjobs import App, ConfigurationError, Settings

    app = App(connection="memory", settings=Settings(), Queue_Prefix="p-", tries=2)
    assert (app.settings.queue_prefix, app.settings.tries) == ("p-", 2)
    with pytest.raises(ConfigurationError, match="SQSJOBS_TRIES"):
        App(connection="memory", settings=Settings(), tries=0)


def test_queues_may_be_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqsjobs import Settings

    monkeypatch.setenv("SQSJOBS_QUEUES", '["high", "default"]')
    assert Settings().queues == {"high": "high", "default": "default"}

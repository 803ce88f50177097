"""The Lambda handler builds what it needs in the init phase (issue 13), without the cycle collector's passes over
it, and a bad configuration is still reported by the first event, as before: an init that raised would only show
as a failed import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import gc, json, os, sys
if os.environ.get("PROBE_GC_OFF"):
    gc.disable()
if os.environ.get("PROBE_BLOCK"):
    sys.modules[os.environ["PROBE_BLOCK"]] = None  # that import fails, half-way through the handler's own
threshold = gc.get_threshold()[0]
passes = []
gc.callbacks.append(lambda phase, info: passes.append(info["generation"]) if phase == "start" else None)
try:
    import lambda_handlers.sqs as entry
except BaseException as exc:
    print(json.dumps({"import_error": type(exc).__name__, "gc_enabled": gc.isenabled(),
                      "threshold_kept": gc.get_threshold()[0] == threshold, "frozen": gc.get_freeze_count()}))
    sys.exit(0)
during_import = len(passes)
from sqsjobs import aws
result = {"app_built": entry.handler._app is not None, "sqs_client": any(k[0] == "sqs" for k in aws._clients)}
if os.environ.get("PROBE_GC"):
    result.update(gc_enabled=gc.isenabled(), threshold_kept=gc.get_threshold()[0] == threshold,
                  frozen=gc.get_freeze_count(), passes=during_import)
if len(sys.argv) > 1:
    try:
        entry.handler({"Records": []}, None)
        result["first_event"] = "ok"
    except Exception as exc:
        result["first_event"] = type(exc).__name__ + ": " + str(exc)[:200]
print(json.dumps(result))
"""
#: Passes an import makes before the handler's first line can pause anything (compiling the module when no
#: bytecode is cached); ~160 are made without the pause, ~75 by the imports alone outside Lambda.
_FEW = 10


def probe(*args: str, path: Path | None = None, **env: str) -> dict[str, object]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SQSJOBS_", "AWS_LAMBDA_", "AWS_ENDPOINT"))}
    # No endpoint anyone listens on: any AWS call at init would fail the probe.
    environment.update(
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="y",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_MAX_ATTEMPTS="1",
        PYTHONPATH=os.pathsep.join(str(p) for p in (ROOT, path) if p is not None),
        **env,
    )
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=environment, check=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_inside_lambda_the_app_and_its_sqs_client_are_built_at_init() -> None:
    found = probe(AWS_LAMBDA_FUNCTION_NAME="jobs", SQSJOBS_APP="benchmarks.jobs")
    assert found == {"app_built": True, "sqs_client": True}


def test_outside_lambda_nothing_is_built_at_import() -> None:
    assert probe(SQSJOBS_APP="benchmarks.jobs") == {"app_built": False, "sqs_client": False}


def test_a_bad_configuration_is_left_for_the_first_event_to_report() -> None:
    found = probe("event", AWS_LAMBDA_FUNCTION_NAME="jobs", SQSJOBS_APP="no_such_module_anywhere")
    assert found["app_built"] is False
    assert "no_such_module_anywhere" in str(found["first_event"])


def test_the_init_runs_without_the_cycle_collector_and_leaves_it_on() -> None:
    # Paused, the collector makes no pass over the init's objects (~160 with it on, 30-60 ms of a cold start);
    # resumed after, with those objects frozen, so that no later pass scans them either.
    found = probe(AWS_LAMBDA_FUNCTION_NAME="jobs", SQSJOBS_APP="benchmarks.jobs", PROBE_GC="1")
    assert found["app_built"] is True
    assert isinstance(found["passes"], int) and found["passes"] < _FEW
    assert found["gc_enabled"] is True
    assert found["threshold_kept"] is True
    assert isinstance(found["frozen"], int) and found["frozen"] > 50_000


def test_an_init_that_fails_quietly_still_resumes_the_collector() -> None:
    found = probe(AWS_LAMBDA_FUNCTION_NAME="jobs", SQSJOBS_APP="no_such_module_anywhere", PROBE_GC="1")
    assert found["app_built"] is False
    assert isinstance(found["passes"], int) and found["passes"] < _FEW
    assert found["threshold_kept"] is True


def test_an_init_that_raises_still_resumes_the_collector(tmp_path: Path) -> None:
    # Not an Exception: warm() lets it through, and the handler's import fails with it.
    (tmp_path / "interrupted_jobs.py").write_text("raise KeyboardInterrupt\n")
    found = probe(AWS_LAMBDA_FUNCTION_NAME="jobs", SQSJOBS_APP="interrupted_jobs", path=tmp_path)
    assert found["import_error"] == "KeyboardInterrupt"
    assert found["gc_enabled"] is True
    assert found["threshold_kept"] is True
    assert found["frozen"] == 0  # what the failed init built stays collectable


def test_an_import_that_fails_half_way_still_resumes_the_collector() -> None:
    # A wrapper that catches the ImportError and goes on must not run its jobs without cycle collection.
    found = probe(AWS_LAMBDA_FUNCTION_NAME="jobs", SQSJOBS_APP="benchmarks.jobs", PROBE_BLOCK="lambda_handlers.batch")
    assert found["import_error"] == "ModuleNotFoundError"
    assert found["gc_enabled"] is True
    assert found["threshold_kept"] is True
    assert found["frozen"] == 0


def test_a_collector_the_process_turned_off_stays_off() -> None:
    found = probe(AWS_LAMBDA_FUNCTION_NAME="jobs", SQSJOBS_APP="benchmarks.jobs", PROBE_GC="1", PROBE_GC_OFF="1")
    assert found["app_built"] is True
    assert found["gc_enabled"] is False


@pytest.mark.parametrize(
    ("source", "enabled", "threshold_kept"),
    [
        ("gc.disable()", False, True),  # off stays off
        ("gc.set_threshold(5000, 20, 20)", True, False),  # theirs stays: not put back to what it was before
    ],
)
def test_what_the_jobs_module_does_to_the_collector_stays(
    tmp_path: Path, source: str, enabled: bool, threshold_kept: bool
) -> None:
    (tmp_path / "gc_minded_jobs.py").write_text(f"import gc\n\n{source}\n")
    found = probe(AWS_LAMBDA_FUNCTION_NAME="jobs", SQSJOBS_APP="gc_minded_jobs", PROBE_GC="1", path=tmp_path)
    assert found["app_built"] is True
    assert found["gc_enabled"] is enabled
    assert found["threshold_kept"] is threshold_kept


def test_outside_lambda_the_collector_is_left_alone() -> None:
    found = probe(SQSJOBS_APP="benchmarks.jobs", PROBE_GC="1")
    assert found["gc_enabled"] is True
    assert found["threshold_kept"] is True
    assert found["frozen"] == 0
    assert isinstance(found["passes"], int) and found["passes"] > 0

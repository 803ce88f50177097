"""The Lambda handler builds what it needs in the init phase (issue 13), without the cycle collector's passes over
it, and a bad configuration is still reported by the first event, as before: an init that raised would only show
as a failed import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import gc, json, os, sys
if os.environ.get("PROBE_GC_OFF"):
    gc.disable()
passes = []
gc.callbacks.append(lambda phase, info: passes.append(info["generation"]) if phase == "start" else None)
import lambda_handlers.sqs as entry
during_import = len(passes)
from sqsjobs import aws
result = {"app_built": entry.handler._app is not None, "sqs_client": any(k[0] == "sqs" for k in aws._clients)}
if os.environ.get("PROBE_GC"):
    result.update(gc_enabled=gc.isenabled(), frozen=gc.get_freeze_count(), passes=during_import)
if len(sys.argv) > 1:
    try:
        entry.handler({"Records": []}, None)
        result["first_event"] = "ok"
    except Exception as exc:
        result["first_event"] = type(exc).__name__ + ": " + str(exc)[:200]
print(json.dumps(result))
"""


def probe(*args: str, **env: str) -> dict[str, object]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SQSJOBS_", "AWS_LAMBDA_", "AWS_ENDPOINT"))}
    # No endpoint anyone listens on: any AWS call at init would fail the probe.
    environment.update(
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="y",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_MAX_ATTEMPTS="1",
        PYTHONPATH=str(ROOT),
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
    assert found["gc_enabled"] is True
    assert found["passes"] == 0
    assert isinstance(found["frozen"], int) and found["frozen"] > 50_000


def test_a_failed_init_still_resumes_the_collector() -> None:
    found = probe(AWS_LAMBDA_FUNCTION_NAME="jobs", SQSJOBS_APP="no_such_module_anywhere", PROBE_GC="1")
    assert found["app_built"] is False
    assert found["gc_enabled"] is True
    assert found["passes"] == 0


def test_a_collector_the_process_turned_off_stays_off() -> None:
    found = probe(AWS_LAMBDA_FUNCTION_NAME="jobs", SQSJOBS_APP="benchmarks.jobs", PROBE_GC="1", PROBE_GC_OFF="1")
    assert found["gc_enabled"] is False
    assert found["frozen"] == 0


def test_outside_lambda_the_collector_is_left_alone() -> None:
    found = probe(SQSJOBS_APP="benchmarks.jobs", PROBE_GC="1")
    assert found["gc_enabled"] is True
    assert found["frozen"] == 0
    assert isinstance(found["passes"], int) and found["passes"] > 0

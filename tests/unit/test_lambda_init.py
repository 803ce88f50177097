"""The Lambda handler builds what it needs in the init phase (issue 13), and a bad configuration is still
reported by the first event, as before: an init that raised would only show as a failed import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
import lambda_handlers.sqs as entry
from sqsjobs import aws
result = {"app_built": entry.handler._app is not None, "sqs_client": any(k[0] == "sqs" for k in aws._clients)}
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

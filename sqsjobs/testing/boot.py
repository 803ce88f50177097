"""Imported first by test subprocesses: installs the test layers the environment asks for.

    SQSJOBS_TEST_STRICT=1           the strict-AWS-rules layer (sqsjobs.testing.aws_rules)
    SQSJOBS_TEST_FAULTS="rate=..."  fault injection (sqsjobs.testing.faults; spec in docs/testing.md)

Run a command with them: `python -c "import sqsjobs.testing.boot; from sqsjobs.cli import main; main()" ...`.
Import this before any boto3 client exists (a client created earlier does not get the handlers).
"""

from __future__ import annotations

import os

from . import aws_rules, faults

if os.environ.get("SQSJOBS_TEST_STRICT", "").strip().lower() in ("1", "true", "yes"):
    aws_rules.install()

if os.environ.get(faults.ENV_VAR, "").strip():
    faults.install_from_env()

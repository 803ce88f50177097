"""Test support for sqsjobs: a strict-AWS-rules layer (`aws_rules`) and fault injection (`faults`).

Both install through botocore's own event system, so they reach every boto3 and aiobotocore client
created afterwards (moto in-process, a moto server, or real AWS alike). `boot` installs them in a
subprocess from `SQSJOBS_TEST_STRICT=1` and `SQSJOBS_TEST_FAULTS=...`. For your own tests, `fake`
records dispatches instead of sending them, with assertions (`pytest_plugin` offers it as the
`sqsjobs_fake` fixture); `run_job` runs one job through the real core and asserts what it asked for;
`run_until_empty` drains a `memory_app()` through the real core, chains and batches included. See
docs/testing.md.

Those are imported on first use (`sqsjobs.testing.run_job`): a subprocess that imports `boot` (or a
test that only wants `aws_rules`) does not load the App and everything under it.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Names read from this package, and the module each lives in (imported when first read).
_LAZY = {
    "fake": "fake",
    "FakeDispatches": "fake",
    "run_job": "job_run",
    "JobRun": "job_run",
    "run_until_empty": "drain",
    "memory_app": "drain",
    "Drained": "drain_summary",
    "ManualClock": "clock",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sqsjobs.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

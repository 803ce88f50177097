"""A 400-job slice of the chaos soak (`python -m tests.soak`, docs/reliability.md) inside `make test`.

The driver runs as a subprocess with its own moto server and three `sqsjobs work` pollers that it
SIGKILLs and restarts every few seconds, with faults injected into their AWS calls when
sqsjobs/testing/faults.py is there. The test fails with the driver's list of violations.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(420)
def test_four_hundred_jobs_through_killed_workers_and_injected_faults_keep_every_promise(tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    cmd = [sys.executable, "-m", "tests.soak", "--jobs", "400", "--seed", "7", "--timeout", "300", "--kill-grace", "0"]
    cmd += ["--workdir", str(tmp_path / "soak"), "--json", str(report), "--quiet"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert report.exists(), (
        f"the soak wrote no report (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    result = json.loads(report.read_text())
    figures, violations = result["figures"], result["violations"]
    assert figures["jobs"] >= 400 and figures["drained"], json.dumps(figures, indent=2)
    assert not violations, (
        f"{len(violations)} violation(s):\n"
        + "\n".join(json.dumps(v, indent=2) for v in violations[:20])
        + f"\nfigures: {json.dumps(figures)}"
    )
    assert done.returncode == 0, done.stdout[-3000:]

"""Lambda cold start: what the handler costs a fresh container, against the floor any SQS handler pays.

Two measures, each in fresh interpreters, the two sides alternating, the median counting; peak
RSS is the child's own:

- `measure()`: the imports alone. The floor is `import boto3` plus Powertools' batch utility
  (what a hand-written Powertools SQS handler imports); ours is `import lambda_handlers.sqs` and
  boto3, which the handler uses from its first event on.
- `measure_first_event()`: import + the first 10-record event, up to the response
  (benchmarks.lambda_bench `cold`): ours is `lambda_handlers.sqs.handler`, the floor `import
  boto3` + a Powertools `BatchProcessor` handler that `json.loads` each body. This is what a
  cold invocation waits for before its first response.

Both sides start from compiled modules (`compileall` first), as a package built by `pip install` or
`sam build` does: Lambda's file system is read-only, so a package shipped without `.pyc` files would
compile every module on every cold start, and a shell with PYTHONDONTWRITEBYTECODE=1 would otherwise
bill that compile to sqsjobs' side only (site-packages were compiled when installed).
"""

from __future__ import annotations

import compileall
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# VmHWM (peak RSS of this image) rather than ru_maxrss, which on Linux keeps the peak of the
# forking parent — the benchmark process itself — across exec.
_CHILD = """
import json, time
t = time.perf_counter()
{imports}
elapsed = time.perf_counter() - t
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"s": elapsed, "rss_mb": hwm / 1024}}))
"""
BASELINE = "import boto3\nimport aws_lambda_powertools.utilities.batch"
#: Outside Lambda the handler's import loads neither boto3 nor botocore's session and clients, which its
#: first event (or, in Lambda, its init phase) then loads: imported here too, so both sides import what
#: they will run with.
HANDLER = "import lambda_handlers.sqs\nimport boto3"


def compile_sources() -> None:
    """Byte-compile this checkout's packages the way pip compiles an installed one."""
    for package in ("sqsjobs", "lambda_handlers", "benchmarks"):
        compileall.compile_dir(ROOT / package, quiet=1)


def _once(imports: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(imports=imports)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def measure(rounds: int = 7) -> dict[str, float]:
    compile_sources()
    base: list[dict[str, float]] = []
    ours: list[dict[str, float]] = []
    for index in range(rounds):
        pair = [(base, BASELINE), (ours, HANDLER)]
        for target, imports in pair if index % 2 == 0 else reversed(pair):
            target.append(_once(imports))
    base_s = statistics.median(r["s"] for r in base)
    ours_s = statistics.median(r["s"] for r in ours)
    return {
        "lambda_import_s": ours_s,
        "lambda_import_baseline_s": base_s,
        "lambda_import_ratio": ours_s / base_s,
        "lambda_peak_rss_mb": max(r["rss_mb"] for r in ours),
        "lambda_baseline_peak_rss_mb": max(r["rss_mb"] for r in base),
    }


def _first_event(side: str, events_path: str, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.lambda_bench", "cold", side, "--events", events_path],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    if out.returncode != 0:
        raise RuntimeError(f"lambda cold start ({side}) exited {out.returncode}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure_first_event(events_path: str, env: dict[str, str], rounds: int = 7) -> dict[str, float]:
    """Import + first event in fresh interpreters, ours against the floor (and the floor with pydantic),
    alternating; medians."""
    compile_sources()
    base: list[dict[str, float]] = []
    ours: list[dict[str, float]] = []
    checked: list[dict[str, float]] = []
    for index in range(rounds):
        sides = [(base, "floor"), (ours, "ours"), (checked, "pydantic")]
        for target, side in sides if index % 2 == 0 else reversed(sides):
            target.append(_first_event(side, events_path, env))
    if env.get("AWS_LAMBDA_FUNCTION_NAME") and not all(r.get("warmed") for r in ours):
        raise RuntimeError("the handler's init phase built no App at import (its warning says why): not a cold start")
    ours_s = statistics.median(r["s"] for r in ours)
    base_s = statistics.median(r["s"] for r in base)
    pydantic_s = statistics.median(r["s"] for r in checked)
    return {
        # The floor of any handler that validates with pydantic (sqsjobs' standards require it).
        "lambda_cold_start_pydantic_floor_s": pydantic_s,
        "lambda_cold_start_pydantic_floor_ratio": pydantic_s / base_s,
        "lambda_cold_start_ratio_vs_pydantic_floor": ours_s / pydantic_s,
        "lambda_cold_start_s": ours_s,
        "lambda_cold_start_floor_s": base_s,
        "lambda_cold_start_ratio": ours_s / base_s,
        "lambda_cold_start_cpu_ratio": statistics.median(r["cpu_s"] for r in ours)
        / statistics.median(r["cpu_s"] for r in base),
        "lambda_cold_start_peak_rss_mb": max(r["rss_mb"] for r in ours),
        "lambda_cold_start_floor_peak_rss_mb": max(r["rss_mb"] for r in base),
    }


if __name__ == "__main__":
    for name, value in measure().items():
        print(f"{name}={value:.3f}")

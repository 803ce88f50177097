"""Lambda cold start: what importing the handler costs, against the floor any SQS handler pays.

The floor is `import boto3` plus Powertools' batch utility (what a hand-written
Powertools SQS handler imports). Each side is imported in fresh interpreters,
alternating, and the median counts; peak RSS is the child's own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

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
HANDLER = "import lambda_handlers.sqs"


def _once(imports: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(imports=imports)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def measure(rounds: int = 7) -> dict[str, float]:
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


if __name__ == "__main__":
    for name, value in measure().items():
        print(f"{name}={value:.3f}")

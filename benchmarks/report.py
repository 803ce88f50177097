"""What benchmarks.run leaves behind: benchmarks/results/latest.md (tables) and latest.png (a chart).

The chart needs matplotlib (the `bench` extra); without it only the Markdown is written, and
the run says so.
"""

from __future__ import annotations

import datetime
import importlib.util
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Check:
    """One target: `value op target`; `met` is None when it could not be measured."""

    name: str
    value: float | None
    target: float | None
    op: str = "<="
    decimals: int | None = None
    target_name: str | None = None
    skipped: str | None = None
    #: The same ratio for a floor measured in the same run (a hand-written consumer doing what this project's
    #: standards require, without its structure) and that floor's name. A reference, not a proof: floors move
    #: between runs as the machine does, and sqsjobs has measured below its own floors in some.
    floor: float | None = None
    floor_name: str = ""
    #: Run by run (each run's pair of consumers measured in the same round): in how many of how many the
    #: target held. One verdict within a few hundredths of its target flips with the minute it falls in.
    runs: tuple[int, int] | None = None

    @property
    def met(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        value = round(self.value, self.decimals) if self.decimals is not None else self.value
        return value <= self.target if self.op == "<=" else value == self.target

    def line(self) -> str:
        line = self._verdict()
        if self.runs is not None and self.met is not None:
            line += f" [met in {self.runs[0]} of {self.runs[1]} runs]"
        return line

    def _verdict(self) -> str:
        target = number(self.target) if self.target is not None else "?"
        if self.target_name:
            target = f"{self.target_name} ({target})"
        if self.met is None:
            why = self.skipped or "not measured"
            return f"{self.name} {self.op} {self.target_name or target}: skipped ({why})"
        line = f"{self.name} {number(self.value)} {self.op} {target}: {'met' if self.met else 'NOT MET'}"
        if not self.floor_name or self.op != "<=":
            return line
        if self.floor is None:
            return f"{line} ({self.floor_name} not measured)"
        # Compared as `met` compares the value (rounded only to `decimals`), so that the two verdicts agree.
        floor = round(self.floor, self.decimals) if self.decimals is not None else self.floor
        assert self.target is not None  # `met` was None otherwise
        where = "above" if floor > self.target else "at or below"
        return f"{line} ({self.floor_name} {number(floor)}, {where} the target in this run)"


@dataclass
class Row:
    """One consumer in the table and the chart."""

    label: str
    worker_cpu_us: float | None
    ratio: float | None
    #: (lowest, highest) of the runs whose median is `worker_cpu_us`; None for a consumer run once
    worker_cpu_range: tuple[float, float] | None
    producer_cpu_us: float | None
    calls_per_job: float | None
    msgs_per_receive: float | None
    note: str

    @classmethod
    def skipped(cls, label: str, why: str) -> Row:
        return cls(label, None, None, None, None, None, None, why)


def write(
    directory: Path,
    out: dict[str, Any],
    checks: list[Check],
    rows: list[Row],
    skipped: dict[str, str],
    versions: dict[str, str],
) -> dict[str, str]:
    """Write latest.md (and latest.png when matplotlib is there); return name=value lines about them."""
    directory.mkdir(parents=True, exist_ok=True)
    md = directory / "latest.md"
    png = directory / "latest.png"
    written: dict[str, str] = {"results_md": _shown(md)}
    chart_note = ""
    if importlib.util.find_spec("matplotlib") is None:
        chart_note = "matplotlib is not installed (pip install -e '.[bench]'): no chart"
        written["results_png"] = f"skipped: {chart_note}"
    else:
        _chart(png, rows, out)
        written["results_png"] = _shown(png)
    md.write_text(_markdown(out, checks, rows, skipped, versions, chart_note, png.name))
    return written


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def number(value: float | None, small_decimals: int = 2) -> str:
    """A number as the tables print it: whole from 100 up, one decimal from 10, else `small_decimals`."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{small_decimals}f}"


def _markdown(
    out: dict[str, Any],
    checks: list[Check],
    rows: list[Row],
    skipped: dict[str, str],
    versions: dict[str, str],
    chart_note: str,
    png_name: str,
) -> str:
    import boto3
    import botocore

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# sqsjobs benchmark (latest run)",
        "",
        f"{now}; Python {platform.python_version()}, boto3 {boto3.__version__}, botocore {botocore.__version__}; "
        f"{out.get('jobs')} no-op jobs per consumer in waves of {out.get('wave')}, on one moto server. "
        "CPU is `process_time` of each process (all threads); compare ratios, not microseconds, across machines. "
        "How it measures: benchmarks/README.md.",
        "",
        "## Consumers",
        "",
        "| consumer | CPU µs/job (median) | x raw boto3 | its runs, µs/job | producer CPU µs/job | SQS calls/job "
        "| msgs/receive | settings, version |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        if row.worker_cpu_us is None:
            lines.append(f"| {row.label} | - | - | - | - | - | - | skipped: {row.note} |")
            continue
        lines.append(
            f"| {row.label} | {number(row.worker_cpu_us)} | {number(row.ratio)} | {_range(row.worker_cpu_range)} | "
            f"{number(row.producer_cpu_us)} | "
            f"{number(row.calls_per_job)} | {number(row.msgs_per_receive)} | {row.note} |"
        )
    lines += [
        "",
        "SQS calls/job counts the producer's and the consumer's calls (start-up lookups included); the floor is "
        "0.30 (SendMessageBatch, ReceiveMessage, DeleteMessageBatch, 10 messages each). The checked loop is the "
        "raw loop doing what sqsjobs' standards require of any consumer per job: the body decoded as an untrusted "
        "envelope, the payload validated by its job class, one log line"
        + (
            f"; `sqsjobs work` defaults cost {number(out.get('cpu_ratio_vs_checked_floor_defaults'))}x of it."
            if out.get("cpu_ratio_vs_checked_floor_defaults") is not None
            else "."
        )
        + (
            " The checked loop on 4 threads (each batch run on a pool of 4, no receive overlapping it) is what"
            f" `--concurrency 4` is read against: `--concurrency 4` costs {number(pool4_ratio)}x of it."
            if (pool4_ratio := out.get("cpu_ratio_concurrency4_vs_boto3_checked_pool4")) is not None
            else ""
        )
        + (
            " The same on 10 threads is what `--concurrency 10` is read against (and sqs-workers, which runs its"
            f" jobs on one thread, at that setting): `--concurrency 10` costs {number(pool10_ratio)}x of it."
            if (pool10_ratio := out.get("cpu_ratio_concurrency10_vs_boto3_checked_pool10")) is not None
            else ""
        )
        + (
            " The two asyncio loops are what running each job as an asyncio task costs any consumer (no checks);"
            f" `--async --concurrency 4` costs {number(out['cpu_ratio_async4_vs_asyncio_floor'])}x of the first."
            if out.get("cpu_ratio_async4_vs_asyncio_floor") is not None
            else ""
        )
        + (
            " The checked loop with a task per job on a loop thread (the first asyncio loop doing the checks, on"
            " an `async def handle` job) is what `--async --concurrency 4` is read against:"
            f" `--async --concurrency 4` costs {number(asyncio_ratio)}x of it."
            if (asyncio_ratio := out.get("cpu_ratio_async4_vs_boto3_asyncio_checked")) is not None
            else ""
        ),
        "",
        "## Lambda handler",
        "",
        "| measure | lambda_handlers.sqs | floor | ratio | floor with sqsjobs' checks | ratio to it "
        "| required floor | its ratio to the floor | ours to it |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| CPU per record (µs) | {number(out.get('lambda_cpu_us_per_record'))} | "
        f"{number(out.get('lambda_cpu_us_per_record_floor'))} | {number(out.get('lambda_cpu_ratio_per_record'))} | "
        f"{number(out.get('lambda_cpu_us_per_record_checked_floor'))} | "
        f"{number(out.get('lambda_cpu_ratio_vs_checked_floor'))} | "
        f"{number(out.get('lambda_cpu_us_per_record_required_floor'))} | "
        f"{number(out.get('lambda_required_floor_ratio'))} | {number(out.get('lambda_cpu_ratio_vs_required_floor'))} |",
        "| cold start: import (with the init phase) + first 10-record event (ms) | "
        f"{_ms(out.get('lambda_cold_start_s'))} | "
        f"{_ms(out.get('lambda_cold_start_floor_s'))} | {number(out.get('lambda_cold_start_ratio'))} | "
        f"{_ms(out.get('lambda_cold_start_pydantic_floor_s'))} | "
        f"{number(out.get('lambda_cold_start_ratio_vs_pydantic_floor'))} | | | |",
        f"| imports alone (ms) | {_ms(out.get('lambda_import_s'))} | {_ms(out.get('lambda_import_baseline_s'))} | "
        f"{number(out.get('lambda_import_ratio'))} | | | | | |",
        "",
        "The floor: Powertools' `BatchProcessor` + `process_partial_response` with a record handler that "
        "`json.loads` the body (and `import boto3` for the cold start). With sqsjobs' checks: per record, the "
        "body decoded as an untrusted envelope and the payload validated by its job class; for the cold start, "
        "pydantic imported and one payload model built and used. The required floor: the checked one plus what "
        "the success path of a plain job on a standard queue needs, each in its cheapest form (the deadline "
        "guard, the not-before time, a plain-job check, attempt, tries and context, middleware and span, the "
        "`processed` event to the job log lines and the dashboard's counters), written straight, without the "
        "runner's structure (benchmarks/lambda_bench.py, `required_floor_handler`).",
        "",
        "## Dispatch CPU by payload size",
        "",
        "| payload | jobs | `dispatch_many` µs/job | raw `send_message_batch` µs/job | ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for size in ("1kb", "200kb", "2mb"):
        ratio = out.get(f"dispatch_cpu_ratio_vs_boto3_{size}")
        lines.append(
            f"| {size.upper().replace('KB', ' KB').replace('MB', ' MB')} | {out.get(f'dispatch_jobs_{size}', '-')} | "
            f"{number(out.get(f'dispatch_cpu_us_per_job_sqsjobs_{size}'))} | "
            f"{number(out.get(f'dispatch_cpu_us_per_job_boto3_{size}'))} | "
            f"{ratio if isinstance(ratio, str) else number(ratio)} |"
        )
    lines += [
        "",
        "2 MB goes through S3 on both sides: sqsjobs' own offload, and AWS's amazon-sqs-extended-client for boto3.",
        "",
        "## Targets",
        "",
    ]
    measured = [c for c in checks if c.met is not None]
    lines.append(f"{sum(1 for c in measured if c.met)}/{len(measured)} met.")
    lines.append("")
    lines += [f"- {c.line()}" for c in checks]
    lines.append("")
    if versions or skipped:
        lines += ["## Peers", ""]
        lines += [f"- {name}: {version}" for name, version in versions.items()]
        lines += [f"- {name}: skipped, {why}" for name, why in skipped.items()]
        lines.append("")
    lines += ["## Chart", ""]
    lines.append(f"_{chart_note}_" if chart_note else f"![consumer CPU per job]({png_name})")
    lines += ["", "## Every number", "", "```"]
    lines += [f"{name}={value if isinstance(value, str) else number(value)}" for name, value in out.items()]
    lines += ["```", ""]
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return number(seconds * 1e3) if seconds is not None else "-"


def _short(label: str) -> str:
    """`sqsjobs work --async --concurrency 4` -> `sqsjobs --async -c 4`, slanted under its bar."""
    label = (
        label.replace("sqsjobs work", "sqsjobs").replace("--concurrency ", "-c ").replace("raw boto3 loop", "raw boto3")
    )
    return label.replace("sqsjobs (defaults)", "sqsjobs defaults")


def _range(span: tuple[float, float] | None) -> str:
    return "" if span is None else f"{span[0]:.0f}-{span[1]:.0f}"


def _whiskers(rows: list[Row]) -> list[list[float]]:
    """How far below and above each bar its runs went (zero for a consumer run once). Ranges that overlap
    mean this run cannot rank the two consumers; ranges apart do not prove a ranking either."""
    below = [(r.worker_cpu_us or 0) - r.worker_cpu_range[0] if r.worker_cpu_range else 0.0 for r in rows]
    above = [r.worker_cpu_range[1] - (r.worker_cpu_us or 0) if r.worker_cpu_range else 0.0 for r in rows]
    return [below, above]


def _chart(path: Path, rows: list[Row], out: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.worker_cpu_us is not None]
    labels = [_short(r.label) for r in measured]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6.5), gridspec_kw={"width_ratios": [3, 2]})
    colours = [
        "#888888" if r.label.startswith("raw") else "#1f77b4" if "sqsjobs" in r.label else "#ff7f0e" for r in measured
    ]
    heights = [r.worker_cpu_us or 0 for r in measured]
    bars = left.bar(range(len(measured)), heights, color=colours, yerr=_whiskers(measured), capsize=2, ecolor="#444")
    for bar, row in zip(bars, measured, strict=True):
        left.annotate(
            f"{row.ratio:.2f}x" if row.ratio is not None else "",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    left.set_xticks(range(len(measured)), labels, fontsize=7, rotation=35, ha="right")
    left.set_ylabel("consumer CPU per job (µs, median; whiskers: its runs)")
    left.set_title("Consumers: CPU per no-op job (x raw boto3 above each bar)", fontsize=10)

    groups = [
        ("lambda/record", out.get("lambda_cpu_ratio_per_record")),
        ("lambda cold", out.get("lambda_cold_start_ratio")),
        ("dispatch 1 KB", out.get("dispatch_cpu_ratio_vs_boto3_1kb")),
        ("dispatch 200 KB", out.get("dispatch_cpu_ratio_vs_boto3_200kb")),
        ("dispatch 2 MB", out.get("dispatch_cpu_ratio_vs_boto3_2mb")),
    ]
    shown = [(name, value) for name, value in groups if isinstance(value, float)]
    right.bar(range(len(shown)), [v for _, v in shown], color="#1f77b4")
    right.axhline(1.0, color="#888888", linewidth=1)
    right.set_xticks(range(len(shown)), [n for n, _ in shown], fontsize=8, rotation=30, ha="right")
    right.set_ylabel("sqsjobs ÷ floor")
    right.set_title("Lambda and dispatch: ratio to the floor (1.0 = parity)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover - a helper module
    sys.exit("run python -m benchmarks.run")

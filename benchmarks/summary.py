"""A run's numbers: each consumer's median CPU against the raw boto3 loop, the floors beside them, the
targets checked, and the table's rows (benchmarks/README.md says how each is measured)."""

from __future__ import annotations

import statistics
from typing import Any

from . import dispatch_sizes, report
from .harness import MONITOR_KEY, SQSJOBS_DISPATCH_KEY, SQSJOBS_WORKER_KEY, Counts
from .systems import (
    ASYNC_FLOORS,
    BOTO3,
    CHECKED,
    CHECKED_ASYNCIO,
    CHECKED_POOL,
    CHECKED_POOL10,
    PEER_SYSTEMS,
    SQSJOBS_SETTINGS,
    SQSJOBS_SYSTEMS,
    Outcome,
    Phase,
)

TARGET_CPU_RATIO_DEFAULTS = 1.1
TARGET_SQS_CALLS_PER_JOB_DEFAULTS = 0.30
TARGET_CPU_RATIO_TUNED = 1.3
TARGET_LAMBDA_COLD_START_RATIO = 1.2
TARGET_LAMBDA_CPU_RATIO_PER_RECORD = 3.0
TARGET_DISPATCH_CPU_RATIO = 1.1
#: A plain job makes no DynamoDB call; what a worker makes are its beats (docs/operations.md), per 10 s not per job.
TARGET_DDB_CALLS_PER_JOB = 0.01


def fmt(value: float) -> str:
    """A printed `name=value` number: as the tables, with three decimals below 10."""
    return report.number(value, small_decimals=3)


def _per_receive(counts: Counts, keys: tuple[str, ...], action: str) -> float:
    calls = counts.calls(keys, "sqs", action)
    return counts.entries(keys, "sqs", action) / calls if calls else 0.0


def checks_of(out: dict[str, Any], outcome: Outcome) -> list[report.Check]:
    checks = [
        _floored(out, "cpu_ratio_vs_boto3_defaults", TARGET_CPU_RATIO_DEFAULTS, "cpu_ratio_checked_floor_vs_boto3"),
        # Per-job calls: the few start-up lookups of each process (GetQueueUrl, GetQueueAttributes) are not
        # per job, so the floor of 0.30 is compared to two decimals.
        report.Check(
            "sqs_calls_per_job_defaults",
            out.get("sqs_calls_per_job_defaults"),
            TARGET_SQS_CALLS_PER_JOB_DEFAULTS,
            decimals=2,
        ),
        _floored(
            out, "cpu_ratio_vs_boto3_concurrency4", TARGET_CPU_RATIO_TUNED, f"cpu_ratio_{CHECKED_POOL.name}_vs_boto3"
        ),
        _floored(
            out, "cpu_ratio_vs_boto3_async4", TARGET_CPU_RATIO_TUNED, f"cpu_ratio_{CHECKED_ASYNCIO.name}_vs_boto3"
        ),
    ]
    peer = out.get("cpu_ratio_sqs_workers_vs_boto3")
    for name in SQSJOBS_SETTINGS:
        floor_key = _SETTING_FLOORS[name]
        checks.append(
            report.Check(
                f"cpu_ratio_vs_boto3_{name}",
                out.get(f"cpu_ratio_vs_boto3_{name}"),
                peer if isinstance(peer, float) else None,
                target_name="sqs-workers",
                skipped=outcome.skipped.get("sqs_workers"),
                floor=out.get(floor_key),
                floor_name=_FLOOR_NAMES[floor_key],
            )
        )
    checks += [
        _floored(
            out, "lambda_cold_start_ratio", TARGET_LAMBDA_COLD_START_RATIO, "lambda_cold_start_pydantic_floor_ratio"
        ),
        _floored(out, "lambda_cpu_ratio_per_record", TARGET_LAMBDA_CPU_RATIO_PER_RECORD, "lambda_required_floor_ratio"),
    ]
    for size in dispatch_sizes.SIZES:
        value = out.get(f"dispatch_cpu_ratio_vs_boto3_{size}")
        checks.append(
            report.Check(
                f"dispatch_cpu_ratio_vs_boto3_{size}",
                value if not isinstance(value, str) else None,
                TARGET_DISPATCH_CPU_RATIO,
                skipped=value if isinstance(value, str) else None,
            )
        )
    checks.append(report.Check("ddb_calls_per_job", out.get("ddb_calls_per_job"), TARGET_DDB_CALLS_PER_JOB))
    for check in checks:
        check.runs = _run_by_run(outcome, check)
    return checks


def _run_by_run(outcome: Outcome, check: report.Check) -> tuple[int, int] | None:
    """For a worker's CPU target: in how many runs it held, each run's ratio to the raw boto3 run of its own
    round against that round's target (a number, or sqs-workers' ratio in that round), unrounded as the median
    verdict compares. None with one run, rounds that do not pair up, or a target not measured."""
    setting = check.name.removeprefix("cpu_ratio_vs_boto3_")
    if setting not in SQSJOBS_SETTINGS or check.target is None:
        return None
    ours = _ratios(outcome, f"sqsjobs_{setting}")
    if len(ours) < 2:
        return None
    if check.target_name == "sqs-workers":
        targets = _ratios(outcome, "sqs_workers")
        if len(targets) != len(ours):
            return None
    else:
        targets = [check.target] * len(ours)
    return sum(a <= b for a, b in zip(ours, targets, strict=True)), len(ours)


def _ratios(outcome: Outcome, name: str) -> list[float]:
    """Each run's CPU per job against raw boto3's in the same round; empty when the rounds do not pair up."""
    runs, boto3 = outcome.runs.get(name, []), outcome.runs.get("boto3", [])
    if len(runs) != len(boto3):
        return []
    return [_cpu_per_job(a) / _cpu_per_job(b) for a, b in zip(runs, boto3, strict=True)]


#: What each floor is called in a target's line, by the key of its ratio in `out`.
_FLOOR_NAMES = {
    "cpu_ratio_checked_floor_vs_boto3": "checked loop",
    f"cpu_ratio_{CHECKED_POOL.name}_vs_boto3": "checked loop on 4 threads",
    f"cpu_ratio_{CHECKED_POOL10.name}_vs_boto3": "checked loop on 10 threads",
    f"cpu_ratio_{CHECKED_ASYNCIO.name}_vs_boto3": "checked asyncio loop",
    "lambda_cold_start_pydantic_floor_ratio": "pydantic floor",
    "lambda_required_floor_ratio": "required floor",
}


#: The floor each `sqsjobs work` setting is read against, by the key of its ratio in `out`.
_SETTING_FLOORS = {
    "defaults": "cpu_ratio_checked_floor_vs_boto3",
    "concurrency4": f"cpu_ratio_{CHECKED_POOL.name}_vs_boto3",
    "concurrency10": f"cpu_ratio_{CHECKED_POOL10.name}_vs_boto3",
    "async4": f"cpu_ratio_{CHECKED_ASYNCIO.name}_vs_boto3",
}


def _floored(out: dict[str, Any], name: str, target: float, floor_key: str) -> report.Check:
    """A target with the floor measured in the same run (its ratio at `floor_key`) beside it."""
    return report.Check(name, out.get(name), target, floor=out.get(floor_key), floor_name=_FLOOR_NAMES[floor_key])


def _cpu_per_job(phase: Phase) -> float:
    return phase.child.cpu_s / phase.jobs


def _summary(phases: list[Phase]) -> dict[str, Any]:
    """A consumer's numbers: the median CPU of its runs; calls from its worst run.

    The median, not the lowest: on a shared 2-core machine one consumer's runs spread by 5-50% with the
    minute each falls in, and the lowest of two let one fast minute decide a target (benchmarks/README.md,
    "Repeats"). `typical` is the run at the median (the lower of the middle two), whose calls, start-up
    and other details are shown."""
    ordered = sorted(phases, key=_cpu_per_job)
    typical = ordered[(len(ordered) - 1) // 2]
    keys = typical.system.keys
    n = typical.jobs
    return {
        "typical": typical,
        "jobs": n,
        "worker_cpu_us": statistics.median(_cpu_per_job(phase) for phase in phases) * 1e6,
        "dispatch_cpu_us": statistics.median(phase.dispatch_cpu_s / phase.jobs for phase in phases) * 1e6,
        "calls_per_job": max(phase.calls() / phase.jobs for phase in phases),
        "msgs_per_receive": _per_receive(typical.counts, keys, "ReceiveMessage"),
        "calls": _actions(typical.counts.by_action(keys, "sqs")),
        "peak_rss_mb": max(phase.child.peak_rss_mb for phase in phases),
        "wall_s": typical.child.wall_s,
    }


def _span(phases: list[Phase]) -> tuple[float, float] | None:
    """The lowest and highest CPU µs a job among a consumer's runs; None when it ran once."""
    if len(phases) < 2:
        return None
    per_job = [_cpu_per_job(phase) * 1e6 for phase in phases]
    return min(per_job), max(per_job)


def results(
    n: int,
    repeat: int,
    dispatch: dict[str, float],
    outcome: Outcome,
    quiet: Phase | None,
    pool: Phase | None,
) -> dict[str, Any]:
    """Every printed number of the consumers, targets first. Each consumer's median CPU counts (`_summary`)."""
    out: dict[str, Any] = {}
    runs = outcome.runs
    summaries = {name: _summary(phases) for name, phases in runs.items()}
    b3 = summaries["boto3"]
    # -- the targets: `sqsjobs work` at each setting, consumer CPU against the raw boto3 loop
    checked = summaries.get(CHECKED.name)
    if checked is not None:
        out["cpu_ratio_checked_floor_vs_boto3"] = checked["worker_cpu_us"] / b3["worker_cpu_us"]
        out[f"sqs_calls_per_job_{CHECKED.name}"] = checked["calls_per_job"]
    for name in SQSJOBS_SETTINGS:
        s = summaries[f"sqsjobs_{name}"]
        out[f"cpu_ratio_vs_boto3_{name}"] = s["worker_cpu_us"] / b3["worker_cpu_us"]
        out[f"sqs_calls_per_job_{name}"] = s["calls_per_job"]
        if checked is not None:
            out[f"cpu_ratio_vs_checked_floor_{name}"] = s["worker_cpu_us"] / checked["worker_cpu_us"]
    for pooled, setting in ((CHECKED_POOL, "concurrency4"), (CHECKED_POOL10, "concurrency10")):
        floor = summaries.get(pooled.name)
        if floor is not None:
            out[f"cpu_ratio_{pooled.name}_vs_boto3"] = floor["worker_cpu_us"] / b3["worker_cpu_us"]
            out[f"sqs_calls_per_job_{pooled.name}"] = floor["calls_per_job"]
            if f"sqsjobs_{setting}" in summaries:
                ratio = summaries[f"sqsjobs_{setting}"]["worker_cpu_us"] / floor["worker_cpu_us"]
                out[f"cpu_ratio_{setting}_vs_{pooled.name}"] = ratio
    for system in ASYNC_FLOORS:
        if system.name in summaries:
            out[f"cpu_ratio_{system.name}_vs_boto3"] = summaries[system.name]["worker_cpu_us"] / b3["worker_cpu_us"]
            out[f"sqs_calls_per_job_{system.name}"] = summaries[system.name]["calls_per_job"]
    async4 = summaries.get("sqsjobs_async4")
    if async4 is not None and "boto3_asyncio" in summaries:
        out["cpu_ratio_async4_vs_asyncio_floor"] = async4["worker_cpu_us"] / summaries["boto3_asyncio"]["worker_cpu_us"]
    checked_asyncio = summaries.get(CHECKED_ASYNCIO.name)
    if checked_asyncio is not None:
        out[f"cpu_ratio_{CHECKED_ASYNCIO.name}_vs_boto3"] = checked_asyncio["worker_cpu_us"] / b3["worker_cpu_us"]
        out[f"sqs_calls_per_job_{CHECKED_ASYNCIO.name}"] = checked_asyncio["calls_per_job"]
        if async4 is not None:
            ratio = async4["worker_cpu_us"] / checked_asyncio["worker_cpu_us"]
            out[f"cpu_ratio_async4_vs_{CHECKED_ASYNCIO.name}"] = ratio
    for system in PEER_SYSTEMS:
        if system.name in summaries:
            s = summaries[system.name]
            out[f"cpu_ratio_{system.name}_vs_boto3"] = s["worker_cpu_us"] / b3["worker_cpu_us"]
            out[f"sqs_calls_per_job_{system.name}"] = s["calls_per_job"]
            if s["jobs"] != n:
                out[f"jobs_{system.name}"] = s["jobs"]
        else:
            out[f"{system.name}_skipped"] = outcome.skipped.get(system.name, "not run")
    for system in PEER_SYSTEMS:
        if system.name in outcome.versions:
            out[f"{system.name}_version"] = outcome.versions[system.name]
    # -- the consumers in detail
    for name, s in summaries.items():
        out[f"worker_cpu_us_per_job_{name}"] = s["worker_cpu_us"]
        if len(runs[name]) > 1:
            out[f"worker_cpu_us_per_job_runs_{name}"] = ",".join(
                f"{_cpu_per_job(phase) * 1e6:.0f}" for phase in runs[name]
            )
        out[f"producer_cpu_us_per_job_{name}"] = s["dispatch_cpu_us"]
        out[f"msgs_per_receive_{name}"] = s["msgs_per_receive"]
        out[f"sqs_calls_{name}"] = s["calls"]
        out[f"peak_rss_mb_{name}"] = s["peak_rss_mb"]
    for name in SQSJOBS_SETTINGS:
        options = summaries[f"sqsjobs_{name}"]["typical"].child.extra.get("options") or {}
        out[f"sqsjobs_{name}_options"] = ",".join(
            f"{k}={options[k]}" for k in ("concurrency", "prefetch", "sleep", "event_loop") if k in options
        )
    if repeat > 1:
        floors = [CHECKED, CHECKED_POOL, CHECKED_POOL10, CHECKED_ASYNCIO, *ASYNC_FLOORS]
        for name in [f"sqsjobs_{s}" for s in SQSJOBS_SETTINGS] + [p.name for p in [*floors, *PEER_SYSTEMS]]:
            if name in runs and len(runs[name]) == len(runs["boto3"]):
                out[f"cpu_ratio_vs_boto3_per_run_{name}"] = ",".join(
                    fmt((a.child.cpu_s / a.jobs) / (b.child.cpu_s / b.jobs))
                    for a, b in zip(runs[name], runs["boto3"], strict=True)
                )

    # -- the names of earlier versions, now for `sqsjobs work` at its defaults. CPU per job is the median, as
    # the targets read it; start-up, switches, wall time and calls are the typical (median) run's own.
    sj_phase, b3_phase = summaries["sqsjobs_defaults"]["typical"], b3["typical"]
    sj, b3c = sj_phase.child, b3_phase.child
    sj_us, b3_us = summaries["sqsjobs_defaults"]["worker_cpu_us"], b3["worker_cpu_us"]
    per_job_sj = dispatch["dispatch_cpu_us_per_job_sqsjobs"] + sj_us
    per_job_b3 = dispatch["dispatch_cpu_us_per_job_boto3"] + b3_us
    sqsjobs_keys = (SQSJOBS_DISPATCH_KEY, SQSJOBS_WORKER_KEY)
    out["sqs_calls_per_job"] = summaries["sqsjobs_defaults"]["calls_per_job"]
    out["ddb_calls_per_job"] = (
        max(
            phase.counts.calls(tuple(k for k in phase.counts.raw if k != MONITOR_KEY), "dynamodb")
            for name in SQSJOBS_SETTINGS
            for phase in runs[f"sqsjobs_{name}"]
        )
        / n
    )
    out["client_cpu_us_per_job_sqsjobs"] = per_job_sj
    out["client_cpu_us_per_job_boto3"] = per_job_b3
    out["cpu_ratio_vs_boto3"] = per_job_sj / per_job_b3
    out["dispatch_many_ratio_vs_boto3"] = dispatch["dispatch_many_ratio_vs_boto3"]
    out["worker_peak_rss_mb"] = summaries["sqsjobs_defaults"]["peak_rss_mb"]
    out["boto3_sqs_calls_per_job"] = b3["calls_per_job"]
    out["sqsjobs_sqs_calls"] = summaries["sqsjobs_defaults"]["calls"]
    out["boto3_sqs_calls"] = b3["calls"]
    all_keys = tuple(k for k in sj_phase.counts.raw if k != MONITOR_KEY)
    other = sorted(sj_phase.counts.services(all_keys) - {"sqs"})
    out["sqsjobs_other_aws_calls"] = _actions(
        {f"{s}.{a}": c for s in other for a, c in sj_phase.counts.by_action(all_keys, s).items()}
    )
    out["sqsjobs_msgs_per_receive"] = _per_receive(sj_phase.counts, sqsjobs_keys, "ReceiveMessage")
    out["boto3_msgs_per_receive"] = b3["msgs_per_receive"]
    out["sqsjobs_entries_per_delete"] = _per_receive(sj_phase.counts, sqsjobs_keys, "DeleteMessageBatch")
    out["sqsjobs_entries_per_send"] = _per_receive(sj_phase.counts, sqsjobs_keys, "SendMessageBatch")
    out.update(dispatch)
    out["worker_cpu_us_per_job_sqsjobs"] = sj_us
    out["consumer_cpu_us_per_job_boto3"] = b3_us
    out["worker_cpu_ratio_vs_boto3"] = sj_us / b3_us
    out["client_cpu_us_per_job_sqsjobs_incl_startup"] = per_job_sj + (sj.total_cpu_s - sj.cpu_s) / n * 1e6
    out["client_cpu_us_per_job_boto3_incl_startup"] = per_job_b3 + (b3c.total_cpu_s - b3c.cpu_s) / n * 1e6
    out["worker_startup_cpu_ms"] = (sj.total_cpu_s - sj.cpu_s) * 1e3
    out["boto3_consumer_startup_cpu_ms"] = (b3c.total_cpu_s - b3c.cpu_s) * 1e3
    for label, child in (("worker", sj), ("boto3_consumer", b3c)):
        extra = child.extra
        if "user_s" in extra:
            out[f"{label}_sys_cpu_share"] = extra["sys_s"] / max(1e-9, extra["user_s"] + extra["sys_s"])
            switches = extra["voluntary_switches"] + extra["involuntary_switches"]
            out[f"{label}_context_switches_per_job"] = switches / n
    out["worker_wall_s"] = sj.wall_s
    out["boto3_consumer_wall_s"] = b3c.wall_s
    out["worker_log_lines"] = sj.stderr_lines
    out["boto3_consumer_peak_rss_mb"] = b3c.peak_rss_mb
    if quiet is not None and pool is not None:
        out["sqs_calls_per_job_log_warning"] = quiet.calls() / n
        out["sqsjobs_sqs_calls_log_warning"] = _actions(quiet.counts.by_action(sqsjobs_keys, "sqs"))
        out["sqsjobs_msgs_per_receive_log_warning"] = _per_receive(quiet.counts, sqsjobs_keys, "ReceiveMessage")
        out["worker_cpu_us_per_job_sqsjobs_log_warning"] = quiet.child.cpu_s / n * 1e6
        # One run each, read against the medians: as steady as a single run is (benchmarks/README.md).
        out["logging_cpu_us_per_job"] = sj_us - quiet.child.cpu_s / n * 1e6
        out["cpu_ratio_vs_boto3_log_warning"] = quiet.child.cpu_s / n * 1e6 / b3_us
        out["consumer_cpu_us_per_job_boto3_pool10"] = pool.child.cpu_s / n * 1e6
        out["cpu_ratio_vs_boto3_pool10"] = sj_us / (pool.child.cpu_s / n * 1e6)
    return out


def table_rows(out: dict[str, Any], outcome: Outcome) -> list[report.Row]:
    """One row per consumer for the Markdown table and the chart, boto3 first."""
    rows = []
    floors = [CHECKED, CHECKED_POOL, CHECKED_POOL10, CHECKED_ASYNCIO, *ASYNC_FLOORS]
    for system in [
        BOTO3,
        CHECKED,
        CHECKED_POOL,
        CHECKED_POOL10,
        CHECKED_ASYNCIO,
        *SQSJOBS_SYSTEMS,
        *ASYNC_FLOORS,
        *PEER_SYSTEMS,
    ]:
        name = system.name
        if name in (floor.name for floor in floors) and name not in outcome.runs:
            continue
        if name in outcome.skipped:
            rows.append(report.Row.skipped(system.label, outcome.skipped[name]))
            continue
        ratio = 1.0 if name == "boto3" else None
        if name.startswith("sqsjobs_"):
            ratio = out[f"cpu_ratio_vs_boto3_{name.removeprefix('sqsjobs_')}"]
        elif name == CHECKED.name:
            ratio = out["cpu_ratio_checked_floor_vs_boto3"]
        elif name != "boto3":
            ratio = out[f"cpu_ratio_{name}_vs_boto3"]
        calls = out["boto3_sqs_calls_per_job"] if name == "boto3" else out.get(f"sqs_calls_per_job_{name}")
        if name.startswith("sqsjobs_"):
            calls = out[f"sqs_calls_per_job_{name.removeprefix('sqsjobs_')}"]
        note = outcome.versions.get(name, "")
        if f"jobs_{name}" in out:
            note += f"; {out[f'jobs_{name}']} jobs (the first waves)"
        if name.startswith("sqsjobs_"):
            note = out.get(f"{name}_options", "")
        rows.append(
            report.Row(
                label=system.label,
                worker_cpu_us=out[f"worker_cpu_us_per_job_{name}"],
                ratio=ratio,
                worker_cpu_range=_span(outcome.runs[name]),
                producer_cpu_us=out[f"producer_cpu_us_per_job_{name}"],
                calls_per_job=calls,
                msgs_per_receive=out[f"msgs_per_receive_{name}"],
                note=note,
            )
        )
    return rows


def _actions(calls: dict[str, int]) -> str:
    return ",".join(f"{name}:{count}" for name, count in calls.items()) or "none"

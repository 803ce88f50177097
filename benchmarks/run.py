"""sqsjobs against hand-written boto3 and its peers, on one moto server in a separate process.

    python -m benchmarks.run            # 2,000 jobs per consumer (make bench)
    python -m benchmarks.run --quick    # 200 jobs, one run each, a smoke run

Prints `name=value` lines, then a `targets:` line; writes benchmarks/results/latest.md and
latest.png. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import cold_start, coordination_calls, kms_calls, peers, report
from .bench import Bench
from .harness import ROOT
from .summary import checks_of, fmt, results, table_rows
from .systems import (
    ASYNC_FLOORS,
    BOTO3,
    CHECKED,
    CHECKED_ASYNCIO,
    CHECKED_POOL,
    CHECKED_POOL10,
    PEER_SYSTEMS,
    SQSJOBS_SYSTEMS,
    Outcome,
    System,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark sqsjobs against raw boto3 and its peers on moto.")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per consumer run (default 2000)")
    parser.add_argument("--quick", action="store_true", help="200 jobs, one run each: a smoke run")
    parser.add_argument("--wave", type=int, default=200, help="jobs per wave (default 200)")
    parser.add_argument(
        "--refill-at",
        type=int,
        default=0,
        help="send the next wave once the backlog is at most this (default 0: each wave is drained first)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=4,
        help="runs of each consumer, in mirrored order; the median CPU counts (default 4)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the reference runs (log level, pool)")
    parser.add_argument("--no-peers", action="store_true", help="skip dramatiq, Celery and sqs-workers")
    parser.add_argument(
        "--celery-jobs",
        type=int,
        default=peers.DEFAULT_JOBS["celery"],
        help="Celery drains ~8 jobs/s at its defaults: it runs this many of the jobs, once (default %(default)s; "
        "0 = all)",
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="cProfile every thread of each sqsjobs setting and boto3 into DIR"
    )
    parser.add_argument(
        "--results", metavar="DIR", default=str(ROOT / "benchmarks" / "results"), help="where latest.md/png go"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs = 200
        args.wave = min(args.wave, 50)
        args.repeat = 1
    args.repeat = max(1, args.repeat)

    workdir = Path(tempfile.mkdtemp(prefix="sqsjobs-bench-"))
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    started = time.perf_counter()

    outcome = Outcome()
    systems = [BOTO3, CHECKED, CHECKED_POOL, CHECKED_POOL10, CHECKED_ASYNCIO, *SQSJOBS_SYSTEMS, *ASYNC_FLOORS]
    for peer in PEER_SYSTEMS:
        system = dataclasses.replace(peer, max_jobs=args.celery_jobs) if peer.kind == "celery" else peer
        if args.no_peers:
            outcome.skipped[system.name] = "--no-peers"
            continue
        why = peers.available(system.kind)
        if why is None:
            systems.append(system)
            outcome.versions[system.name] = peers.versions(system.kind)
        else:
            outcome.skipped[system.name] = why
            _progress(f"{system.label} skipped: {why}")

    bench = Bench(args, workdir)
    lambda_out: dict[str, Any] = {}
    try:
        out["jobs"] = bench.jobs
        out["wave"] = bench.wave
        out["refill_at"] = bench.refill_at
        _progress(f"moto on {bench.endpoint}; {bench.jobs} jobs per consumer in waves of {bench.wave}")
        dispatch = bench.dispatch_throughput()
        _progress("dispatch throughput done")
        sizes = bench.dispatch_by_size(rounds=1 if args.quick else 3)
        _progress("dispatch CPU by payload size done")
        for index in range(args.repeat):
            # Alternate the order, so drift on a shared machine hits every consumer alike.
            for system in systems if index % 2 == 0 else list(reversed(systems)):
                if (index > 0 and system.kind in peers.SINGLE_RUN) or system.name in outcome.skipped:
                    continue
                try:
                    phase = bench.consume(system)
                except RuntimeError as exc:
                    if system.kind not in peers.PEERS:
                        raise
                    # A peer that fails here is reported, not allowed to sink the run.
                    outcome.skipped[system.name] = f"failed: {str(exc).splitlines()[0]}"
                    outcome.runs.pop(system.name, None)
                    _progress(f"{system.label} failed, skipped: {exc}")
                    continue
                outcome.runs.setdefault(system.name, []).append(phase)
                _progress(
                    f"{system.label}: run {index + 1} done in {phase.child.wall_s:.1f} s, "
                    f"{phase.child.cpu_s / phase.jobs * 1e6:.0f} us CPU/job"
                )
        quiet = pool = None
        if not args.no_reference:
            quiet = bench.consume(SQSJOBS_SYSTEMS[0], log_level="WARNING")
            _progress(f"sqsjobs work defaults (log level WARNING) done in {quiet.child.wall_s:.1f} s")
            pool = bench.consume(System("boto3_pool10", "boto3-pool", "boto3 loop + 10-thread pool"))
            _progress(f"boto3 pool consumer done in {pool.child.wall_s:.1f} s")
        if profile_dir is not None:
            # Separate runs: cProfile slows the consumers several times, so they never feed the numbers.
            for system in [*SQSJOBS_SYSTEMS, BOTO3]:
                path = profile_dir / f"{system.name}.prof"
                bench.consume(system, profile=path)
                _write_profile_report(path)
                _progress(f"profiled {system.label}: {path} and {path.with_suffix('.txt')}")
        _progress("lambda handler: CPU per record, cold start (import + first event)")
        lambda_out = bench.lambda_handler(
            events=10 if args.quick else 50, rounds=2 if args.quick else 5, cold_rounds=3 if args.quick else 7
        )
    finally:
        bench.close()
    shutil.rmtree(workdir, ignore_errors=True)

    out.update(results(bench.jobs, args.repeat, dispatch, outcome, quiet, pool))
    out.update(sizes)
    out.update(lambda_out)
    _progress("lambda imports alone (fresh interpreters)")
    out.update(cold_start.measure(rounds=3 if args.quick else 7))
    _progress("DynamoDB calls per job of the coordination features")
    out.update(coordination_calls.measure())
    _progress("KMS calls per encrypted job (data keys cached)")
    out.update(kms_calls.measure())
    out["bench_wall_s"] = time.perf_counter() - started
    if profile_dir is not None:
        out["profile_dir"] = str(profile_dir)

    checks = checks_of(out, outcome)
    results_dir = Path(args.results)
    written = report.write(results_dir, out, checks, table_rows(out, outcome), outcome.skipped, outcome.versions)
    out.update(written)

    for name, value in out.items():
        print(f"{name}={value if isinstance(value, str) else fmt(value)}")
    measured = [c for c in checks if c.met is not None]
    met = [c for c in measured if c.met]
    print(f"targets: {len(met)}/{len(measured)} met; " + "; ".join(c.line() for c in checks))
    sys.stdout.flush()
    return 1 if args.strict and len(met) < len(measured) else 0


def _write_profile_report(path: Path) -> None:
    import io
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(str(path), stream=text)
    text.write("CPU time per thread, all threads merged; sorted by own time\n")
    stats.sort_stats("tottime").print_stats(40)
    text.write("\nsorted by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(60)
    path.with_suffix(".txt").write_text(text.getvalue())


_STARTED = time.monotonic()


def _progress(message: str) -> None:
    print(f"# [{time.monotonic() - _STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

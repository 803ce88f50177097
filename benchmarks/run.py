"""sqsjobs against hand-written boto3, on one moto server in a separate process.

    python -m benchmarks.run            # 2,000 jobs (make bench)
    python -m benchmarks.run --quick    # 200 jobs, a smoke run

Prints `name=value` lines, then a `targets:` line. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import (
    BOTO3_CONSUMER_KEY,
    BOTO3_DISPATCH_KEY,
    MONITOR_KEY,
    REGION,
    SECRET,
    SETUP_KEY,
    SQSJOBS_DISPATCH_KEY,
    SQSJOBS_WORKER_KEY,
    Child,
    ChildResult,
    CountingServer,
    Counts,
    child_env,
    sqs_client,
)

SQSJOBS_KEYS = (SQSJOBS_DISPATCH_KEY, SQSJOBS_WORKER_KEY)
BOTO3_KEYS = (BOTO3_DISPATCH_KEY, BOTO3_CONSUMER_KEY)

TARGET_SQS_CALLS_PER_JOB = 0.35
TARGET_DDB_CALLS_PER_JOB = 0
TARGET_CPU_RATIO = 1.5

Dispatcher = Callable[[range], None]


@dataclass
class Phase:
    """One consumer run: who consumed, what the server counted, and the dispatch side's CPU."""

    child: ChildResult
    counts: Counts


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.jobs: int = args.jobs
        self.wave: int = min(args.wave, args.jobs)
        self.refill_at: int = args.refill_at if args.refill_at is not None else self.wave // 4
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self.server = CountingServer(workdir)
        self.server.wait_ready()
        self.endpoint = self.server.endpoint
        # sqsjobs in this process (dispatch_many, provision) builds its client from the environment.
        os.environ.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_ACCESS_KEY_ID=SQSJOBS_DISPATCH_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET,
            AWS_DEFAULT_REGION=REGION,
        )
        for name in ("AWS_PROFILE", "AWS_REGION", "AWS_SESSION_TOKEN"):
            os.environ.pop(name, None)
        for name in [n for n in os.environ if n.startswith(("AWS_ENDPOINT_URL_", "SQSJOBS_"))]:
            os.environ.pop(name)
        from sqsjobs import aws

        aws.reset_clients()
        self.setup = sqs_client(self.endpoint, SETUP_KEY)
        self.monitor = sqs_client(self.endpoint, MONITOR_KEY)
        self.boto3_dispatch = sqs_client(self.endpoint, BOTO3_DISPATCH_KEY)

    def close(self) -> None:
        self.server.stop()

    # -- queues ------------------------------------------------------------------------
    def provision(self, prefix: str) -> str:
        """`sqsjobs provision` for logical queue `default` under `prefix`; returns its URL."""
        from sqsjobs import App
        from sqsjobs.provisioning import provision

        app = App(connection="sqs", queue_prefix=prefix, queues=["default"])
        provision(app, ["default"])
        return str(self.setup.get_queue_url(QueueName=f"{prefix}default")["QueueUrl"])

    def backlog(self, url: str) -> int:
        attrs = self.monitor.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    # -- the two ways to dispatch ------------------------------------------------------
    def sqsjobs_dispatcher(self, **settings: Any) -> Dispatcher:
        """Job.dispatch_many through a fresh App (its own queue URL cache), like a new process."""
        from sqsjobs import App

        from .jobs import Noop

        app = App(connection="sqs", **settings)

        def dispatch(numbers: range) -> None:
            with app.activate():
                Noop.dispatch_many([Noop(n=n) for n in numbers])

        return dispatch

    def boto3_dispatcher(self, queue_name: str | None = None, url: str | None = None) -> Dispatcher:
        """send_message_batch by hand, 10 bodies a call; resolves the URL once, as a program would."""
        client = self.boto3_dispatch
        resolved: list[str] = [url] if url else []

        def dispatch(numbers: range) -> None:
            if not resolved:
                resolved.append(client.get_queue_url(QueueName=queue_name)["QueueUrl"])
            items = list(numbers)
            for start in range(0, len(items), 10):
                client.send_message_batch(
                    QueueUrl=resolved[0],
                    Entries=[
                        {"Id": str(n), "MessageBody": json.dumps({"job": "noop", "payload": {"n": n}})}
                        for n in items[start : start + 10]
                    ],
                )

        return dispatch

    def waves(self) -> Iterator[range]:
        for start in range(0, self.jobs, self.wave):
            yield range(start, min(self.jobs, start + self.wave))

    # -- dispatch throughput -----------------------------------------------------------
    def dispatch_throughput(self) -> dict[str, float]:
        """Both sides send the same waves, interleaved, each wave to a fresh empty queue.

        No consumer runs, so nothing competes with this process for CPU; the queue
        reaches at most one wave deep. Queue URLs are given, so no lookups are timed.
        """
        warm = self._temp_queues("warm")
        self.sqsjobs_dispatcher(queues={"bench": warm[0]}, default_queue="bench")(range(10))
        self.boto3_dispatcher(url=warm[1])(range(10))
        self._delete_queues(warm)

        wall = {"sqsjobs": 0.0, "boto3": 0.0}
        cpu = {"sqsjobs": 0.0, "boto3": 0.0}
        for index, numbers in enumerate(self.waves()):
            urls = self._temp_queues(f"d{index}")
            sides = {
                "sqsjobs": self.sqsjobs_dispatcher(queues={"bench": urls[0]}, default_queue="bench"),
                "boto3": self.boto3_dispatcher(url=urls[1]),
            }
            order = ["sqsjobs", "boto3"] if index % 2 == 0 else ["boto3", "sqsjobs"]
            for side in order:
                c0, w0 = time.process_time(), time.perf_counter()
                sides[side](numbers)
                cpu[side] += time.process_time() - c0
                wall[side] += time.perf_counter() - w0
            self._delete_queues(urls)
        return {
            "dispatch_jobs_per_s_sqsjobs": self.jobs / wall["sqsjobs"],
            "dispatch_jobs_per_s_boto3": self.jobs / wall["boto3"],
            "dispatch_many_ratio_vs_boto3": wall["boto3"] / wall["sqsjobs"],
            "dispatch_cpu_us_per_job_sqsjobs": cpu["sqsjobs"] / self.jobs * 1e6,
            "dispatch_cpu_us_per_job_boto3": cpu["boto3"] / self.jobs * 1e6,
        }

    def _temp_queues(self, tag: str) -> tuple[str, str]:
        names = (f"b{self.run_id}-{tag}-sqsjobs", f"b{self.run_id}-{tag}-boto3")
        urls = [self.setup.create_queue(QueueName=name)["QueueUrl"] for name in names]
        return urls[0], urls[1]

    def _delete_queues(self, urls: tuple[str, str]) -> None:
        for url in urls:
            self.setup.delete_queue(QueueUrl=url)

    # -- consumers ---------------------------------------------------------------------
    def consume(self, kind: str, *, log_level: str = "INFO", profile: Path | None = None) -> Phase:
        """Feed the same waves to a fresh queue while one consumer child drains it.

        The next wave is sent once the queue's backlog (visible + in flight) is at or
        below `refill_at`, so it never holds more than wave + refill_at messages.
        """
        tag = f"{kind.replace('-', '')}{log_level.lower()[:4]}"
        prefix = f"b{self.run_id}-{tag}-"
        url = self.provision(prefix)
        if kind == "sqsjobs":
            env = child_env(
                self.endpoint,
                SQSJOBS_WORKER_KEY,
                SQSJOBS_QUEUE_PREFIX=prefix,
                SQSJOBS_APP="benchmarks.jobs",
                SQSJOBS_LOG_LEVEL=log_level,
            )
            dispatch = self.sqsjobs_dispatcher(queue_prefix=prefix)
            queue = "default"
        else:
            env = child_env(self.endpoint, BOTO3_CONSUMER_KEY)
            dispatch = self.boto3_dispatcher(queue_name=f"{prefix}default")
            queue = f"{prefix}default"
        self.server.reset()
        child = Child(kind, queue, self.jobs, self.args.concurrency, env, self.workdir, profile)
        try:
            waves = self.waves()
            pending = next(waves, None)
            while pending is not None:
                if child.exited():
                    break  # reap() below reports why
                if self.backlog(url) <= self.refill_at:
                    dispatch(pending)
                    pending = next(waves, None)
                else:
                    time.sleep(0.05)
            result = child.reap(timeout=max(120.0, self.jobs * 0.25))
        except BaseException:
            child.kill()
            raise
        counts = self.server.counts()
        if result.jobs < self.jobs:
            raise RuntimeError(f"{kind} consumer ran {result.jobs} of {self.jobs} jobs")
        return Phase(result, counts)


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def _per_receive(counts: Counts, keys: tuple[str, ...], action: str) -> float:
    calls = counts.calls(keys, "sqs", action)
    return counts.entries(keys, "sqs", action) / calls if calls else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark sqsjobs against hand-written boto3 on moto.")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per side (default 2000)")
    parser.add_argument("--quick", action="store_true", help="200 jobs: a smoke run")
    parser.add_argument("--wave", type=int, default=200, help="jobs per wave (default 200)")
    parser.add_argument(
        "--refill-at",
        type=int,
        default=None,
        help="send the next wave when the backlog is at most this (default wave/4; 0: drain each wave first)",
    )
    parser.add_argument("--concurrency", type=int, default=10, help="worker job threads (default 10)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference runs (log level, pool)")
    parser.add_argument("--profile", metavar="DIR", help="cProfile every thread of the sqsjobs worker into DIR")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs = 200
        args.wave = min(args.wave, 50)

    workdir = Path(tempfile.mkdtemp(prefix="sqsjobs-bench-"))
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    started = time.perf_counter()
    bench = Bench(args, workdir)
    try:
        out["jobs"] = bench.jobs
        out["wave"] = bench.wave
        out["refill_at"] = bench.refill_at
        out["concurrency"] = args.concurrency
        _progress(f"moto on {bench.endpoint}; {bench.jobs} jobs in waves of {bench.wave}")
        dispatch = bench.dispatch_throughput()
        _progress("dispatch throughput done")
        boto3 = bench.consume("boto3")
        _progress(f"boto3 consumer done in {boto3.child.wall_s:.1f} s")
        sqsjobs = bench.consume("sqsjobs")
        _progress(f"sqsjobs worker done in {sqsjobs.child.wall_s:.1f} s")
        quiet = pool = None
        if not args.no_reference:
            quiet = bench.consume("sqsjobs", log_level="WARNING")
            _progress(f"sqsjobs worker (log level WARNING) done in {quiet.child.wall_s:.1f} s")
            pool = bench.consume("boto3-pool")
            _progress(f"boto3 pool consumer done in {pool.child.wall_s:.1f} s")
        if profile_dir is not None:
            # A separate run: cProfile slows the worker several times, so it never feeds the numbers.
            for kind in ("sqsjobs", "boto3"):
                path = profile_dir / f"{kind}.prof"
                bench.consume(kind, profile=path)
                _write_profile_report(path)
                _progress(f"profiled {kind} consumer: {path} and {path.with_suffix('.txt')}")
    finally:
        bench.close()
    shutil.rmtree(workdir, ignore_errors=True)

    n = bench.jobs
    sj, b3 = sqsjobs.child, boto3.child
    sj_counts, b3_counts = sqsjobs.counts, boto3.counts
    per_job_sj = dispatch["dispatch_cpu_us_per_job_sqsjobs"] + sj.cpu_s / n * 1e6
    per_job_b3 = dispatch["dispatch_cpu_us_per_job_boto3"] + b3.cpu_s / n * 1e6
    all_keys = tuple(k for k in sj_counts.raw if k != MONITOR_KEY)

    out["sqs_calls_per_job"] = sj_counts.calls(SQSJOBS_KEYS, "sqs") / n
    out["ddb_calls_per_job"] = sj_counts.calls(all_keys, "dynamodb") / n
    out["client_cpu_us_per_job_sqsjobs"] = per_job_sj
    out["client_cpu_us_per_job_boto3"] = per_job_b3
    out["cpu_ratio_vs_boto3"] = per_job_sj / per_job_b3
    out["dispatch_many_ratio_vs_boto3"] = dispatch["dispatch_many_ratio_vs_boto3"]
    out["worker_peak_rss_mb"] = sj.peak_rss_mb
    # -- details
    out["boto3_sqs_calls_per_job"] = b3_counts.calls(BOTO3_KEYS, "sqs") / n
    out["sqsjobs_sqs_calls"] = _actions(sj_counts.by_action(SQSJOBS_KEYS, "sqs"))
    out["boto3_sqs_calls"] = _actions(b3_counts.by_action(BOTO3_KEYS, "sqs"))
    other = sorted(sj_counts.services(all_keys) - {"sqs"})
    out["sqsjobs_other_aws_calls"] = _actions(
        {f"{s}.{a}": c for s in other for a, c in sj_counts.by_action(all_keys, s).items()}
    )
    out["sqsjobs_msgs_per_receive"] = _per_receive(sj_counts, SQSJOBS_KEYS, "ReceiveMessage")
    out["boto3_msgs_per_receive"] = _per_receive(b3_counts, BOTO3_KEYS, "ReceiveMessage")
    out["sqsjobs_entries_per_delete"] = _per_receive(sj_counts, SQSJOBS_KEYS, "DeleteMessageBatch")
    out["sqsjobs_entries_per_send"] = _per_receive(sj_counts, SQSJOBS_KEYS, "SendMessageBatch")
    out.update(dispatch)
    out["worker_cpu_us_per_job_sqsjobs"] = sj.cpu_s / n * 1e6
    out["consumer_cpu_us_per_job_boto3"] = b3.cpu_s / n * 1e6
    out["worker_cpu_ratio_vs_boto3"] = sj.cpu_s / b3.cpu_s
    out["client_cpu_us_per_job_sqsjobs_incl_startup"] = dispatch["dispatch_cpu_us_per_job_sqsjobs"] + (
        sj.total_cpu_s / n * 1e6
    )
    out["client_cpu_us_per_job_boto3_incl_startup"] = dispatch["dispatch_cpu_us_per_job_boto3"] + (
        b3.total_cpu_s / n * 1e6
    )
    out["worker_startup_cpu_ms"] = (sj.total_cpu_s - sj.cpu_s) * 1e3
    out["boto3_consumer_startup_cpu_ms"] = (b3.total_cpu_s - b3.cpu_s) * 1e3
    out["worker_wall_s"] = sj.wall_s
    out["boto3_consumer_wall_s"] = b3.wall_s
    out["worker_log_lines"] = sj.stderr_lines
    out["boto3_consumer_peak_rss_mb"] = b3.peak_rss_mb
    if quiet is not None and pool is not None:
        out["worker_cpu_us_per_job_sqsjobs_log_warning"] = quiet.child.cpu_s / n * 1e6
        out["logging_cpu_us_per_job"] = (sj.cpu_s - quiet.child.cpu_s) / n * 1e6
        out["cpu_ratio_vs_boto3_log_warning"] = (
            dispatch["dispatch_cpu_us_per_job_sqsjobs"] + quiet.child.cpu_s / n * 1e6
        ) / per_job_b3
        out["consumer_cpu_us_per_job_boto3_pool10"] = pool.child.cpu_s / n * 1e6
        out["cpu_ratio_vs_boto3_pool10"] = per_job_sj / (
            dispatch["dispatch_cpu_us_per_job_boto3"] + pool.child.cpu_s / n * 1e6
        )
    out["bench_wall_s"] = time.perf_counter() - started
    if profile_dir is not None:
        out["profile_dir"] = str(profile_dir)

    for name, value in out.items():
        print(f"{name}={value if isinstance(value, str) else _fmt(value)}")
    checks = [
        ("sqs_calls_per_job", out["sqs_calls_per_job"], "<=", TARGET_SQS_CALLS_PER_JOB),
        ("ddb_calls_per_job", out["ddb_calls_per_job"], "==", TARGET_DDB_CALLS_PER_JOB),
        ("cpu_ratio_vs_boto3", out["cpu_ratio_vs_boto3"], "<=", TARGET_CPU_RATIO),
    ]
    met = [(value <= target if op == "<=" else value == target) for _, value, op, target in checks]
    summary = "; ".join(
        f"{name} {_fmt(value)} {op} {target}: {'met' if ok else 'NOT MET'}"
        for (name, value, op, target), ok in zip(checks, met, strict=True)
    )
    print(f"targets: {sum(met)}/{len(met)} met — {summary}")
    sys.stdout.flush()
    return 1 if args.strict and not all(met) else 0


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


def _actions(calls: dict[str, int]) -> str:
    return ",".join(f"{name}:{count}" for name, count in calls.items()) or "none"


def _progress(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Instructions per job of each consumer, counted by valgrind's callgrind: the same number run after run.

    python -m benchmarks.instructions                 # every consumer below, 100 and 300 jobs each
    python -m benchmarks.instructions sqsjobs boto3   # only these
    python -m benchmarks.instructions dispatch-200kb  # dispatch_many against send_message_batch, by size
    python -m benchmarks.instructions lambda-ours lambda-required cold-ours cold-pydantic  # the Lambda handler

CPU time on a shared 2-core machine moves by ±15-50% from one run to the next, which hides a 5% change;
an instruction count does not move by 1%. Each consumer runs as `make bench` runs it (benchmarks.consumers,
in its own process, against the counting moto server), but on a queue filled beforehand and under
`valgrind --tool=callgrind`; the count per job is the difference between a run of 300 jobs and one of 100,
divided by 200, so start-up cancels out. It counts work, not what threads cost on top of it (switches,
caches): read it next to `make bench`'s CPU ratios (docs/performance.md, "Counted by instructions").
Needs `valgrind` on PATH; each run takes 15-60 s. Modules are compiled before the first count, every child
has PYTHONHASHSEED=0 and runs under `setarch -R` (no address-space randomisation) where util-linux provides
it: with both, the Lambda handler's count on saved events repeated to within one instruction.

The Lambda handler is counted on 50 ten-record events received from the counting server, as `make bench`
builds them: per record (`lambda-*`, benchmarks.lambda_bench's sides) by the difference of 6 and 2 rounds
over the events, and its cold start (`cold-*`: import, the init phase and the first event) as the count of a
fresh interpreter doing it less one that only reads the event. A cold start's count leaves out what the
kernel does for it (reading files, mapping memory), which its CPU time in `make bench` includes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from . import harness

#: name: (consumer kind, `sqsjobs work` options)
CONSUMERS = {
    "boto3": ("boto3", ""),
    "boto3-pool": ("boto3-pool", "--concurrency 4"),
    "boto3-checked": ("boto3-checked", ""),
    "boto3-checked-pool4": ("boto3-checked-pool", "--concurrency 4"),
    "boto3-asyncio-checked": ("boto3-asyncio-checked", ""),
    "sqsjobs": ("sqsjobs", ""),
    "sqsjobs-c4": ("sqsjobs", "--concurrency 4"),
    "sqsjobs-async": ("sqsjobs", "--async --concurrency 4"),
    "sqsjobs-c10": ("sqsjobs", "--concurrency 10"),
    "boto3-checked-pool10": ("boto3-checked-pool", "--concurrency 10"),
    "sqs-workers": ("sqs-workers", ""),
}
SMALL, LARGE = 100, 300
#: name: benchmarks.lambda_bench side, per record
LAMBDA_RECORD = {
    "lambda-ours": "ours",
    "lambda-required": "required",
    "lambda-checked": "checked",
    "lambda-floor": "floor",
}
#: name: benchmarks.lambda_bench side, one cold start
LAMBDA_COLD = {"cold-ours": "ours", "cold-pydantic": "pydantic", "cold-floor": "floor"}
LAMBDA_EVENTS, LAMBDA_ROUNDS = 50, (2, 6)
#: name: (payload size in benchmarks.dispatch_sizes, smaller and larger job count)
DISPATCHES = {"dispatch-1kb": ("1kb", 100, 300), "dispatch-200kb": ("200kb", 10, 30), "dispatch-2mb": ("2mb", 5, 10)}


def _counted(calls: Path) -> list[str]:
    """The command prefix that counts a Python child. Without address-space randomisation when `setarch`
    (util-linux) is there: Python hashes some objects by address, and where they land moved a count
    by a few percent from one run to the next (docs/performance.md, "Counting the record's path again")."""
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={calls}", sys.executable]
    return ["setarch", "-R", *valgrind] if shutil.which("setarch") else valgrind


def _repeatable(env: dict[str, str]) -> dict[str, str]:
    """One string hash seed for every counted child, so that both runs of a pair hash alike."""
    return {**env, "PYTHONHASHSEED": "0"}


def _compile_first() -> None:
    """Write the compiled modules before any count: a module changed since the last run would otherwise be
    compiled by the first child of a pair only, and the difference of the two would lose that work."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "sqsjobs", "benchmarks", "lambda_handlers"],
        check=False,
        cwd=harness.ROOT,
        capture_output=True,
    )


def count(server: harness.CountingServer, name: str, jobs: int) -> int:
    """Instructions of one consumer process that runs `jobs` jobs from a queue filled beforehand."""
    kind, options = CONSUMERS[name]
    endpoint = server.endpoint
    prefix = f"i{uuid.uuid4().hex[:6]}-"
    if kind in ("boto3", "boto3-pool"):  # the raw loops read what a raw producer sends
        setup = harness.sqs_client(endpoint, harness.SETUP_KEY)
        url = setup.create_queue(QueueName=f"{prefix}default")["QueueUrl"]
        for start in range(0, jobs, 10):
            entries = [
                {"Id": str(n), "MessageBody": json.dumps({"job": "noop", "payload": {"n": n}})}
                for n in range(start, min(jobs, start + 10))
            ]
            setup.send_message_batch(QueueUrl=url, Entries=entries)
        env = harness.child_env(endpoint, harness.BOTO3_CONSUMER_KEY)
        args = [kind, "--queue", f"{prefix}default", *options.split()]
    elif kind == "sqs-workers":
        from . import peers

        # The peer sends to a queue it does not create (benchmarks.bench creates it the same way).
        setup = harness.sqs_client(endpoint, harness.SETUP_KEY)
        setup.create_queue(QueueName=peers.sqs_queue_name(kind, prefix))
        send = peers.producer_sqs_workers(prefix)
        for start in range(0, jobs, 100):
            send(range(start, min(jobs, start + 100)))
        env = harness.child_env(endpoint, harness.BOTO3_CONSUMER_KEY)
        args = [kind, "--queue", prefix]
    else:
        from sqsjobs import App
        from sqsjobs.provisioning import provision

        from . import jobs as bench_jobs

        app = App(connection="sqs", queue_prefix=prefix, queues=["default"])
        provision(app, ["default"])
        asynchronous = "--async" in options or kind == "boto3-asyncio-checked"
        job = bench_jobs.AsyncNoop if asynchronous else bench_jobs.Noop
        with app.activate():
            for start in range(0, jobs, 100):
                job.dispatch_many([job(n=n) for n in range(start, min(jobs, start + 100))])
        env = harness.child_env(
            endpoint,
            harness.SQSJOBS_WORKER_KEY,
            SQSJOBS_QUEUE_PREFIX=prefix,
            SQSJOBS_APP="benchmarks.jobs",
            SQSJOBS_LOG_LEVEL="INFO",
        )
        if kind == "sqsjobs":
            args = ["sqsjobs", "--queue", "default", f"--worker-args={options}"]
        else:  # the checked loops read and validate the envelopes sqsjobs sent
            args = [kind, "--queue", f"{prefix}default", *options.split()]
    with tempfile.TemporaryDirectory() as workdir:
        out, calls = Path(workdir) / "out.json", Path(workdir) / "callgrind.out"
        command = [*_counted(calls), "-m", "benchmarks.consumers", *args, "--jobs", str(jobs), "--out", str(out)]
        done = subprocess.run(
            command, check=False, env=_repeatable(env), cwd=harness.ROOT, capture_output=True, text=True
        )
        if done.returncode or not out.exists() or json.loads(out.read_text()).get("jobs") != jobs:
            raise SystemExit(f"{name} ({jobs} jobs) failed:\n{done.stderr[-2000:]}")
        return max(
            int(line.split()[1]) for line in calls.read_text().splitlines() if line.startswith(("totals:", "summary:"))
        )


def count_dispatch(server: harness.CountingServer, bucket: str, side: str, size: str, jobs: int) -> int:
    """Instructions of one benchmarks.dispatch_sizes child sending `jobs` jobs of `size` (sqsjobs or boto3)."""
    setup = harness.sqs_client(server.endpoint, harness.SETUP_KEY)
    prefix = f"d{uuid.uuid4().hex[:6]}-"
    warm = setup.create_queue(QueueName=f"{prefix}warm")["QueueUrl"]
    url = setup.create_queue(QueueName=f"{prefix}{size}")["QueueUrl"]
    plan = {"bucket": bucket, "warm_url": warm, "sizes": {size: {"jobs": jobs, "urls": [url]}}}
    key = harness.SQSJOBS_DISPATCH_KEY if side == "sqsjobs" else harness.BOTO3_DISPATCH_KEY
    with tempfile.TemporaryDirectory() as workdir:
        plan_path, out, calls = Path(workdir) / "plan.json", Path(workdir) / "out.json", Path(workdir) / "cg.out"
        plan_path.write_text(json.dumps(plan))
        command = [
            *_counted(calls),
            "-m",
            "benchmarks.dispatch_sizes",
            side,
            "--plan",
            str(plan_path),
            "--out",
            str(out),
        ]
        env = _repeatable(harness.child_env(server.endpoint, key))
        done = subprocess.run(command, check=False, env=env, cwd=harness.ROOT, capture_output=True, text=True)
        if done.returncode or size not in json.loads(out.read_text() if out.exists() else "{}"):
            raise SystemExit(f"dispatch {side} {size} ({jobs} jobs) failed:\n{done.stderr[-2000:]}")
        return max(
            int(line.split()[1]) for line in calls.read_text().splitlines() if line.startswith(("totals:", "summary:"))
        )


def _lambda_events(server: harness.CountingServer, workdir: Path) -> tuple[Path, dict[str, str]]:
    """50 ten-record events of no-op jobs dispatched by sqsjobs, and the environment a function would have."""
    from sqsjobs import App
    from sqsjobs.provisioning import provision

    from . import jobs as bench_jobs

    prefix = f"l{uuid.uuid4().hex[:6]}-"
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"])
    provision(app, ["default"])
    with app.activate():
        for start in range(0, LAMBDA_EVENTS * 10, 100):
            bench_jobs.Noop.dispatch_many([bench_jobs.Noop(n=n) for n in range(start, start + 100)])
    url = harness.sqs_client(server.endpoint, harness.SETUP_KEY).get_queue_url(QueueName=f"{prefix}default")
    env = harness.child_env(
        server.endpoint, harness.LAMBDA_KEY, SQSJOBS_APP="benchmarks.jobs", SQSJOBS_QUEUE_PREFIX=prefix
    )
    path = workdir / "lambda-events.json"
    command = [sys.executable, "-m", "benchmarks.lambda_bench", "events", "--queue", url["QueueUrl"]]
    done = subprocess.run(
        [*command, "--events", str(LAMBDA_EVENTS), "--out", str(path)],
        check=False,
        env=env,
        cwd=harness.ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode or len(json.loads(path.read_text() if path.exists() else "[]")) < LAMBDA_EVENTS:
        raise SystemExit(f"the Lambda events could not be built:\n{done.stderr[-2000:]}")
    return path, env


def _count_lambda(args: list[str], env: dict[str, str]) -> int:
    """The whole child's count; `cold ours` must have run its init phase at import, as in `make bench`."""
    with tempfile.TemporaryDirectory() as workdir:
        calls = Path(workdir) / "callgrind.out"
        command = [*_counted(calls), "-m", "benchmarks.lambda_bench", *args]
        done = subprocess.run(
            command, check=False, env=_repeatable(env), cwd=harness.ROOT, capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"lambda_bench {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        if args[:2] == ["cold", "ours"] and not json.loads(done.stdout.splitlines()[-1]).get("warmed"):
            raise SystemExit(
                f"the handler's init phase built no App at import (not a cold start):\n{done.stderr[-2000:]}"
            )
        return max(
            int(line.split()[1]) for line in calls.read_text().splitlines() if line.startswith(("totals:", "summary:"))
        )


def lambda_counts(server: harness.CountingServer, names: list[str], workdir: Path) -> dict[str, float]:
    """Instructions per record (`lambda-*`) and per cold start (`cold-*`) of each side named."""
    events, env = _lambda_events(server, workdir)
    records = sum(len(event["Records"]) for event in json.loads(events.read_text()))
    result: dict[str, float] = {}
    small, large = LAMBDA_ROUNDS
    # The dashboard's counters off per record: their write when a minute ends made a count depend on the minute.
    quiet = {**env, "SQSJOBS_SNAPSHOTS": "false"}
    for name in [name for name in names if name in LAMBDA_RECORD]:
        side = ["repeat", LAMBDA_RECORD[name], "--events", str(events), "--rounds"]
        counts = [_count_lambda([*side, str(rounds)], quiet) for rounds in (small, large)]
        result[name] = (counts[1] - counts[0]) / ((large - small) * records)
        print(f"# {name}: {result[name]:,.0f} instructions per record", flush=True)
    cold = [name for name in names if name in LAMBDA_COLD]
    if cold:
        # Inside Lambda the handler runs its init phase at import: the name of a function says it is inside.
        env = {**env, "AWS_LAMBDA_FUNCTION_NAME": "sqsjobs-bench"}
        nothing = _count_lambda(["cold", "none", "--events", str(events)], env)
        for name in cold:
            result[name] = _count_lambda(["cold", LAMBDA_COLD[name], "--events", str(events)], env) - nothing
            print(f"# {name}: {result[name]:,.0f} instructions (import, init, first event)", flush=True)
    return result


def dispatch_per_job(server: harness.CountingServer, names: list[str]) -> dict[str, tuple[float, float]]:
    """Per dispatch size: (sqsjobs, raw boto3) instructions per job, by the difference of two runs."""
    import boto3

    from . import dispatch_sizes

    s3 = boto3.session.Session().client("s3", endpoint_url=server.endpoint, region_name=harness.REGION)
    bucket = f"d{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    result: dict[str, tuple[float, float]] = {}
    for name in names:
        size, small, large = DISPATCHES[name]
        if size == "2mb" and not dispatch_sizes.extended_client_available():
            print(f"# {name} skipped: amazon-sqs-extended-client is not installed (the `bench` extra)")
            continue
        ours, raw = (
            (count_dispatch(server, bucket, side, size, large) - count_dispatch(server, bucket, side, size, small))
            / (large - small)
            for side in ("sqsjobs", "boto3")
        )
        result[name] = (ours, raw)
        print(f"# {name}: {ours:,.0f} instructions per job, raw {raw:,.0f} ({ours / raw:.2f}x)", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Instructions per job of each consumer (callgrind).")
    choices = [*CONSUMERS, *DISPATCHES, *LAMBDA_RECORD, *LAMBDA_COLD]
    parser.add_argument("names", nargs="*", help=f"what to count (default: all of {', '.join(choices)})")
    args = parser.parse_args(argv)
    if unknown := set(args.names) - set(choices):
        parser.error(f"unknown name(s) {', '.join(sorted(unknown))}; choose from {', '.join(choices)}")
    if shutil.which("valgrind") is None:
        print("valgrind is not on PATH (Debian: apt install valgrind)", file=sys.stderr)
        return 2
    names = args.names or choices
    dispatches = [name for name in names if name in DISPATCHES]
    lambdas = [name for name in names if name in LAMBDA_RECORD or name in LAMBDA_COLD]
    names = [name for name in names if name in CONSUMERS]
    if "sqs-workers" in names:
        from . import peers

        if (why := peers.available("sqs-workers")) is not None:
            print(f"# sqs-workers skipped: {why}")
            names.remove("sqs-workers")
    # This process provisions and dispatches as the bench's producer does; its own SQSJOBS_* would leak in.
    for key in [k for k in os.environ if k.startswith(("SQSJOBS_", "AWS_ENDPOINT_URL_"))]:
        del os.environ[key]
    with tempfile.TemporaryDirectory() as workdir:
        server = harness.CountingServer(Path(workdir))
        os.environ.update(
            AWS_ENDPOINT_URL=server.endpoint,
            AWS_ACCESS_KEY_ID=harness.SQSJOBS_DISPATCH_KEY,
            AWS_SECRET_ACCESS_KEY=harness.SECRET,
            AWS_DEFAULT_REGION=harness.REGION,
        )
        try:
            server.wait_ready()
            _compile_first()
            per_job: dict[str, float] = {}
            sent = dispatch_per_job(server, dispatches) if dispatches else {}
            handler = lambda_counts(server, lambdas, Path(workdir)) if lambdas else {}
            for name in names:
                small, large = count(server, name, SMALL), count(server, name, LARGE)
                per_job[name] = (large - small) / (LARGE - SMALL)
                print(f"# {name}: {per_job[name]:,.0f} instructions per job", flush=True)
        finally:
            server.stop()
    base = per_job.get("boto3")
    if per_job:
        print("\n| consumer | instructions per job | x raw boto3 |\n| --- | ---: | ---: |")
    for name, value in per_job.items():
        print(f"| {name} | {value:,.0f} | {value / base:.2f} |" if base else f"| {name} | {value:,.0f} | |")
    if sent:
        print("\n| dispatch | `dispatch_many` | raw `send_message_batch` | x raw |\n| --- | ---: | ---: | ---: |")
    for name, (ours, raw) in sent.items():
        print(f"| {name} | {ours:,.0f} | {raw:,.0f} | {ours / raw:.2f} |")
    _print_lambda(handler)
    return 0


def _print_lambda(counts: dict[str, float]) -> None:
    """Each side against the floor it is read against: per record Powertools + json.loads and the required
    floor, a cold start the floor and the pydantic floor (docs/performance.md says what each does)."""
    for kind, floors in (("lambda", ("floor", "required")), ("cold", ("floor", "pydantic"))):
        rows = {name.split("-", 1)[1]: value for name, value in counts.items() if name.startswith(kind + "-")}
        if not rows:
            continue
        unit = "per record" if kind == "lambda" else "per cold start"
        present = [floor for floor in floors if floor in rows]
        print(f"\n| {kind} side | instructions {unit} |" + "".join(f" x {floor} |" for floor in present))
        print("| --- | ---: |" + " ---: |" * len(present))
        for side, value in rows.items():
            print(f"| {side} | {value:,.0f} |" + "".join(f" {value / rows[floor]:.2f} |" for floor in present))


if __name__ == "__main__":
    raise SystemExit(main())

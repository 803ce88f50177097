"""The bench itself: one moto server counting every call, the clients of each actor, and the phases run
against them (dispatch throughput, dispatch CPU by payload size, each consumer, the Lambda handler)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import cold_start, peers
from .harness import (
    BOTO3_DISPATCH_KEY,
    LAMBDA_KEY,
    MONITOR_KEY,
    REGION,
    ROOT,
    SECRET,
    SETUP_KEY,
    SQSJOBS_DISPATCH_KEY,
    Child,
    CountingServer,
    Producer,
    child_env,
    sqs_client,
)
from .systems import CHECKED_KINDS, Phase, System

Dispatcher = Callable[[range], float]  # sends those jobs, returns the CPU seconds it spent


class Bench:
    """The server, the per-actor clients, and the phases run against them."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.jobs: int = args.jobs
        self.wave: int = min(args.wave, args.jobs)
        self.refill_at: int = args.refill_at
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self._phases = 0
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

    # -- the ways to dispatch ----------------------------------------------------------
    def sqsjobs_dispatcher(self, job: str = "Noop", **settings: Any) -> Dispatcher:
        """Job.dispatch_many through a fresh App (its own queue URL cache), like a new process."""
        from sqsjobs import App

        from . import jobs

        cls = getattr(jobs, job)
        app = App(connection="sqs", **settings)

        def dispatch(numbers: range) -> float:
            start = time.process_time()
            with app.activate():
                cls.dispatch_many([cls(n=n) for n in numbers])
            return time.process_time() - start

        return dispatch

    def boto3_dispatcher(self, queue_name: str | None = None, url: str | None = None) -> Dispatcher:
        """send_message_batch by hand, 10 bodies a call; resolves the URL once, as a program would."""
        client = self.boto3_dispatch
        resolved: list[str] = [url] if url else []

        def dispatch(numbers: range) -> float:
            start = time.process_time()
            if not resolved:
                resolved.append(client.get_queue_url(QueueName=queue_name)["QueueUrl"])
            items = list(numbers)
            for first in range(0, len(items), 10):
                client.send_message_batch(
                    QueueUrl=resolved[0],
                    Entries=[
                        {"Id": str(n), "MessageBody": json.dumps({"job": "noop", "payload": {"n": n}})}
                        for n in items[first : first + 10]
                    ],
                )
            return time.process_time() - start

        return dispatch

    def waves(self, jobs: int | None = None) -> Iterator[range]:
        total = self.jobs if jobs is None else jobs
        for start in range(0, total, self.wave):
            yield range(start, min(total, start + self.wave))

    # -- dispatch throughput (1 KB, in this process) -------------------------------------
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
                w0 = time.perf_counter()
                cpu[side] += sides[side](numbers)
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

    def _delete_queues(self, urls: tuple[str, ...]) -> None:
        for url in urls:
            self.setup.delete_queue(QueueUrl=url)

    # -- dispatch CPU by payload size (children) ----------------------------------------
    def dispatch_by_size(self, rounds: int) -> dict[str, Any]:
        """Each side in its own child per round (alternating who goes first); the lowest CPU counts."""
        import boto3

        s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=SETUP_KEY,
            aws_secret_access_key=SECRET,
        )
        bucket = f"b{self.run_id}-payloads"
        s3.create_bucket(Bucket=bucket)
        counts = {
            "1kb": self.jobs,
            "200kb": max(10, self.jobs // 10),
            "2mb": max(5, self.jobs // 50),
        }
        cpu: dict[str, dict[str, list[float]]] = {"sqsjobs": {}, "boto3": {}}
        for index in range(rounds):
            for side in ("sqsjobs", "boto3") if index % 2 == 0 else ("boto3", "sqsjobs"):
                key = SQSJOBS_DISPATCH_KEY if side == "sqsjobs" else BOTO3_DISPATCH_KEY
                made = [self.setup.create_queue(QueueName=f"b{self.run_id}-s{index}{side}-warm")["QueueUrl"]]
                plan: dict[str, Any] = {"bucket": bucket, "warm_url": made[0], "sizes": {}}
                for size, jobs in counts.items():
                    urls = [
                        self.setup.create_queue(QueueName=f"b{self.run_id}-s{index}{side}-{size}-{wave}")["QueueUrl"]
                        for wave in range(-(-jobs // self.wave))
                    ]
                    made += urls
                    plan["sizes"][size] = {"jobs": jobs, "urls": urls}
                plan_path = self.workdir / f"plan-{side}-{index}.json"
                out_path = self.workdir / f"sizes-{side}-{index}.json"
                plan_path.write_text(json.dumps(plan))
                _run_child(
                    ["benchmarks.dispatch_sizes", side, "--plan", str(plan_path), "--out", str(out_path)],
                    child_env(self.endpoint, key),
                    f"dispatch sizes ({side})",
                )
                for size, seconds in json.loads(out_path.read_text()).items():
                    cpu[side].setdefault(size, []).append(seconds)
                self._delete_queues(tuple(made))
                _empty_bucket(s3, bucket)
        out: dict[str, Any] = {}
        for size, jobs in counts.items():
            ours = min(cpu["sqsjobs"][size]) / jobs * 1e6
            out[f"dispatch_cpu_us_per_job_sqsjobs_{size}"] = ours
            if size in cpu["boto3"]:
                floor = min(cpu["boto3"][size]) / jobs * 1e6
                out[f"dispatch_cpu_us_per_job_boto3_{size}"] = floor
                out[f"dispatch_cpu_ratio_vs_boto3_{size}"] = ours / floor
            else:
                out[f"dispatch_cpu_ratio_vs_boto3_{size}"] = "skipped: amazon-sqs-extended-client not installed"
            out[f"dispatch_jobs_{size}"] = jobs
        return out

    # -- consumers ---------------------------------------------------------------------
    def consume(self, system: System, *, log_level: str = "INFO", profile: Path | None = None) -> Phase:
        """Feed the same waves to a fresh queue while one consumer child drains it.

        The next wave is sent once the queue's backlog (visible + in flight) is at or
        below `refill_at` (0 by default: the consumer drains each wave), so the queue
        never holds more than wave + refill_at messages.
        """
        self._phases += 1
        jobs = min(self.jobs, system.max_jobs or self.jobs)
        tag = f"{system.name.replace('_', '')[:14]}{log_level.lower()[:4]}{self._phases}"
        prefix = f"b{self.run_id}-{tag}-"
        dispatch_key, consumer_key = system.keys
        producer: Producer | None = None
        if system.kind == "sqsjobs":
            url = self.provision(prefix)
            env = child_env(
                self.endpoint,
                consumer_key,
                SQSJOBS_QUEUE_PREFIX=prefix,
                SQSJOBS_APP="benchmarks.jobs",
                SQSJOBS_LOG_LEVEL=log_level,
            )
            dispatch = self.sqsjobs_dispatcher(system.job, queue_prefix=prefix)
            args = ["--queue", "default", "--worker-args", system.worker_args]
        elif system.kind in CHECKED_KINDS:
            url = self.provision(prefix)
            env = child_env(self.endpoint, consumer_key)
            dispatch = self.sqsjobs_dispatcher(system.job, queue_prefix=prefix)  # real envelopes to check
            args = ["--queue", f"{prefix}default"]
            if system.kind == "boto3-checked-pool":
                args += system.worker_args.split()  # its threads: `--concurrency N`
        elif system.raw:
            url = self.provision(prefix)
            env = child_env(self.endpoint, consumer_key)
            dispatch = self.boto3_dispatcher(queue_name=f"{prefix}default")
            args = ["--queue", f"{prefix}default", "--concurrency", "10"]
        else:
            url = self.setup.create_queue(QueueName=peers.sqs_queue_name(system.kind, prefix))["QueueUrl"]
            env = child_env(self.endpoint, consumer_key)
            producer = Producer(system.kind, prefix, child_env(self.endpoint, dispatch_key), self.workdir)
            dispatch = producer.send
            args = ["--queue", prefix]
        self.server.reset()
        child = Child(
            system.kind,
            [*args, "--jobs", str(jobs)],
            env,
            self.workdir,
            profile,
            stoppable=system.kind in peers.STOPPED_BY_PARENT,
        )
        dispatch_cpu = 0.0
        try:
            waves = self.waves(jobs)
            pending = next(waves, None)
            while pending is not None:
                if child.exited():
                    break  # reap() below reports why
                if self.backlog(url) <= self.refill_at:
                    dispatch_cpu += dispatch(pending)
                    pending = next(waves, None)
                else:
                    time.sleep(0.05)
            if child.stoppable:
                deadline = time.monotonic() + max(120.0, jobs * 0.25)
                while not child.exited() and self.backlog(url) > 0 and time.monotonic() < deadline:
                    time.sleep(0.1)
                child.stop()
            result = child.reap(timeout=max(120.0, jobs * 0.25))
        except BaseException:
            child.kill()
            raise
        finally:
            if producer is not None:
                producer.close()
        counts = self.server.counts()
        if result.jobs < jobs:
            raise RuntimeError(f"{system.label} consumer ran {result.jobs} of {jobs} jobs")
        return Phase(system, jobs, result, counts, dispatch_cpu)

    # -- lambda --------------------------------------------------------------------------
    def lambda_handler(self, events: int, rounds: int, cold_rounds: int) -> dict[str, Any]:
        """Per-record CPU and cold start of lambda_handlers.sqs on real envelopes from moto."""
        prefix = f"b{self.run_id}-lambda-"
        url = self.provision(prefix)
        dispatch = self.sqsjobs_dispatcher(queue_prefix=prefix)
        for numbers in self.waves(events * 10):
            dispatch(numbers)
        env = child_env(self.endpoint, LAMBDA_KEY, SQSJOBS_APP="benchmarks.jobs", SQSJOBS_QUEUE_PREFIX=prefix)
        events_path = self.workdir / "lambda-events.json"
        _run_child(
            ["benchmarks.lambda_bench", "events", "--queue", url, "--events", str(events), "--out", str(events_path)],
            env,
            "lambda events",
        )
        built = json.loads(events_path.read_text())
        if len(built) < events:
            raise RuntimeError(f"only {len(built)} of {events} lambda events could be built")
        self.server.reset()
        result_path = self.workdir / "lambda-per-record.json"
        _run_child(
            [
                "benchmarks.lambda_bench",
                "per-record",
                "--events",
                str(events_path),
                "--rounds",
                str(rounds),
                "--out",
                str(result_path),
            ],
            env,
            "lambda per record",
        )
        calls = self.server.counts()
        result = json.loads(result_path.read_text())
        records = result["records"]
        out: dict[str, Any] = {
            "lambda_cpu_us_per_record": result["ours_cpu_s"] / records * 1e6,
            "lambda_cpu_us_per_record_floor": result["floor_cpu_s"] / records * 1e6,
            "lambda_cpu_ratio_per_record": result["ours_cpu_s"] / result["floor_cpu_s"],
            "lambda_cpu_us_per_record_checked_floor": result["checked_cpu_s"] / records * 1e6,
            "lambda_cpu_ratio_vs_checked_floor": result["ours_cpu_s"] / result["checked_cpu_s"],
            "lambda_checked_floor_ratio": result["checked_cpu_s"] / result["floor_cpu_s"],
            "lambda_cpu_us_per_record_required_floor": result["required_cpu_s"] / records * 1e6,
            "lambda_cpu_ratio_vs_required_floor": result["ours_cpu_s"] / result["required_cpu_s"],
            "lambda_required_floor_ratio": result["required_cpu_s"] / result["floor_cpu_s"],
            "lambda_aws_calls_per_record": sum(
                calls.calls((LAMBDA_KEY,), service) for service in calls.services((LAMBDA_KEY,))
            )
            / (records * (rounds + 1)),
            "lambda_records": records,
        }
        # Inside Lambda the handler builds its App, runner, settler and SQS client at import (the init phase):
        # the cold start is measured with that init, as a function pays it (the floors build nothing there).
        cold_env = {**env, "AWS_LAMBDA_FUNCTION_NAME": "sqsjobs-bench"}
        out.update(cold_start.measure_first_event(str(events_path), cold_env, rounds=cold_rounds))
        return out


def _run_child(module_args: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *module_args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} exited {done.returncode}: {done.stderr.strip()[-3000:]}")


def _empty_bucket(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})

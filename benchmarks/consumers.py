"""The consumer child processes: an sqsjobs worker, a hand-written boto3 loop, or a peer.

    python -m benchmarks.consumers sqsjobs --queue default --jobs 2000 --out result.json \
        --worker-args "--concurrency 4"
    python -m benchmarks.consumers boto3 --queue NAME --jobs 2000 --out result.json
    python -m benchmarks.consumers dramatiq --queue PREFIX --jobs 2000 --out result.json

The parent (benchmarks.bench) sets the AWS and SQSJOBS_* environment. Each child
imports, builds its SQS client and looks its queue's URL up first, then measures CPU (`time.process_time()`,
every thread, plus the CPU of any child process it reaped meanwhile: Celery's
prefork pool) and wall time around the work loop only, and writes them as JSON
to --out. The parent also reads the whole process's rusage with os.wait4, which
includes interpreter start-up and imports.

- sqsjobs: the `sqsjobs work` command itself (`sqsjobs.cli`, parsed by typer), given
  `--app benchmarks.jobs --queue default --max-jobs N` and `--worker-args`; nothing else,
  so every other option is the CLI's default. The Worker it builds is measured around
  `run()` only (its SQS client built and its queue's URL looked up first, as every consumer's).
- boto3: one thread: receive_message(10, WaitTimeSeconds=10), json.loads each body,
  call a no-op, delete_message_batch; until N messages are deleted.
- boto3-pool: the same, but each received batch runs on a ThreadPoolExecutor of
  `concurrency` threads (the worker's threading model, minus everything else).
- boto3-checked: the boto3 loop doing per job what sqsjobs' standards require of any consumer
  (decode the envelope as untrusted, validate the payload, one log line): the floor.
- boto3-checked-pool: the checked loop with each received batch on a pool of `concurrency` threads:
  the floor for `sqsjobs work --concurrency N`, what running the same checks on N threads costs.
- boto3-asyncio: the boto3 loop with an `async def` handler, each message's coroutine run as a
  task on an event loop in another thread (`run_coroutine_threadsafe`), the batch awaited before
  its delete: the least any worker pays that polls with boto3 and runs jobs on a loop.
- boto3-asyncio-checked: the boto3-asyncio loop whose task per job does the checked loop's checks
  (its payload validated by `AsyncNoop`, whose `async def handle` the task awaits): the floor for
  `sqsjobs work --async`, what running the same checks as asyncio tasks costs.
- aiobotocore: the loop written for asyncio by hand: aiobotocore's receive, the batch's
  coroutines gathered as tasks, aiobotocore's delete; what a team using asyncio would write.
- dramatiq, celery, sqs-workers: see benchmarks.peers (`--queue` is then the prefix).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

#: The hand-written boto3 loops (run_boto3), each a combination of its `pool`, `checked` and `on_loop`.
BOTO3_KINDS = ("boto3", "boto3-pool", "boto3-checked", "boto3-checked-pool", "boto3-asyncio", "boto3-asyncio-checked")


def _noop(n: int) -> None:
    return None


def _peak_rss_mb() -> float:
    """This process's resident-memory high-water mark (VmHWM), which, unlike the rusage a
    parent reads, never includes the memory of the parent it was forked from."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Measured:
    """CPU (all threads) and wall time of a block; with `profile`, cProfile of every thread in it."""

    def __init__(self, profile: str | None = None) -> None:
        self.profile = profile
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self._finish: Callable[[], None] | None = None
        self._usage: Any = None
        self._children = 0.0
        self.children_cpu_s = 0.0
        self.usage: dict[str, float] = {}

    def __enter__(self) -> Measured:
        if self.profile:
            self._finish = _profile_threads(self.profile)
        self._usage = resource.getrusage(resource.RUSAGE_SELF)
        self._children = _children_cpu()
        self.cpu_s, self.wall_s = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_s, self.wall_s = time.process_time() - self.cpu_s, time.perf_counter() - self.wall_s
        self.children_cpu_s = _children_cpu() - self._children
        self.cpu_s += self.children_cpu_s
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.usage = {
            "user_s": usage.ru_utime - self._usage.ru_utime,
            "sys_s": usage.ru_stime - self._usage.ru_stime,
            "voluntary_switches": usage.ru_nvcsw - self._usage.ru_nvcsw,
            "involuntary_switches": usage.ru_nivcsw - self._usage.ru_nivcsw,
        }
        if self._finish is not None:
            self._finish()

    def result(self, jobs: int, exit_code: int) -> dict[str, Any]:
        return {
            "cpu_s": self.cpu_s,
            "wall_s": self.wall_s,
            "jobs": jobs,
            "exit": exit_code,
            "children_cpu_s": self.children_cpu_s,
            **self.usage,
        }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sqsjobs(queue: str, jobs: int, worker_args: str, profile: str | None = None) -> dict[str, Any]:
    """`sqsjobs work --app benchmarks.jobs --queue QUEUE --max-jobs N WORKER_ARGS`, in this process."""
    from sqsjobs.cli import cli
    from sqsjobs.cli import work as work_command
    from sqsjobs.worker import Worker

    out: dict[str, Any] = {}

    class MeasuredWorker(Worker):
        """The Worker `sqsjobs work` builds, measured around run() only."""

        def run(self, install_signals: bool = True) -> int:
            # Start-up, as every consumer here has it: the SQS client built and the queue's URL looked up
            # before the measured loop (the raw loops' `get_queue_url`, sqs-workers' `get_queue()`).
            # Everything else the worker does at start and stop is its own and is measured: the queue's
            # attributes and dead-letter check, its DynamoDB clients, the pause and restart marks, its
            # beat and the beat's removal, the dashboard's counters.
            connection = cast(Any, self.connection)
            for name in self.options.queues:
                connection.url(name)  # the SQS client's first call, as the raw loops' lookup
            out["options"] = {k: getattr(self.options, k) for k in self.options.__slots__}
            with Measured(profile) as measured:
                code = super().run(install_signals)
            out.update(measured.result(self.processed, code))
            return code

    work_command.Worker = MeasuredWorker  # type: ignore[attr-defined]
    argv = ["work", "--app", "benchmarks.jobs", "--queue", queue, "--max-jobs", str(jobs), *shlex.split(worker_args)]
    try:
        code = cli(argv, prog_name="sqsjobs", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
    if "cpu_s" not in out:
        raise SystemExit(f"sqsjobs work {' '.join(argv[1:])} exited {code} before its worker ran")
    out["exit"] = code if isinstance(code, int) else out["exit"]
    return out


def run_peer(peer: str, prefix: str, jobs: int, profile: str | None = None) -> dict[str, Any]:
    from .peers import CONSUMERS

    measured = Measured(profile)
    done = CONSUMERS[peer](prefix, jobs, measured)
    return measured.result(done, 0 if done >= jobs else 1)


def run_boto3(
    queue: str,
    jobs: int,
    concurrency: int,
    pool: bool,
    profile: str | None = None,
    checked: bool = False,
    on_loop: bool = False,
) -> dict[str, Any]:
    """The raw loop; `pool`: each batch on a thread pool; `on_loop`: each message as a task on a loop thread;
    `checked`: each job checked as sqsjobs' standards require (with `on_loop`, inside its task)."""
    import asyncio

    import boto3

    client = boto3.client("sqs")
    executor = ThreadPoolExecutor(concurrency) if pool else None
    loop = asyncio.new_event_loop() if on_loop else None
    if loop is not None:
        threading.Thread(target=loop.run_forever, daemon=True).start()

    def plain(message: Mapping[str, Any]) -> Any:
        _noop(**json.loads(message["Body"])["payload"])

    handle: Callable[[Mapping[str, Any]], Any] = plain

    async def handle_async(message: Mapping[str, Any]) -> None:
        await _async_noop(**json.loads(message["Body"])["payload"])

    if checked and on_loop:
        check = _checked_handler(queue, "AsyncNoop")

        async def handle_async(message: Mapping[str, Any]) -> None:
            await check(message)  # the job's `async def handle`, begun by the check

    elif checked:
        handle = _checked_handler(queue)

    done = 0
    deadline = time.monotonic() + 600
    url = client.get_queue_url(QueueName=queue)["QueueUrl"]  # start-up, as every consumer's here
    with Measured(profile) as measured:
        while done < jobs and time.monotonic() < deadline:
            response = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=10)
            messages = response.get("Messages", [])
            if not messages:
                continue
            if executor is not None:
                list(executor.map(handle, messages))
            elif loop is not None:
                for future in [asyncio.run_coroutine_threadsafe(handle_async(m), loop) for m in messages]:
                    future.result()
            else:
                for message in messages:
                    handle(message)
            client.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
            done += len(messages)
    if executor is not None:
        executor.shutdown()
    if loop is not None:
        loop.call_soon_threadsafe(loop.stop)
    return measured.result(done, 0 if done >= jobs else 1)


async def _async_noop(n: int) -> None:
    return None


def run_aiobotocore(queue: str, jobs: int, profile: str | None = None) -> dict[str, Any]:
    import asyncio

    from aiobotocore.session import get_session

    async def handle(message: dict[str, Any]) -> None:
        await _async_noop(**json.loads(message["Body"])["payload"])

    async def consume() -> dict[str, Any]:
        async with get_session().create_client("sqs") as client:
            url = (await client.get_queue_url(QueueName=queue))["QueueUrl"]  # start-up, as boto3's client
            done = 0
            deadline = time.monotonic() + 600
            with Measured(profile) as measured:
                while done < jobs and time.monotonic() < deadline:
                    response = await client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=10)
                    messages = response.get("Messages", [])
                    if not messages:
                        continue
                    await asyncio.gather(*(handle(m) for m in messages))
                    await client.delete_message_batch(
                        QueueUrl=url,
                        Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
                    )
                    done += len(messages)
            return measured.result(done, 0 if done >= jobs else 1)

    return asyncio.run(consume())


def _checked_handler(queue: str, job: str = "Noop") -> Callable[[Mapping[str, Any]], Any]:
    """What sqsjobs' standards make every job cost, whatever runs it: the body read as an untrusted
    envelope (`envelope.decode`), the payload validated by its job class, one log line per job
    through the worker's own logging. The loop around it is the raw one: no runner, events, hooks,
    threads, heartbeat or batched deleter. sqsjobs' ratio to this floor is the framework's own cost.

    Returns what the job's `handle` returned: for `AsyncNoop`, the coroutine the caller's task awaits
    (its log line is then written before that no-op body runs, which costs the same)."""
    from sqsjobs import logs
    from sqsjobs.envelope import decode
    from sqsjobs.events import JobEvent
    from sqsjobs.payload_fields import load

    from . import jobs

    cls = getattr(jobs, job)
    logs.configure("text", "INFO")

    def handle(message: Mapping[str, Any]) -> Any:
        envelope = decode(message["Body"])
        outcome = load(cls, envelope.payload).handle()
        logs.log_event(JobEvent("processed", envelope.id, envelope.job, queue, 1, envelope.dispatched_at))
        return outcome

    return handle


def _profile_threads(path: str) -> Callable[[], None]:
    """Profile every thread (cProfile sees only the thread that enabled it); return a merger.

    The timer is each thread's own CPU time, so waits (locks, sockets) cost nothing and the
    merged profile says where CPU goes, not where threads sleep.
    """
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile(time.thread_time)
    profiles.append(main)
    main.enable()

    def finish() -> None:
        main.disable()
        threading.Thread.run = original  # type: ignore[method-assign]
        with lock:
            stats = pstats.Stats(profiles[0])
            for profile in profiles[1:]:
                try:
                    stats.add(profile)
                except TypeError:  # a thread that never ran anything
                    continue
        stats.dump_stats(path)

    return finish


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A benchmark consumer (run by benchmarks.run).")
    parser.add_argument(
        "kind",
        choices=[
            "sqsjobs",
            "boto3",
            "boto3-pool",
            "boto3-checked",
            "boto3-checked-pool",
            "boto3-asyncio",
            "boto3-asyncio-checked",
            "aiobotocore",
            "dramatiq",
            "celery",
            "sqs-workers",
        ],
    )
    parser.add_argument(
        "--queue", required=True, help="logical queue (sqsjobs), SQS queue name (boto3) or queue prefix (peers)"
    )
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=10, help="the pools' threads")
    parser.add_argument("--worker-args", default="", help="sqsjobs: more `sqsjobs work` options")
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile", help="write merged cProfile stats of every thread here")
    args = parser.parse_args(argv)

    if args.kind == "sqsjobs":
        result = run_sqsjobs(args.queue, args.jobs, args.worker_args, args.profile)
    elif args.kind in BOTO3_KINDS:
        pool = args.kind in ("boto3-pool", "boto3-checked-pool")
        checked = args.kind in ("boto3-checked", "boto3-checked-pool", "boto3-asyncio-checked")
        on_loop = args.kind in ("boto3-asyncio", "boto3-asyncio-checked")
        result = run_boto3(args.queue, args.jobs, args.concurrency, pool, args.profile, checked, on_loop)
    elif args.kind == "aiobotocore":
        result = run_aiobotocore(args.queue, args.jobs, args.profile)
    else:
        result = run_peer(args.kind, args.queue, args.jobs, args.profile)
    result["peak_rss_mb"] = _peak_rss_mb()
    result["pid"] = os.getpid()
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()

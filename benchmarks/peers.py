"""The peers: other Python job libraries on SQS, each as its users run it, at its own defaults.

    dramatiq     dramatiq + dramatiq_sqs: `SQSBroker`, an in-process `dramatiq.Worker` (8 threads,
                 dramatiq's default), `actor.send()` one message at a time (dramatiq_sqs has no batch send)
    celery       Celery 5 + kombu's SQS transport (pycurl): `celery worker` as its CLI starts it
                 (`app.worker_main`: the prefork pool, one process per CPU, prefetch 4 per process,
                 kombu's 1 s polling interval and 10 s long polls), `task.delay()` one at a time
    sqs-workers  `SQSEnv` + `JobQueue.process_queue()` (one thread, 10 s long polls, batched deletes),
                 `task.delay()` inside `queue.add_batch()` (SendMessageBatch, 10 a call)

Each one runs in child processes of its own (a consumer and a producer, benchmarks.consumers and
`python -m benchmarks.peers produce`), so no peer's imports or patches reach another's numbers. None
of them is a dependency of sqsjobs: `pip install -e '.[bench]'` installs them, and a peer that is
not installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

#: peer -> (the distributions whose versions are printed, the modules it needs)
PEERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "dramatiq": (("dramatiq", "dramatiq-sqs"), ("dramatiq", "dramatiq_sqs")),
    "celery": (("celery", "kombu", "pycurl"), ("celery", "kombu", "pycurl")),
    "sqs-workers": (("sqs-workers",), ("sqs_workers",)),
}


def available(peer: str) -> str | None:
    """None when `peer` can run here, else why not (for the printed note)."""
    _, modules = PEERS[peer]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        return f"not installed ({', '.join(missing)}); pip install -e '.[bench]'"
    if peer == "celery":
        try:
            import pycurl  # noqa: F401  (kombu's SQS transport needs it; its import can fail on a bad libcurl)
        except ImportError as exc:
            return f"pycurl does not import ({exc}); kombu's SQS transport needs it"
    return None


def versions(peer: str) -> str:
    out = []
    for dist in PEERS[peer][0]:
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} ?")
    return ", ".join(out)


def sqs_queue_name(peer: str, prefix: str) -> str:
    """The SQS queue each peer reads and writes for logical queue `default` under `prefix`."""
    if peer == "dramatiq":
        return f"{prefix}_default"  # SQSBroker(namespace=prefix): "{namespace}_{queue}"
    return f"{prefix}default"  # celery (task_default_queue) and sqs-workers (queue_prefix) alike


def _endpoint() -> str:
    return os.environ["AWS_ENDPOINT_URL"]


def _noop(n: int) -> None:
    return None


# -- dramatiq -----------------------------------------------------------------------------


def _dramatiq(prefix: str, on_ack: Callable[[], None] | None = None) -> Any:
    import dramatiq
    from dramatiq_sqs import SQSBroker

    broker = SQSBroker(namespace=prefix)
    if on_ack is not None:
        acked = on_ack  # narrowed for the class below

        class Counted(dramatiq.Middleware):  # type: ignore[misc]
            def after_ack(self, broker: Any, message: Any) -> None:
                acked()

        broker.add_middleware(Counted())
    dramatiq.set_broker(broker)
    actor = dramatiq.actor(_noop, actor_name="noop", queue_name="default", broker=broker)
    return broker, actor


def consume_dramatiq(prefix: str, jobs: int, measured: Any) -> int:
    import dramatiq

    done = threading.Event()
    lock = threading.Lock()
    acked = [0]

    def on_ack() -> None:
        with lock:
            acked[0] += 1
            if acked[0] >= jobs:
                done.set()

    broker, _ = _dramatiq(prefix, on_ack)
    broker.sqs.meta.client.get_queue_url(QueueName=sqs_queue_name("dramatiq", prefix))  # a client, as start-up
    with measured:
        worker = dramatiq.Worker(broker)  # worker_threads=8, dramatiq's default
        worker.start()
        done.wait(600)
        worker.stop()
    return acked[0]


def producer_dramatiq(prefix: str) -> Callable[[range], None]:
    _, actor = _dramatiq(prefix)

    def send(numbers: range) -> None:
        for n in numbers:
            actor.send(n)

    return send


# -- celery -------------------------------------------------------------------------------


def _celery(prefix: str) -> Any:
    from urllib.parse import urlsplit

    from celery import Celery

    endpoint = urlsplit(_endpoint())
    key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    app = Celery("bench", broker=f"sqs://{key}:{secret}@{endpoint.hostname}:{endpoint.port}")
    app.conf.update(
        broker_transport_options={"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"), "is_secure": False},
        task_default_queue=f"{prefix}default",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    task = app.task(name="noop")(_noop)
    return app, task


def consume_celery(prefix: str, jobs: int, measured: Any) -> int:
    """`celery -A bench worker`, in this process; stopped (warm shutdown, as SIGTERM does) once the
    parent says every message is gone (its backlog poll), which it says on our stdin."""
    from celery import signals

    app, _ = _celery(prefix)
    received = [0]
    signals.task_received.connect(lambda **_: received.__setitem__(0, received[0] + 1), weak=False)

    def stop_when_told() -> None:
        sys.stdin.readline()
        os.kill(os.getpid(), signal.SIGTERM)

    def ready(**_: Any) -> None:
        # Measured from here: the pool's processes are up and the consumer is about to poll.
        measured.__enter__()
        threading.Thread(target=stop_when_told, daemon=True).start()

    signals.worker_ready.connect(ready, weak=False)
    with contextlib.suppress(SystemExit):
        app.worker_main(["worker", "--loglevel=WARNING"])
    measured.__exit__(None, None, None)
    return received[0]


def producer_celery(prefix: str) -> Callable[[range], None]:
    _, task = _celery(prefix)

    def send(numbers: range) -> None:
        for n in numbers:
            task.delay(n)

    return send


# -- sqs-workers --------------------------------------------------------------------------


def _sqs_workers(prefix: str) -> Any:
    from sqs_workers import SQSEnv

    env = SQSEnv(queue_prefix=prefix)
    queue = env.queue("default")
    task = queue.processor("noop")(_noop)
    return env, queue, task


def consume_sqs_workers(prefix: str, jobs: int, measured: Any) -> int:
    from sqs_workers.shutdown_policies import MaxTasksShutdown

    _, queue, _ = _sqs_workers(prefix)
    queue.get_queue()  # resolve the queue: start-up
    with measured:
        queue.process_queue(shutdown_policy=MaxTasksShutdown(jobs))  # wait_second=10, its default
    return jobs


def producer_sqs_workers(prefix: str) -> Callable[[range], None]:
    _, queue, task = _sqs_workers(prefix)

    def send(numbers: range) -> None:
        with queue.add_batch():
            for n in numbers:
                task.delay(n=n)

    return send


CONSUMERS: dict[str, Callable[[str, int, Any], int]] = {
    "dramatiq": consume_dramatiq,
    "celery": consume_celery,
    "sqs-workers": consume_sqs_workers,
}
PRODUCERS: dict[str, Callable[[str], Callable[[range], None]]] = {
    "dramatiq": producer_dramatiq,
    "celery": producer_celery,
    "sqs-workers": producer_sqs_workers,
}
#: Peers that never stop by themselves: the parent writes a line on their stdin once the queue is empty.
STOPPED_BY_PARENT = {"celery"}
#: At its defaults kombu waits `polling_interval` (1 s) between receives of `prefetch` (8) messages, so
#: Celery drains about 8 jobs a second: 2,000 jobs would take over 4 minutes. It runs once, whatever
#: --repeat says, on the first DEFAULT_JOBS of the jobs (the same waves, cut short; --celery-jobs).
SINGLE_RUN = {"celery"}
DEFAULT_JOBS = {"celery": 1000}


def produce(peer: str, prefix: str) -> None:
    """A producer child: for each `start stop` line on stdin, send those jobs, answer the CPU seconds."""
    send = PRODUCERS[peer](prefix)
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        start, stop = (int(x) for x in line.split())
        cpu = time.process_time()
        send(range(start, stop))
        print(f"{time.process_time() - cpu:.9f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A peer's producer (run by benchmarks.run).")
    parser.add_argument("command", choices=["produce"])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args(argv)
    produce(args.peer, args.prefix)


if __name__ == "__main__":
    main()

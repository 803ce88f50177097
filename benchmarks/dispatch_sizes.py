"""Dispatch CPU by payload size: `Blob.dispatch_many` against hand-written `send_message_batch`.

    python -m benchmarks.dispatch_sizes sqsjobs|boto3 --plan plan.json --out result.json

A child of benchmarks.run, one per side and round (the rounds alternate who goes first), so the
Extended Client's patch of boto3 never reaches the other side. The plan names, per size, the
jobs and fresh empty queues (URLs) to send them to, a wave of at most 200 jobs to each (moto slows
down as a queue gets deeper: 2,000 messages in one queue take 15 times as long), and the S3 bucket.
CPU is `process_time()` around the sending only, serialising included (the jobs' data is built
before, and one message of each size is sent first, so building the clients, S3's too, is start-up
on both sides).

- sqsjobs: `Blob.dispatch_many` through an App whose queue `bench` is that URL and whose bucket
  is the bench's; bodies over SQSJOBS_PAYLOAD_THRESHOLD (2 MB) go to S3 as Extended Client pointers.
- boto3: `json.dumps` + `send_message_batch`, at most 10 entries and 1 MiB a call; at 2 MB,
  which SQS refuses, AWS's own amazon-sqs-extended-client (`large_payload_support = bucket`),
  10 entries a call, or nothing when it is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from typing import Any

KB = 1000
SIZES = {"1kb": 1 * KB, "200kb": 200 * KB, "2mb": 2000 * KB}
BATCH_BYTES = 1_048_576


def extended_client_available() -> bool:
    return importlib.util.find_spec("sqs_extended_client") is not None


def _payload(size: int, n: int) -> str:
    return (f"{n:08d}" * (size // 8 + 1))[:size]


def run_sqsjobs(plan: dict[str, Any]) -> dict[str, float]:
    from sqsjobs import App

    from .jobs import Blob

    out: dict[str, float] = {}
    warm = App(connection="sqs", queues={"bench": plan["warm_url"]}, default_queue="bench", bucket=plan["bucket"])
    with warm.activate():
        Blob.dispatch_many([Blob(n=0, data="x")])
    for size_name, item in plan["sizes"].items():
        queues = {f"q{i}": url for i, url in enumerate(item["urls"])}
        app = App(connection="sqs", queues=queues, default_queue="q0", bucket=plan["bucket"])
        with app.activate():
            # One job of this size first: this App's clients (S3's too, at 2 MB) and lookups are start-up.
            Blob.dispatch_many([Blob(n=-1, data=_payload(SIZES[size_name], 0))])
            jobs = [Blob(n=n, data=_payload(SIZES[size_name], n)) for n in range(item["jobs"])]
            out[size_name] = 0.0
            for name, wave in zip(queues, _waves(jobs, len(queues)), strict=True):
                start = time.process_time()
                Blob.dispatch_many(wave, queue=name)
                out[size_name] += time.process_time() - start
    return out


def _waves(items: list[Any], count: int) -> list[list[Any]]:
    """`items` cut into `count` waves of (nearly) equal size, in order."""
    size = -(-len(items) // count)
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_boto3(plan: dict[str, Any]) -> dict[str, float]:
    import boto3

    client = boto3.session.Session().client("sqs")  # before the Extended Client patches boto3
    client.send_message(QueueUrl=plan["warm_url"], MessageBody="{}")
    out: dict[str, float] = {}
    for size_name, item in plan["sizes"].items():
        sender = client
        limit_bytes = BATCH_BYTES
        if SIZES[size_name] > BATCH_BYTES:
            if not extended_client_available():
                continue
            import sqs_extended_client  # noqa: F401  (patches boto3.Session)

            extended: Any = boto3.session.Session().client("sqs")  # attributes the Extended Client adds
            extended.large_payload_support = plan["bucket"]
            extended.use_legacy_attribute = False
            sender = extended
            limit_bytes = 10 * SIZES[size_name] + 1  # it offloads each body: 10 pointers a call
        payloads = [{"n": n, "data": _payload(SIZES[size_name], n)} for n in range(item["jobs"])]
        # One message of this size first: the clients (the Extended Client's S3 one too) are start-up.
        warm = [{"Id": "warm", "MessageBody": json.dumps({"job": "blob", "payload": payloads[0]})}]
        _send(sender, item["urls"][0], warm)
        out[size_name] = 0.0
        for url, wave in zip(item["urls"], _waves(payloads, len(item["urls"])), strict=True):
            start = time.process_time()
            _send_all(sender, url, wave, limit_bytes)
            out[size_name] += time.process_time() - start
    return out


def _send_all(sender: Any, url: str, payloads: list[dict[str, Any]], limit_bytes: int) -> None:
    """What a program would write: JSON bodies, batches of at most 10 entries and `limit_bytes`."""
    batch: list[dict[str, str]] = []
    batch_bytes = 0
    for payload in payloads:
        body = json.dumps({"job": "blob", "payload": payload})
        size = len(body.encode())
        if batch and (len(batch) == 10 or batch_bytes + size > limit_bytes):
            _send(sender, url, batch)
            batch, batch_bytes = [], 0
        batch.append({"Id": str(payload["n"]), "MessageBody": body})
        batch_bytes += size
    if batch:
        _send(sender, url, batch)


def _send(client: Any, url: str, entries: list[dict[str, str]]) -> None:
    response = client.send_message_batch(QueueUrl=url, Entries=entries)
    if response.get("Failed"):
        raise RuntimeError(f"send_message_batch failed: {response['Failed'][:2]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Dispatch CPU by payload size (run by benchmarks.run).")
    parser.add_argument("side", choices=["sqsjobs", "boto3"])
    parser.add_argument("--plan", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with open(args.plan) as f:
        plan = json.load(f)
    result = run_sqsjobs(plan) if args.side == "sqsjobs" else run_boto3(plan)
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()

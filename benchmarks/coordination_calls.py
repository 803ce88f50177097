"""DynamoDB calls per job for the coordination features, counted on the wire (botocore events).

Each number should be the minimum its guarantee needs (the counts are stated in the docstrings of
sqsjobs/unique.py, idempotency.py, once.py and runs.py):
plain 0, unique 2 (lock at dispatch, owner-checked release), rate-limited 1 (one atomic
counter update; the first job of each window pays one more to start it), idempotent 2
(claim "in progress", mark "completed"), batch member 3 (the "ended" record, outcome +
counters in one transaction, one consistent read; the batch's creation and callbacks are
spread over its jobs), chain link 3 (the "ended" record, dispatch-once mark "sending", then
"sent").
Runs on in-process moto: calls are counted, not timed.
"""

from __future__ import annotations

import os
from typing import Any

JOBS = 50


def measure() -> dict[str, float]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_ENDPOINT_URL")}
    from moto import mock_aws

    from sqsjobs import App, Job, Limit, RateLimited, aws, batch, chain, rate_limiter
    from sqsjobs.provisioning import provision
    from sqsjobs.worker import Worker, WorkerOptions

    class Plain(Job, name="bench.plain"):
        n: int

        def handle(self) -> None:
            pass

    class Unique(Job, name="bench.unique"):
        unique_for = 3600
        n: int

        def unique_id(self) -> str:
            return str(self.n)

        def handle(self) -> None:
            pass

    class Limited(Job, name="bench.limited"):
        n: int

        def middleware(self) -> list[Any]:
            return [RateLimited("bench")]

        def handle(self) -> None:
            pass

    class Idempotent(Job, name="bench.idempotent"):
        n: int

        def idempotency_key(self) -> str:
            return f"effect-{self.n}"

        def handle(self) -> None:
            pass

    rate_limiter("bench", Limit.per_minute(10_000))
    out: dict[str, float] = {}
    try:
        with mock_aws():
            aws.reset_clients()
            for label, cls in (
                ("plain", Plain),
                ("unique", Unique),
                ("rate_limited", Limited),
                ("idempotent", Idempotent),
                ("batch_member", Plain),
                ("chain_link", Plain),
            ):
                app = App(connection="sqs", queue_prefix=f"bench-{label}-")
                provision(app, ["default"], bucket=False)
                calls = [0]
                ddb = aws.client("dynamodb")

                def count(calls: list[int] = calls, **_: Any) -> None:
                    calls[0] += 1

                ddb.meta.events.register("before-call.dynamodb.*", count)
                with app.activate():
                    jobs = [cls(n=i) for i in range(JOBS)]
                    if label == "batch_member":
                        batch(jobs).then(Plain(n=-1)).dispatch()
                    elif label == "chain_link":
                        chain(jobs).dispatch()
                    else:
                        cls.dispatch_many(jobs)
                # One job thread for chains and batches: moto's in-process TransactWriteItems is not
                # thread-safe (it deep-copies tables that other threads are writing to).
                threads = 1 if label in ("batch_member", "chain_link") else 4
                Worker(app, WorkerOptions(sleep=1, concurrency=threads, stop_when_empty=True)).run(
                    install_signals=False
                )
                ddb.meta.events.unregister("before-call.dynamodb.*", count)
                out[f"ddb_calls_per_job_{label}"] = calls[0] / JOBS
    finally:
        os.environ.update(saved)
        aws.reset_clients()
    return out


if __name__ == "__main__":
    for name, value in measure().items():
        print(f"{name}={value:.2f}")

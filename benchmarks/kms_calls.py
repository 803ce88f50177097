"""KMS calls per encrypted job (`encrypted = True`), counted on the wire (botocore events), on in-process moto.

Data keys are cached on both sides (sqsjobs/encryption.py): a dispatcher asks GenerateDataKey once per
MAX_MESSAGES messages or MAX_AGE_S seconds, a worker asks Decrypt once per data key it has not seen.
So both figures should be far below 1: about 1/JOBS here, one data key for the whole run.
"""

from __future__ import annotations

import os
from typing import Any

JOBS = 200


def measure() -> dict[str, float]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_ENDPOINT_URL")}
    from moto import mock_aws

    from sqsjobs import App, Job, aws
    from sqsjobs.provisioning import provision
    from sqsjobs.worker import Worker, WorkerOptions

    class Sealed(Job, name="bench.encrypted"):
        encrypted = True
        n: int

        def handle(self) -> None:
            pass

    out: dict[str, float] = {}
    try:
        with mock_aws():
            aws.reset_clients()
            kms = aws.client("kms")
            key = kms.create_key(Description="sqsjobs bench")["KeyMetadata"]["KeyId"]
            calls = {"GenerateDataKey": 0, "Decrypt": 0}

            def count(model: Any, **_: Any) -> None:
                calls[model.name] = calls.get(model.name, 0) + 1

            kms.meta.events.register("before-call.kms.*", count)
            dispatcher = App(connection="sqs", queue_prefix="bench-kms-", kms_key=key)
            provision(dispatcher, ["default"], table=False, bucket=False)
            with dispatcher.activate():
                Sealed.dispatch_many([Sealed(n=i) for i in range(JOBS)])
            out["kms_calls_per_job_encrypted_dispatch"] = sum(calls.values()) / JOBS
            calls.clear()
            worker = App(connection="sqs", queue_prefix="bench-kms-", kms_key=key)  # its own (cold) cache
            Worker(worker, WorkerOptions(sleep=1, concurrency=4, stop_when_empty=True)).run(install_signals=False)
            out["kms_calls_per_job_encrypted_run"] = sum(calls.values()) / JOBS
            kms.meta.events.unregister("before-call.kms.*", count)
    finally:
        os.environ.update(saved)
        aws.reset_clients()
    return out


if __name__ == "__main__":
    for name, value in measure().items():
        print(f"{name}={value:.3f}")

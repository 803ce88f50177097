"""Interop with AWS's own `amazon-sqs-extended-client` (Python) on the moto server, both ways, both
pointer formats (`PayloadS3Pointer` + `ExtendedPayloadSize`, and the legacy `MessageS3Pointer` +
`SQSLargePayloadSize`).

Importing `sqs_extended_client` replaces `boto3.Session` for the whole process, so it is only ever
imported in a subprocess (the scripts below), never in the pytest process.

A worker reads only objects under SQSJOBS_BUCKET and SQSJOBS_PAYLOAD_PREFIX. Their producer writes
its object at a random uuid unless it is given a key (their `S3Key` message attribute), so a producer
that sends to sqsjobs names a key under the prefix — or the consumer sets the prefix to "".
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from sqsjobs import App, aws
from sqsjobs.envelope import Envelope
from sqsjobs.payloads import LEGACY_POINTER_CLASS, LEGACY_SIZE_ATTRIBUTE, POINTER_CLASS, SIZE_ATTRIBUTE
from sqsjobs.timing import utc_iso
from tests.e2e.conftest import E2E
from tests.e2e.e2e_jobs import Record
from tests.helpers import queue_url

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sqs_extended_client") is None,  # finds it without importing it
    reason="amazon-sqs-extended-client is not installed",
)

# Their client, as their README configures it: every body through S3; optionally the legacy format,
# and the object's key chosen with their `S3Key` attribute (else they pick a bare uuid).
SEND = """
import sys
import boto3
import sqs_extended_client  # noqa: F401  (patches boto3.Session)

url, bucket, body_file, legacy, key = sys.argv[1:6]
sqs = boto3.Session().client("sqs")
sqs.large_payload_support = bucket
sqs.always_through_s3 = True
sqs.use_legacy_attribute = legacy == "legacy"
attributes = {"S3Key": {"DataType": "String", "StringValue": key}} if key else {}
sqs.send_message(QueueUrl=url, MessageBody=open(body_file).read(), MessageAttributes=attributes)
"""

# Their consumer: receive (resolving the pointer), print the body, delete message and object.
RECEIVE = """
import sys
import boto3
import sqs_extended_client  # noqa: F401  (patches boto3.Session)

url, bucket, out_file = sys.argv[1:4]
sqs = boto3.Session().client("sqs")
sqs.large_payload_support = bucket
sqs.delete_payload_from_s3 = True
messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, MessageAttributeNames=["All"])["Messages"]
open(out_file, "w").write(messages[0]["Body"])
sqs.delete_message(QueueUrl=url, ReceiptHandle=messages[0]["ReceiptHandle"])
"""


def their_client(e2e: E2E, tmp_path: Path, script: str, *args: str) -> None:
    path = tmp_path / f"extended_{uuid.uuid4().hex[:6]}.py"
    path.write_text(script)
    done = subprocess.run(
        [sys.executable, str(path), *args],
        check=False,
        cwd=e2e.root,
        env=e2e.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def setup(e2e: E2E) -> App:
    """Fresh queues and a bucket of this test's own, so an empty bucket means nothing leaked."""
    return e2e.setup(bucket=f"{e2e.prefix}payloads")


def objects(app: App) -> list[str]:
    listed = aws.client("s3").list_objects_v2(Bucket=app.settings.bucket).get("Contents", [])
    return [o["Key"] for o in listed]


def peek(app: App) -> dict[str, Any]:
    """The one message on `default` as SQS holds it, left visible."""
    (message,) = aws.client("sqs").receive_message(
        QueueUrl=queue_url(app, "default"), VisibilityTimeout=0, MessageAttributeNames=["All"]
    )["Messages"]
    return message  # type: ignore[no-any-return]


def send_theirs(e2e: E2E, tmp_path: Path, app: App, legacy: bool, key: str) -> str:
    """A job sent by their producer; returns its job id."""
    job_id = str(uuid.uuid4())
    body = Envelope(
        id=job_id, job=Record.job_name, payload={"tag": "x" * 300_000}, queue="default", dispatched_at=utc_iso(0)
    ).encode()
    body_file = tmp_path / "body.json"
    body_file.write_text(body)
    mode = "legacy" if legacy else "current"
    their_client(e2e, tmp_path, SEND, queue_url(app, "default"), app.settings.bucket, str(body_file), mode, key)

    sent = peek(app)
    pointer = json.loads(sent["Body"])
    size = LEGACY_SIZE_ATTRIBUTE if legacy else SIZE_ATTRIBUTE
    assert pointer[0] == (LEGACY_POINTER_CLASS if legacy else POINTER_CLASS)
    assert pointer[1]["s3BucketName"] == app.settings.bucket
    assert sent["MessageAttributes"][size] == {"StringValue": str(len(body)), "DataType": "Number"}
    assert objects(app) == [pointer[1]["s3Key"]]
    assert not key or pointer[1]["s3Key"] == key
    return job_id


@pytest.mark.parametrize("legacy", [False, True], ids=["PayloadS3Pointer", "legacy MessageS3Pointer"])
def test_a_job_sent_by_the_extended_client_runs_on_our_worker_and_its_object_is_deleted(
    e2e: E2E, tmp_path: Path, legacy: bool
) -> None:
    app = setup(e2e)
    job_id = send_theirs(e2e, tmp_path, app, legacy, key=f"sqsjobs/{uuid.uuid4()}")

    worker = e2e.worker("--stop-when-empty", env=e2e.env(SQSJOBS_BUCKET=app.settings.bucket))
    assert worker.wait(30) == 0, worker.stderr()
    assert [event for event, _ in e2e.events(job_id)] == ["start", "end"], "it ran once, to the end"
    assert objects(app) == []
    assert e2e.queue_depth() == 0 and e2e.dlq_depth() == 0


def test_their_default_key_outside_our_prefix_is_refused_unless_the_prefix_is_empty(e2e: E2E, tmp_path: Path) -> None:
    """Their producer's own key (a bare uuid) is outside `sqsjobs/`: never read, never deleted; with
    SQSJOBS_PAYLOAD_PREFIX="" every key of the bucket is ours, and it runs."""
    app = setup(e2e)
    job_id = send_theirs(e2e, tmp_path, app, legacy=False, key="")
    (key,) = objects(app)
    env = e2e.env(SQSJOBS_BUCKET=app.settings.bucket)

    worker = e2e.worker("--stop-when-empty", env=env)
    assert worker.wait(30) == 0, worker.stderr()
    assert e2e.events(job_id) == [] and e2e.dlq_depth() == 1
    assert objects(app) == [key], "not ours to read, so not ours to delete"
    failed = e2e.cli("failed", "list", env=env)
    assert failed.returncode == 0 and "foreign_pointer" in failed.stdout, failed.stdout + failed.stderr

    everything = e2e.env(SQSJOBS_BUCKET=app.settings.bucket, SQSJOBS_PAYLOAD_PREFIX="")
    retried = e2e.cli("failed", "retry", "--all", env=everything)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    worker = e2e.worker("--stop-when-empty", env=everything)
    assert worker.wait(30) == 0, worker.stderr()
    assert [event for event, _ in e2e.events(job_id)] == ["start", "end"]
    # `failed retry` deletes only an object that is the job's own (`<prefix><job id>-<8 hex>`), so that a
    # forged DLQ message cannot make it delete another job's body: their key is not, and the bucket's
    # lifecycle rule removes it (docs/failed-jobs.md).
    assert objects(app) == [key]


def test_a_large_job_we_dispatch_is_read_by_the_extended_client(e2e: E2E, tmp_path: Path) -> None:
    app = setup(e2e)
    tag = "y" * 1_100_000  # over SQSJOBS_PAYLOAD_THRESHOLD
    job = e2e.dispatch(Record(tag=tag))
    (key,) = objects(app)
    ours = aws.client("s3").get_object(Bucket=app.settings.bucket, Key=key)["Body"].read().decode()

    out = tmp_path / "received.json"
    their_client(e2e, tmp_path, RECEIVE, queue_url(app, "default"), app.settings.bucket, str(out))

    theirs = json.loads(out.read_text())
    assert theirs == json.loads(ours)
    assert theirs["id"] == job.job_id and theirs["job"] == Record.job_name
    assert theirs["payload"] == Record(tag=tag).model_dump(mode="json")
    # Their consumer's own cleanup understood our pointer: message and object are both gone.
    assert objects(app) == []
    assert e2e.queue_depth() == 0

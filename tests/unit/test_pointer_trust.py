"""A payload pointer is text anyone with send rights on a queue writes: it is read only under the payload
bucket and prefix, read as a stream with a cap, and nothing it names outside that rule is ever deleted.

Bytes read are counted on the S3 response stream itself (a botocore `after-call` hook wraps the
GetObject body), so "bounded" means what the worker pulled off the wire, not what our code says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from lambda_handlers.sqs import SqsHandler
from sqsjobs import App, Job, aws
from sqsjobs.failed_jobs import FailedJobs
from sqsjobs.payloads import POINTER_CLASS, READ_CHUNK, SIZE_ATTRIBUTE
from sqsjobs.timing import utc_iso
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, dead_letters, dlq_url, payload_app, queue_url
from tests.lambda_events import deliver, failed_ids, receive_event

MIB = 1_048_576


class Seen(Job, name="pointer-trust.seen"):
    runs: ClassVar[list[str]] = []
    data: str = ""

    def handle(self) -> None:
        Seen.runs.append(self.job_id or "")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Seen.runs.clear()


@pytest.fixture
def app(moto: None, prefix: str) -> Iterator[App]:
    app = payload_app(prefix, payload_max_bytes=MIB)
    with app.activate():
        yield app


def envelope(job_id: str = "trust-1", data: str = "") -> bytes:
    return json.dumps(
        {
            "v": 1,
            "id": job_id,
            "job": Seen.job_name,
            "payload": {"data": data},
            "queue": "default",
            "dispatched_at": utc_iso(0),
        }
    ).encode()


def pointer(bucket: str, key: str, legacy: bool = False) -> str:
    cls = "com.amazon.sqs.javamessaging.MessageS3Pointer" if legacy else POINTER_CLASS
    return json.dumps([cls, {"s3BucketName": bucket, "s3Key": key}])


def send_pointer(app: App, url: str, bucket: str, key: str, size: str = "10", **attrs: str) -> None:
    attributes: dict[str, Any] = {SIZE_ATTRIBUTE: {"DataType": "Number", "StringValue": size}}
    attributes.update({k: {"DataType": "String", "StringValue": v} for k, v in attrs.items()})
    aws.client("sqs").send_message(QueueUrl=url, MessageBody=pointer(bucket, key), MessageAttributes=attributes)


def work(app: App) -> None:
    assert Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0


def exists(bucket: str, key: str) -> bool:
    listed = aws.client("s3").list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    return any(o["Key"] == key for o in listed)


class Counting:
    """The GetObject body as botocore returns it, counting the bytes anyone reads from it."""

    def __init__(self, body: Any, tally: list[int]) -> None:
        self._body, self._tally = body, tally

    def read(self, amt: int | None = None) -> bytes:
        data: bytes = self._body.read(amt)
        self._tally[0] += len(data)
        return data

    def close(self) -> None:
        self._body.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._body, name)


def count_reads(hide_length: bool = False) -> tuple[list[int], list[str]]:
    """Bytes read from every S3 GetObject body from now on, and the keys asked for.

    `hide_length` drops ContentLength from the response, as a response without it (or a caller
    that cannot rely on it) would be: then only the streamed read's own count can stop it.
    """
    tally, keys = [0], []

    def wrap(parsed: dict[str, Any], **_: Any) -> None:
        if "Body" in parsed:
            parsed["Body"] = Counting(parsed["Body"], tally)
        if hide_length:
            parsed.pop("ContentLength", None)

    s3 = aws.client("s3")
    s3.meta.events.register("after-call.s3.GetObject", wrap)
    s3.meta.events.register("provide-client-params.s3.GetObject", lambda params, **_: keys.append(params["Key"]))
    return tally, keys


# -- bucket and prefix ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["backups/db.dump", "sqsjobs", "sqsjobs/", "sqsjobs/../backups/db.dump", "sqsjobs/./x", "SQSJOBS/x"],
    ids=["outside the prefix", "the prefix without slash", "the bare prefix", "dot-dot", "dot", "other case"],
)
def test_a_pointer_into_our_bucket_but_outside_the_prefix_is_never_read_nor_deleted(app: App, key: str) -> None:
    bucket = app.settings.bucket
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=envelope())
    _, asked = count_reads()
    send_pointer(app, queue_url(app, "default"), bucket, key)

    work(app)

    assert Seen.runs == [], "a body outside the prefix never runs"
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "foreign_pointer"
    assert "SQSJOBS_PAYLOAD_PREFIX" in letter["attrs"]["sqsjobs.error"]
    assert asked == [], "it was never read"
    assert exists(bucket, key)


@pytest.mark.parametrize("verb", ["flush", "forget", "retry"])
def test_failed_commands_never_delete_an_object_outside_the_prefix(app: App, verb: str) -> None:
    """The `flush` attack: a crafted DLQ message whose pointer names an object of ours outside the prefix."""
    bucket = app.settings.bucket
    aws.client("s3").put_object(Bucket=bucket, Key="backups/db.dump", Body=envelope("crafted"))
    send_pointer(app, dlq_url(app, "default"), bucket, "backups/db.dump", **{"sqsjobs.job_id": "crafted"})
    store = FailedJobs(app)
    (job,) = store.list()
    assert job.message.payload_reason == "foreign_pointer" and job.message.payload_error

    if verb == "flush":
        assert store.flush() == 1
    elif verb == "forget":
        assert store.forget("crafted") is True
    else:
        assert store.retry(["crafted"]) == []
        assert "outside the payload bucket and prefix" in store.refused["crafted"]
        assert len(dead_letters(app)) == 1, "a refused retry keeps the job in the DLQ"
        assert counts(app, "default")["ApproximateNumberOfMessages"] == 0
    assert exists(bucket, "backups/db.dump"), "the object it names is never deleted"


def test_a_custom_prefix_is_where_bodies_are_written_and_the_only_place_they_are_read(moto: None, prefix: str) -> None:
    app = payload_app(prefix, payload_threshold="always", payload_prefix="jobs/large/")
    with app.activate():
        job = Seen(data="x").dispatch()
        (key,) = [o["Key"] for o in aws.client("s3").list_objects_v2(Bucket=app.settings.bucket)["Contents"]]
        assert key.startswith("jobs/large/") and job.job_id in key
        aws.client("s3").put_object(Bucket=app.settings.bucket, Key="sqsjobs/old", Body=envelope("old"))
        send_pointer(app, queue_url(app, "default"), app.settings.bucket, "sqsjobs/old")
        work(app)
    assert Seen.runs == [job.job_id], "the default prefix means nothing once the setting names another"
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "foreign_pointer"
    assert exists(app.settings.bucket, "sqsjobs/old")


# -- the size cap -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("hide_length", [False, True], ids=["ContentLength", "no ContentLength"])
def test_an_object_over_the_cap_is_refused_having_read_at_most_the_cap(app: App, hide_length: bool) -> None:
    """A 3 MiB object advertised as 10 bytes, with a cap of 1 MiB: never read whole."""
    bucket, key = app.settings.bucket, "sqsjobs/huge-1"
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=envelope(data="x" * (3 * MIB)))
    tally, asked = count_reads(hide_length)
    send_pointer(app, queue_url(app, "default"), bucket, key, size="10")

    work(app)

    assert Seen.runs == []
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "payload_too_large"
    assert "SQSJOBS_PAYLOAD_MAX_BYTES" in letter["attrs"]["sqsjobs.error"]
    assert json.loads(letter["Body"])[1]["s3Key"] == key, "the DLQ copy is still the pointer"
    assert asked == [key]
    if hide_length:
        assert MIB < tally[0] <= MIB + READ_CHUNK, "the stream stops just past the cap"
    else:
        assert tally[0] == 0, "S3's own length refuses it before a byte is read"
    assert exists(bucket, key), "kept, like any failed job's object"


def test_an_object_at_the_cap_is_read_and_runs(app: App) -> None:
    body = envelope("fits")
    body = envelope("fits", data="y" * (MIB - len(body)))
    assert len(body) == MIB
    aws.client("s3").put_object(Bucket=app.settings.bucket, Key="sqsjobs/fits-1", Body=body)
    send_pointer(app, queue_url(app, "default"), app.settings.bucket, "sqsjobs/fits-1")
    work(app)
    assert Seen.runs == ["fits"]
    assert dead_letters(app) == []


def test_the_lambda_handler_refuses_an_object_over_the_cap_too(app: App) -> None:
    aws.client("s3").put_object(Bucket=app.settings.bucket, Key="sqsjobs/huge-2", Body=b"x" * (2 * MIB))
    tally, _ = count_reads(hide_length=True)
    send_pointer(app, queue_url(app, "default"), app.settings.bucket, "sqsjobs/huge-2")
    assert failed_ids(deliver(SqsHandler(app), app, "default", receive_event(app, "default"))) == []
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "payload_too_large"
    assert tally[0] <= MIB + READ_CHUNK


@pytest.mark.parametrize("verb", ["flush", "forget"])
def test_failed_commands_never_delete_an_object_they_could_not_read(app: App, verb: str) -> None:
    """Under the prefix but over the cap: the worker could not read it as ours, so neither do they."""
    bucket, key = app.settings.bucket, "sqsjobs/huge-3"
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=envelope("big", data="z" * (2 * MIB)))
    send_pointer(app, dlq_url(app, "default"), bucket, key, **{"sqsjobs.job_id": "big"})
    tally, _ = count_reads(hide_length=True)
    store = FailedJobs(app)
    if verb == "flush":
        assert store.flush() == 1
    else:
        assert store.forget("big") is True
    assert dead_letters(app) == []
    assert exists(bucket, key), "left to the bucket's lifecycle rule"
    assert tally[0] <= MIB + READ_CHUNK


def test_retrying_a_job_over_the_cap_resends_its_pointer_and_keeps_the_object(app: App) -> None:
    """Raise SQSJOBS_PAYLOAD_MAX_BYTES and retry: the re-sent pointer still finds its object."""
    bucket, key = app.settings.bucket, "sqsjobs/big-4"
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=envelope("big-4", data="w" * (2 * MIB)))
    send_pointer(app, queue_url(app, "default"), bucket, key)
    work(app)
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "payload_too_large"
    aws.client("sqs").change_message_visibility(
        QueueUrl=dlq_url(app, "default"), ReceiptHandle=letter["ReceiptHandle"], VisibilityTimeout=0
    )

    store = FailedJobs(app)
    assert [j.id for j in store.retry([letter["attrs"]["sqsjobs.job_id"]])] == [letter["attrs"]["sqsjobs.job_id"]]
    assert exists(bucket, key)
    bigger = payload_app(app.settings.queue_prefix, payload_max_bytes=4 * MIB)
    with bigger.activate():
        work(bigger)
    assert Seen.runs == ["big-4"]
    assert not exists(bucket, key), "the finished job lets go of its object"

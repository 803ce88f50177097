"""Messages crafted to break the core, and AWS calls that fail half way: each lands where it should.

Every case here escaped the core once (an exception out of `decode`, `begin` or `receive`, a DLQ copy
SQS refused, a leaked lock). Faults are injected with botocore event hooks on the shared clients.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from botocore.exceptions import ClientError

from sqsjobs import Ack, App, DispatchError, Fail, Job, Release, aws
from sqsjobs.connections.sqs import SqsConnection
from sqsjobs.envelope import decode
from sqsjobs.errors import BadMessageError
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, dead_letters, queue_url

NOW = "2026-01-01T00:00:00Z"


class Counted(Job, name="hostile.counted"):
    runs: ClassVar[list[str]] = []
    n: int = 0

    def handle(self) -> None:
        Counted.runs.append(self.job_id or "")


class OnlyOnce(Job, name="hostile.only-once"):
    unique_for = 600
    key: str

    def unique_id(self) -> str:
        return self.key

    def handle(self) -> None:
        pass


class Keyed(Job, name="hostile.keyed"):
    runs: ClassVar[list[str]] = []
    key: str

    def idempotency_key(self) -> str:
        return self.key

    def handle(self) -> None:
        Keyed.runs.append(self.key)


@pytest.fixture(autouse=True)
def _reset() -> None:
    Counted.runs.clear()
    Keyed.runs.clear()


def envelope(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "v": 1,
        "id": str(uuid.uuid4()),
        "job": "hostile.counted",
        "payload": {},
        "queue": "default",
        "dispatched_at": NOW,
    }
    base.update(fields)
    return base


HOSTILE = {
    "deep JSON": "[" * 50_000 + "]" * 50_000,
    "deep payload": json.dumps(envelope(payload={"a": json.loads("[" * 200 + "]" * 200)})),
    "non-ISO available_at": json.dumps(envelope(available_at="tomorrow")),
    "numeric retry_until": json.dumps(envelope(retry_until=1e308)),
    "naive dispatched_at": json.dumps(envelope(dispatched_at="2026-01-01T00:00:00")),
    "chain is a string": json.dumps(envelope(chain="x")),
    "chain without links": json.dumps(envelope(chain={"id": str(uuid.uuid4()), "pos": "0", "next": [{}]})),
    "huge integer": '{"v": 1, "n": ' + "9" * 5000 + "}",
    "lone surrogate": json.dumps(envelope(payload={"text": "\ud800"})),
    "600 KB job name": json.dumps(envelope(job="j" * 600_000)),
    "bool version": json.dumps(envelope(v=True)),
    "batch id is a list": json.dumps(envelope(batch_id=["x"])),
}


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("body", list(HOSTILE.values()), ids=list(HOSTILE))
def test_decoding_gives_an_envelope_or_a_bad_message_error_and_nothing_else(body: str, signed: bool) -> None:
    with pytest.raises(BadMessageError):
        decode(body, b"key" if signed else None)


@pytest.mark.parametrize("sig", ["é" * 64, "", "0" * 10_000, "\u0000"])
def test_any_signature_is_refused_as_a_signature_problem(sig: str) -> None:
    with pytest.raises(BadMessageError) as caught:
        decode(json.dumps({**envelope(), "sig": sig}), b"key")
    assert caught.value.kind == "signature"


@pytest.fixture
def app(moto: None, prefix: str) -> Iterator[App]:
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, bucket=f"{prefix}b")
    provision(app, ["default"], table=True, bucket=True)
    with app.activate():
        yield app


def send(app: App, body: str, **params: Any) -> None:
    aws.client("sqs").send_message(QueueUrl=queue_url(app, "default"), MessageBody=body, **params)


def work(app: App) -> None:
    assert Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0


def test_every_hostile_message_lands_in_the_dlq_with_its_reason_and_the_good_ones_run(app: App) -> None:
    bodies = [b for b in HOSTILE.values() if len(b.encode()) < 1_000_000]
    good = [Counted(n=i).dispatch() for i in range(3)]
    for body in bodies:
        send(app, body)
    work(app)
    assert sorted(Counted.runs) == sorted(d.job_id for d in good)
    letters = dead_letters(app)
    assert sorted(m["Body"] for m in letters) == sorted(bodies)
    assert {m["attrs"]["sqsjobs.reason"] for m in letters} == {"malformed"}
    assert not any(counts(app, "default").values())


def test_a_job_name_sqs_would_refuse_as_an_attribute_still_reaches_the_dlq_with_its_reason(app: App) -> None:
    """Registered names are checked after decoding: an unknown name with a NUL is written cleaned."""
    send(app, json.dumps(envelope(job="evil\u0000[/x]\ud7ff")))
    work(app)
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "unknown_job"
    assert letter["attrs"]["sqsjobs.job"] == "evil\ufffd[/x]\ud7ff"


def test_a_dlq_copy_of_a_body_near_the_size_limit_keeps_the_reason(app: App) -> None:
    body = json.dumps(envelope(job="nobody", payload={"pad": "x" * (1_048_576 - 400)}))
    assert len(body.encode()) <= 1_048_576
    send(app, body)
    work(app)
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "unknown_job"
    assert "sqsjobs.traceback" not in letter["attrs"], "what does not fit is left out, least useful first"


def test_the_dlq_write_to_a_standard_dlq_sends_no_deduplication_id(app: App) -> None:
    seen: list[dict[str, Any]] = []
    aws.client("sqs").meta.events.register(
        "provide-client-params.sqs.SendMessage", lambda params, **_: seen.append(dict(params))
    )
    send(app, "not json")
    work(app)
    (write,) = [p for p in seen if p["QueueUrl"].endswith("-dlq")]
    assert "MessageDeduplicationId" not in write and "MessageGroupId" not in write


def test_a_fifo_job_retried_from_the_dlq_that_fails_again_is_not_dropped_as_a_duplicate(
    moto: None, prefix: str
) -> None:
    """The FIFO DLQ copy is deduplicated by the source message, not the job: a second failure is kept."""
    from sqsjobs.failed_jobs import FailedJobs

    app = App(connection="sqs", queue_prefix=prefix, queues=["jobs.fifo"], visibility_timeout=30)
    provision(app, ["jobs.fifo"], table=False, bucket=False)

    class FailsFifo(Job, name=f"hostile.fails-fifo-{prefix}"):
        queue = "jobs.fifo"

        def handle(self) -> None:
            self.fail("still broken")

    with app.activate():
        FailsFifo().dispatch()
        Worker(app, WorkerOptions(queues=["jobs.fifo"], sleep=1, stop_when_empty=True)).run(install_signals=False)
        store = FailedJobs(app)
        (first,) = store.list()
        store.retry([first.id])
        Worker(app, WorkerOptions(queues=["jobs.fifo"], sleep=1, stop_when_empty=True)).run(install_signals=False)
        (again,) = store.list()
    assert again.id == first.id and again.reason == "failed_by_job"


# -- payload pointers ---------------------------------------------------------------------------


def pointer(bucket: str, key: str) -> str:
    return json.dumps(["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": bucket, "s3Key": key}])


@pytest.mark.parametrize("size", ["1e3", "-1", "", "abc", "9" * 40])
def test_a_junk_size_attribute_never_keeps_the_messages_beside_it_from_running(app: App, size: str) -> None:
    aws.client("s3").put_object(Bucket=app.settings.bucket, Key="sqsjobs/x", Body=json.dumps(envelope()).encode())
    good = Counted(n=1).dispatch()
    send(
        app,
        pointer(app.settings.bucket, "sqsjobs/x"),
        MessageAttributes={"ExtendedPayloadSize": {"DataType": "String", "StringValue": size or " "}},
    )
    connection = SqsConnection(app.settings)
    messages = connection.receive("default", 10, 0)
    assert len(messages) == 2 and all(not m.payload_error for m in messages)
    connection.change_visibility("default", [(m, 0) for m in messages])
    work(app)
    assert good.job_id in Counted.runs and len(Counted.runs) == 2


def test_a_transient_s3_error_retries_the_message_instead_of_failing_it_for_good(app: App) -> None:
    aws.client("s3").put_object(Bucket=app.settings.bucket, Key="sqsjobs/y", Body=json.dumps(envelope()).encode())
    send(
        app,
        pointer(app.settings.bucket, "sqsjobs/y"),
        MessageAttributes={"ExtendedPayloadSize": {"DataType": "Number", "StringValue": "100"}},
    )

    def slow_down(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}, "GetObject")

    s3 = aws.client("s3")
    s3.meta.events.register("before-call.s3.GetObject", slow_down)
    (message,) = SqsConnection(app.settings).receive("default", 10, 0)
    assert message.payload_retry
    decision = app.runner.process(message)
    assert isinstance(decision, Release) and "SlowDown" in decision.reason
    assert dead_letters(app) == []
    s3.meta.events.unregister("before-call.s3.GetObject", slow_down)
    SqsConnection(app.settings).change_visibility("default", [(message, 0)])
    (again,) = SqsConnection(app.settings).receive("default", 10, 0)
    assert app.runner.process(again) == Ack() and len(Counted.runs) == 1


@pytest.mark.parametrize(
    "bucket_key",
    [("Not_A_Bucket!", "k"), ("", ""), ("", "k" * 1025), ("", "\ud800")],
    ids=["bad bucket", "empty key", "key over 1024 bytes", "lone surrogate key"],
)
def test_a_pointer_no_s3_request_could_express_fails_for_good(app: App, bucket_key: tuple[str, str]) -> None:
    bucket = bucket_key[0] or app.settings.bucket
    body = json.dumps(
        ["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": bucket, "s3Key": bucket_key[1]}]
    )
    send(app, body, MessageAttributes={"ExtendedPayloadSize": {"DataType": "Number", "StringValue": "10"}})
    work(app)
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "missing_payload"


def test_a_pointer_into_another_bucket_is_never_read_nor_deleted(app: App) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="someone-elses")
    s3.put_object(Bucket="someone-elses", Key="backups/db.dump", Body=json.dumps(envelope()).encode())
    send(
        app,
        pointer("someone-elses", "backups/db.dump"),
        MessageAttributes={"ExtendedPayloadSize": {"DataType": "Number", "StringValue": "10"}},
    )
    work(app)
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "foreign_pointer"
    assert Counted.runs == []
    from sqsjobs.failed_jobs import FailedJobs

    FailedJobs(app).flush()
    assert s3.get_object(Bucket="someone-elses", Key="backups/db.dump")["Body"].read()


# -- the store failing half way -----------------------------------------------------------------


def fail_dynamodb(operation: str, after: int = 0) -> list[int]:
    """Make the shared DynamoDB client's `operation` fail (500) after `after` calls succeed."""
    calls = [0]

    def hook(**_: Any) -> None:
        calls[0] += 1
        if calls[0] > after:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, operation)

    aws.client("dynamodb").meta.events.register(f"before-call.dynamodb.{operation}", hook)
    return calls


def test_dispatch_many_frees_every_lock_it_took_when_the_store_fails_half_way(app: App) -> None:
    from sqsjobs import dispatch_many

    fail_dynamodb("PutItem", after=1)
    with pytest.raises(DispatchError) as caught:
        dispatch_many([OnlyOnce(key="a"), OnlyOnce(key="b")])
    assert [name for _, name, _ in caught.value.not_queued] == ["hostile.only-once"]
    assert "unique lock not taken" in caught.value.not_queued[0][2]
    # a, whose lock was taken, was sent; b was not and holds nothing
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 1


def test_a_store_failure_at_dispatch_is_a_dispatch_error_not_a_botocore_one(app: App) -> None:
    fail_dynamodb("PutItem")
    with pytest.raises(DispatchError, match="unique lock could not be taken"):
        OnlyOnce(key="c").dispatch()
    assert not any(counts(app, "default").values())


def test_a_job_whose_idempotency_key_cannot_be_completed_is_still_done_not_failed(app: App) -> None:
    Keyed(key="k1").dispatch()
    fail_dynamodb("PutItem", after=1)  # the claim (a conditional put) goes through, `complete` does not
    (message,) = SqsConnection(app.settings).receive("default", 10, 0)
    decision = app.runner.process(message)
    assert decision == Ack() and Keyed.runs == ["k1"]
    assert dead_letters(app) == []


def test_a_store_failure_before_a_run_releases_the_message_without_running_it(app: App) -> None:
    Keyed(key="k2").dispatch()
    fail_dynamodb("PutItem")
    (message,) = SqsConnection(app.settings).receive("default", 10, 0)
    decision = app.runner.process(message)
    assert isinstance(decision, Release) and Keyed.runs == []
    assert dead_letters(app) == []


def test_fail_decision_of_a_plain_bad_message_is_final(app: App) -> None:
    send(app, "{}")
    (message,) = SqsConnection(app.settings).receive("default", 10, 0)
    decision = app.runner.process(message)
    assert isinstance(decision, Fail) and decision.reason == "malformed"


# -- the Lambda adapter ---------------------------------------------------------------------------


def test_a_failed_visibility_call_in_lambda_keeps_the_partial_batch_response(moto: None, prefix: str) -> None:
    """Raising there replaced the response, and the event source mapping re-ran the whole batch."""
    from lambda_handlers.sqs import SqsHandler
    from tests.lambda_events import deliver, failed_ids, receive_event

    class Later(Job, name=f"hostile.later-{prefix}"):
        def handle(self) -> None:
            self.release(5)

    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30)
    provision(app, ["default"], table=False, bucket=False)
    with app.activate():
        done = Counted(n=1).dispatch()
        later = Later().dispatch()
    event = receive_event(app, "default")
    ids = {json.loads(r["body"])["id"]: r["messageId"] for r in event["Records"]}

    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "ChangeMessageVisibilityBatch")

    aws.client("sqs").meta.events.register("before-call.sqs.ChangeMessageVisibilityBatch", refuse)
    response = deliver(SqsHandler(app), app, "default", event)
    assert failed_ids(response) == [ids[later.job_id]]
    assert Counted.runs == [done.job_id]

"""Issue 12's signing attacks, as an attacker with sqs:SendMessage (and, for pointers, s3:PutObject) would try them.

Each one ran the job before signatures covered the queue, the S3 object and the message's age.
In-process moto through the strict rules layer; the SQS messages are real, so `sent_at` is SQS's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from sqsjobs import App, aws
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.connections.sqs import SqsConnection
from sqsjobs.decisions import Ack, Fail, Release
from sqsjobs.job_class import Job
from sqsjobs.provisioning import provision
from tests.helpers import FakeClock, payload_app, queue_url

K1 = "attack-k1-" + "1" * 32
K2 = "attack-k2-" + "2" * 32


class Transfer(Job, name="signing-attacks.transfer"):
    runs: ClassVar[list[int]] = []
    amount: int

    def handle(self) -> None:
        Transfer.runs.append(self.amount)


class Flaky(Job, name="signing-attacks.flaky"):
    runs: ClassVar[int] = 0
    tries = 3
    backoff = [10]

    def handle(self) -> None:
        Flaky.runs += 1
        if Flaky.runs == 1:
            raise RuntimeError("first try fails")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Transfer.runs = []
    Flaky.runs = 0


def sqs_app(prefix: str, **settings: Any) -> App:
    app = App(connection="sqs", queue_prefix=prefix, queues=["default", "high"], visibility_timeout=30, **settings)
    provision(app, ["default", "high"], table=False, bucket=False)
    return app


@pytest.fixture
def signed(moto: None, prefix: str) -> Iterator[App]:
    app = sqs_app(prefix, signing_key=K1)
    with app.activate():
        yield app


def process_all(app: App, queue: str = "default") -> list[Any]:
    connection = SqsConnection(app.settings)
    return [app.runner.process(m, connection) for m in connection.receive(queue, 10, 0)]


def send(app: App, queue: str, body: str, **params: Any) -> None:
    aws.client("sqs").send_message(QueueUrl=queue_url(app, queue), MessageBody=body, **params)


def reasons(decisions: list[Any]) -> list[str]:
    return [d.reason if isinstance(d, Fail) else type(d).__name__ for d in decisions]


def test_a_signed_body_re_sent_to_another_queue_is_refused(signed: App) -> None:
    Transfer(amount=10).dispatch(queue="default")
    (message,) = SqsConnection(signed.settings).receive("default", 1, 0)
    send(signed, "high", message.body)  # lifted from `default`, replayed on `high`
    decisions = process_all(signed, "high")
    assert reasons(decisions) == ["signature"] and Transfer.runs == []
    assert "signed for queue 'default' but received on 'high'" in str(decisions[0].exception)


def test_a_signed_body_runs_on_the_queue_it_was_signed_for(signed: App) -> None:
    Transfer(amount=10).dispatch(queue="high")
    assert process_all(signed, "high") == [Ack()] and Transfer.runs == [10]


@pytest.fixture
def offloaded(moto: None, prefix: str) -> Iterator[App]:
    app = payload_app(prefix, payload_threshold="always", signing_key=K1)
    with app.activate():
        yield app


def pointer(bucket: str, key: str) -> str:
    return json.dumps(["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": bucket, "s3Key": key}])


def test_a_pointer_swapped_to_another_object_is_refused(offloaded: App) -> None:
    """Someone who may put objects under the payload prefix copies signed bodies there and points at them."""
    bucket, s3 = offloaded.settings.bucket, aws.client("s3")
    dispatched = Transfer(amount=1).dispatch()
    (listed,) = s3.list_objects_v2(Bucket=bucket)["Contents"]
    original = s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read()
    assert listed["Key"].startswith(f"sqsjobs/{dispatched.job_id}-")
    small = App(connection="memory", signing_key=K1)  # a signed body that never went through S3
    with small.activate():
        Transfer(amount=2).dispatch(queue="default")
    (message,) = small.connection.receive("default", 1, 0)
    for key, body in (("sqsjobs/copied-0badc0de", original), ("sqsjobs/aa-00000000", message.body.encode())):
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        send(
            offloaded,
            "default",
            pointer(bucket, key),
            MessageAttributes={"ExtendedPayloadSize": {"DataType": "Number", "StringValue": str(len(body))}},
        )
    decisions = process_all(offloaded)
    assert sorted(reasons(decisions)) == ["Ack", "signature", "signature"]
    assert Transfer.runs == [1]  # the job's own message, from its own object
    assert all("not one of its own" in str(d.exception) for d in decisions if isinstance(d, Fail))


def test_an_old_signed_message_replayed_is_refused_with_a_max_age(moto: None, prefix: str) -> None:
    """The issue's "the same signed body sent twice ran twice", an hour later."""
    app = sqs_app(prefix, signing_key=K1, signing_max_age=300)
    an_hour_ago = App(app.settings, connection="sqs", clock=lambda: time.time() - 3600)
    with an_hour_ago.activate():
        Transfer(amount=100).dispatch()
    (captured,) = SqsConnection(app.settings).receive("default", 1, 0)  # the body as it travelled then
    send(app, "default", captured.body)  # sent again now
    with app.activate():
        Transfer(amount=5).dispatch()  # a fresh one runs
    decisions = process_all(app)
    assert sorted(reasons(decisions)) == ["Ack", "expired_signature"]
    assert Transfer.runs == [5]
    (expired,) = [d for d in decisions if isinstance(d, Fail)]
    assert "SQSJOBS_SIGNING_MAX_AGE (300 s)" in str(expired.exception)


def test_an_exact_duplicate_within_the_max_age_is_for_idempotency_keys(moto: None, prefix: str) -> None:
    """Inside the window a signature cannot tell a copy from the original (docs/security.md says so)."""
    app = sqs_app(prefix, signing_key=K1, signing_max_age=300)
    with app.activate():
        Transfer(amount=7).dispatch()
    (captured,) = SqsConnection(app.settings).receive("default", 1, 0)
    send(app, "default", captured.body)
    SqsConnection(app.settings).change_visibility("default", [(captured, 0)])
    assert process_all(app) == [Ack(), Ack()] and Transfer.runs == [7, 7]


def test_a_long_delay_still_runs_with_a_max_age(moto: None, prefix: str) -> None:
    """Two hours' delay, 300 s max age: the age counts from when the job was due, and its last hop is sent
    (the same body, re-sent) when it is due; the same body without the delay would be a replay."""
    app = sqs_app(prefix, signing_key=K1, signing_max_age=300)
    two_hours_ago = App(app.settings, connection="sqs", clock=lambda: time.time() - 7200)
    send(app, "default", signed_body(two_hours_ago, Transfer(amount=3), delay=7200 - 1))
    send(app, "default", signed_body(two_hours_ago, Transfer(amount=4)))
    assert sorted(reasons(process_all(app))) == ["Ack", "expired_signature"] and Transfer.runs == [3]


def signed_body(app: App, job: Job, **options: Any) -> str:
    """The body `dispatch` would send from `app` (its clock, its key), without sending it."""
    from sqsjobs.dispatch_plan import build_message

    _, _, message = build_message(app, job, **options)
    return message.body


def test_a_retry_past_the_max_age_still_runs() -> None:
    """A retry is the same SQS message: SQS's sent time does not move, however late the retry."""
    clock = FakeClock()
    app = App(connection=MemoryConnection(clock=clock), clock=clock, signing_key=K1, signing_max_age=60)
    with app.activate():
        Flaky().dispatch()
    (first,) = app.connection.receive("default", 1, 0)
    assert isinstance(app.runner.process(first), Release)
    app.connection.change_visibility("default", [(first, 0)])
    clock.now += 3600
    (again,) = app.connection.receive("default", 1, 0)
    assert app.runner.process(again) == Ack() and Flaky.runs == 2


def test_rotation_old_messages_verify_after_the_switch_and_a_removed_key_is_refused(moto: None, prefix: str) -> None:
    ring = {"current": "k1", "k1": K1}
    before = sqs_app(prefix, signing_key=json.dumps(ring))
    added = sqs_app(prefix, signing_key=json.dumps({**ring, "k2": K2}))  # step 1: verifies both, signs k1
    switched = sqs_app(prefix, signing_key=json.dumps({"current": "k2", "k1": K1, "k2": K2}))  # step 2
    removed = sqs_app(prefix, signing_key=json.dumps({"current": "k2", "k2": K2}))  # step 4
    with before.activate():
        Transfer(amount=1).dispatch()  # signed k1 before the rotation began, still queued
    with switched.activate():
        Transfer(amount=2).dispatch()  # signed k2 by a process already switched
    queued = SqsConnection(added.settings).receive("default", 10, 0)
    bodies = sorted(m.body for m in queued)
    assert sorted(json.loads(b)["sig"].split(":")[0] for b in bodies) == ["k1", "k2"]
    # A worker not yet redeployed after the switch verifies the new key; a switched one the old key.
    assert [added.runner.process(m) for m in queued] == [Ack(), Ack()]
    for body in bodies:
        send(switched, "default", body)
    assert process_all(switched) == [Ack(), Ack()]
    assert sorted(Transfer.runs) == [1, 1, 2, 2]

    Transfer.runs = []
    for body in bodies:
        send(removed, "default", body)
    decisions = process_all(removed)
    assert sorted(reasons(decisions)) == ["Ack", "signature"] and Transfer.runs == [2]
    (refused,) = [d for d in decisions if isinstance(d, Fail)]
    assert "key id 'k1', which SQSJOBS_SIGNING_KEY does not list" in str(refused.exception)


def test_without_a_key_nothing_changes(moto: None, prefix: str) -> None:
    app = sqs_app(prefix)
    with app.activate():
        Transfer(amount=4).dispatch()
    (message,) = SqsConnection(app.settings).receive("default", 1, 0)
    assert "sig" not in json.loads(message.body)
    send(app, "high", message.body)  # unsigned messages were never bound to anything
    assert app.runner.process(message) == Ack() and process_all(app, "high") == [Ack()]
    assert Transfer.runs == [4, 4]


def test_with_a_key_unsigned_messages_are_still_refused(signed: App) -> None:
    unsigned = App(signed.settings, connection="sqs", signing_key=None)
    with unsigned.activate():
        Transfer(amount=9).dispatch()
    assert reasons(process_all(signed)) == ["signature"] and Transfer.runs == []

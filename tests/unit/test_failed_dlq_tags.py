"""`sqsjobs failed` believes a DLQ copy's reason only when a worker vouches for it, and reads a DLQ whole.

Issue 12's leftovers: (1) an old signed body dropped in the DLQ with a forged `sqsjobs.reason` was
re-signed by `failed retry --all` and ran, past the max age; workers now tag their DLQ copies. (2) A read
that outlasted its hide stopped early and reported success; it now keeps what it holds hidden, and a
read that could not says "incomplete" and exits 1. In-process moto through the strict rules layer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from sqsjobs import App, Job, aws, failed_jobs
from sqsjobs.cli import cli
from sqsjobs.dispatch_plan import build_message
from sqsjobs.failed_jobs import FailedJobs
from sqsjobs.failures import PREFIX, tagged_fields
from sqsjobs.provisioning import provision
from sqsjobs.signing import SigningKeys
from sqsjobs.timing import utc_iso
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import FakeClock, dlq_url, drain, payload_app, queue_url, sqs_requests, wait_for

KEY = "failed-dlq-tags-" + "k" * 32


class Charge(Job, name="dlq-tags.charge"):
    tries = 1
    fixed: ClassVar[bool] = False
    runs: ClassVar[list[int]] = []
    amount: int = 0

    def handle(self) -> None:
        Charge.runs.append(self.amount)
        if not Charge.fixed:
            raise RuntimeError("card declined")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Charge.fixed = False
    Charge.runs = []


def signed_app(prefix: str, **settings: Any) -> App:
    app = App(
        connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, signing_key=KEY,
        signing_max_age=300, **settings,
    )  # fmt: skip
    provision(app, ["default"], table=False, bucket=False)
    return app


@pytest.fixture
def app(moto: None, prefix: str) -> Iterator[App]:
    the_app = signed_app(prefix)
    with the_app.activate():
        yield the_app


def work(app: App) -> None:
    assert Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0


def sent_to(app: App, queue: str = "default") -> list[str]:
    return [m["Body"] for m in drain(queue_url(app, queue))]


def in_dlq(app: App) -> list[dict[str, Any]]:
    """The DLQ's messages (at most 10), left visible for the failed verbs."""
    response = aws.client("sqs").receive_message(
        QueueUrl=dlq_url(app, "default"), MaxNumberOfMessages=10, VisibilityTimeout=0, MessageAttributeNames=["All"]
    )
    return list(response.get("Messages", []))


def old_signed_body(app: App, amount: int) -> tuple[str, str]:
    """(job id, body) of a job this deployment signed a day ago: what an attacker captured then."""
    a_day_ago = App(app.settings, connection="sqs", clock=lambda: time.time() - 86400)
    _, envelope, message = build_message(a_day_ago, Charge(amount=amount))
    return envelope.id, message.body


def to_dlq(app: App, body: str, attributes: dict[str, str]) -> None:
    aws.client("sqs").send_message(
        QueueUrl=dlq_url(app, "default"),
        MessageBody=body,
        MessageAttributes={PREFIX + k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    )


def forged(job_id: str) -> dict[str, str]:
    return {
        "reason": "tries_exhausted",
        "job_id": job_id,
        "job": Charge.job_name,
        "source_queue": "default",
        "failed_at": utc_iso(time.time()),
        "attempts": "1",
    }


# -- 1. the reason is believed only when a worker vouches for it ------------------------------------------


def test_bulk_retry_refuses_an_old_signed_body_dropped_in_the_dlq_with_a_forged_reason(app: App) -> None:
    """The attack: a day-old signed body with a plausible reason; `retry --all` would re-sign it and it ran."""
    job_id, body = old_signed_body(app, 900)
    to_dlq(app, body, forged(job_id))
    store = FailedJobs(app)
    (listed,) = store.list()
    assert listed.verified and not listed.vouched and "reason" in listed.unverified
    assert store.retry() == []
    assert "no worker of this deployment vouches for its reason" in store.refused[job_id]
    assert sent_to(app) == [] and len(in_dlq(app)) == 1, "nothing sent; it stays in the DLQ"
    Charge.fixed = True
    (done,) = store.retry([job_id], accept_unverified=True)  # the operator vouches for it, by name
    work(app)
    assert done.id == job_id and Charge.runs == [900]


def test_bulk_retry_refuses_an_old_signed_body_that_looks_like_a_redrive(app: App) -> None:
    """No attributes at all (what SQS's redrive moves): its SentTimestamp is now, a day after its dispatch."""
    job_id, body = old_signed_body(app, 901)
    to_dlq(app, body, {})
    store = FailedJobs(app)
    assert store.retry() == [] and job_id in store.refused
    assert sent_to(app) == []


def test_a_tagged_copy_replayed_later_into_the_dlq_is_not_vouched_for(app: App) -> None:
    """A worker's tagged copy captured from the DLQ an hour ago and sent again: the tag vouches for its first send."""
    job_id, body = old_signed_body(app, 902)
    attributes = forged(job_id) | {"failed_at": utc_iso(time.time() - 3600)}
    keys = app.signing_key
    assert keys is not None
    attributes["tag"] = keys.tag(tagged_fields({PREFIX + k: v for k, v in attributes.items()}), body)
    to_dlq(app, body, attributes)
    store = FailedJobs(app)
    (listed,) = store.list()
    assert not listed.vouched and store.retry() == [] and job_id in store.refused


def test_a_tag_made_with_another_key_is_not_vouched_for(app: App) -> None:
    job_id, body = old_signed_body(app, 903)
    attributes = forged(job_id)
    other = SigningKeys.of(b"another-deployment-" + b"x" * 32)
    attributes["tag"] = other.tag(tagged_fields({PREFIX + k: v for k, v in attributes.items()}), body)
    to_dlq(app, body, attributes)
    (listed,) = FailedJobs(app).list()
    assert not listed.vouched and "reason" in listed.unverified


def test_a_failure_a_worker_wrote_is_vouched_for_and_bulk_retry_runs_it(app: App) -> None:
    Charge(amount=5).dispatch()
    work(app)
    (letter,) = in_dlq(app)
    assert PREFIX + "tag" in letter["MessageAttributes"]
    store = FailedJobs(app)
    (listed,) = store.list()
    assert listed.vouched and listed.unverified == () and listed.reason == "tries_exhausted"
    Charge.fixed = True
    assert len(store.retry()) == 1
    work(app)
    assert Charge.runs == [5, 5] and in_dlq(app) == []


def test_a_genuine_redrive_copy_is_retried_in_bulk(app: App) -> None:
    """SQS's redrive policy moved it (no worker decided): its SentTimestamp is its first send, within the max age."""
    Charge(amount=6).dispatch()
    sqs = aws.client("sqs")

    def moved() -> list[dict[str, Any]]:  # received and never decided, until SQS moves it
        sqs.receive_message(QueueUrl=queue_url(app, "default"), VisibilityTimeout=0, WaitTimeSeconds=0)
        return in_dlq(app)

    (letter,) = wait_for(moved, what="SQS's redrive to the DLQ")
    assert not letter.get("MessageAttributes")
    Charge.fixed = True
    (done,) = FailedJobs(app).retry()
    work(app)
    assert done.reason == "redrive" and Charge.runs == [6]


def test_an_offloaded_failure_is_tagged_within_sqs_s_ten_attributes(moto: None, prefix: str) -> None:
    """Pointer size attribute + nine reasons + the tag would be eleven: the job name (in its body) gives way."""
    app = payload_app(prefix, payload_threshold="always", signing_key=KEY, signing_max_age=300)
    with app.activate():
        Charge(amount=7).dispatch()
        work(app)
        (letter,) = in_dlq(app)
        attributes = letter["MessageAttributes"]
        assert len(attributes) == 10 and PREFIX + "tag" in attributes and PREFIX + "job" not in attributes
        store = FailedJobs(app)
        (listed,) = store.list()
        assert listed.vouched and listed.job == Charge.job_name, "the name comes from the body"
        Charge.fixed = True
        assert len(store.retry()) == 1
        work(app)
        assert Charge.runs == [7, 7]


# -- 2. a read of the DLQ holds what it read, or says it could not ----------------------------------------


def fill_dlq(app: App, count: int) -> None:
    sqs = aws.client("sqs")
    for start in range(0, count, 10):
        sqs.send_message_batch(
            QueueUrl=dlq_url(app, "default"),
            Entries=[{"Id": str(i), "MessageBody": f"junk {start + i}"} for i in range(min(10, count - start))],
        )


def test_a_read_longer_than_its_hide_still_sees_every_message_once(
    moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = signed_app(prefix)
    fill_dlq(app, 35)
    monkeypatch.setattr(failed_jobs, "_SCAN_VISIBILITY_S", 3)
    with app.activate():
        events = aws.client("sqs").meta.events

        def slow(**_: Any) -> None:  # four receives of 1.2 s: the read outlasts its 3 s hide
            time.sleep(1.2)

        events.register("after-call.sqs.ReceiveMessage", slow)
        try:
            store = FailedJobs(app)
            jobs = store.list()
        finally:
            events.unregister("after-call.sqs.ReceiveMessage", slow)
        assert sorted(job.body for job in jobs) == sorted(f"junk {i}" for i in range(35))
        assert store.incomplete == []
        visible = aws.client("sqs").get_queue_attributes(
            QueueUrl=dlq_url(app, "default"), AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        assert visible == "35", "all given back"


def test_a_flush_that_loses_its_hold_says_incomplete_and_exits_1(
    moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = signed_app(prefix)
    fill_dlq(app, 25)
    monkeypatch.setattr(failed_jobs, "_CONSUME_VISIBILITY_S", 1)
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("SQSJOBS_QUEUES", "default")
    monkeypatch.setenv("SQSJOBS_APP", __name__)
    monkeypatch.setenv("SQSJOBS_SIGNING_KEY", KEY)
    events = aws.client("sqs").meta.events

    def slow(**_: Any) -> None:
        time.sleep(0.6)

    def refuse(**_: Any) -> None:  # the hold cannot be extended: SQS refuses (throttled, an outage)
        raise RuntimeError("ChangeMessageVisibilityBatch refused")

    events.register("after-call.sqs.ReceiveMessage", slow)
    events.register("before-call.sqs.ChangeMessageVisibilityBatch", refuse)
    logger = logging.getLogger("sqsjobs")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    try:
        result = CliRunner().invoke(cli, ["failed", "flush"], terminal_width=250)
    finally:
        events.unregister("after-call.sqs.ReceiveMessage", slow)
        events.unregister("before-call.sqs.ChangeMessageVisibilityBatch", refuse)
        logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]
    assert result.exit_code == 1, result.output
    assert "Incomplete: the DLQ could not be read whole" in result.output
    assert "lapsed" in result.output


def test_an_attribute_less_body_that_is_not_an_envelope_is_not_refused_for_want_of_a_tag(app: App) -> None:
    """Nothing to re-sign: an unsigned body goes back as it is and the worker judges it again."""
    body = json.dumps({"hello": "world"})
    to_dlq(app, body, {})
    store = FailedJobs(app)
    (listed,) = store.list()
    assert not listed.verified
    assert len(store.retry()) == 1 and store.refused == {}
    assert sent_to(app) == [body]


# -- 3. a hostile review's attacks on the above -----------------------------------------------------------


@pytest.mark.parametrize("claims", [{"job_id": "not-the-envelopes-id"}, {"job_id": "x", "reason": ""}])
def test_a_signed_body_whose_claimed_id_does_not_match_is_not_re_signed(app: App, claims: dict[str, str]) -> None:
    """Not `verified` (the id claim does not match) must not mean "not a signed envelope": it was re-signed."""
    job_id, body = old_signed_body(app, 666)
    to_dlq(app, body, {k: v for k, v in (forged(job_id) | claims).items() if v})
    store = FailedJobs(app)
    Charge.fixed = True
    assert store.retry() == [] and len(store.refused) == 1
    work(app)
    assert Charge.runs == [] and sent_to(app) == []


def test_a_signed_body_in_an_object_that_is_not_its_own_is_not_re_signed(moto: None, prefix: str) -> None:
    """Someone with s3:PutObject under the prefix stores an old body under another key and sends its pointer."""
    app = payload_app(prefix, signing_key=KEY, signing_max_age=300)
    with app.activate():
        _, body = old_signed_body(app, 668)
        key = "sqsjobs/attacker-0000abcd"
        aws.client("s3").put_object(Bucket=app.settings.bucket, Key=key, Body=body.encode())
        pointer = json.dumps(
            ["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": app.settings.bucket, "s3Key": key}]
        )
        aws.client("sqs").send_message(
            QueueUrl=dlq_url(app, "default"),
            MessageBody=pointer,
            MessageAttributes={"ExtendedPayloadSize": {"DataType": "Number", "StringValue": str(len(body))}},
        )
        store = FailedJobs(app)
        Charge.fixed = True
        assert store.retry() == [] and len(store.refused) == 1
        work(app)
        assert Charge.runs == []


def test_a_forged_copy_with_a_later_failure_does_not_outrank_the_workers_own(app: App) -> None:
    """Denial: a copy of the body with `failed_at` in 2099 would be the best copy and make the job un-retryable."""
    Charge(amount=5).dispatch()
    work(app)
    (letter,) = in_dlq(app)
    job_id = letter["MessageAttributes"][PREFIX + "job_id"]["StringValue"]
    to_dlq(app, letter["Body"], forged(job_id) | {"failed_at": "2099-01-01T00:00:00+00:00", "reason": "forged"})
    store = FailedJobs(app)
    (listed,) = store.list()
    assert listed.copies == 2 and listed.vouched and listed.reason == "tries_exhausted"
    Charge.fixed = True
    assert len(store.retry()) == 1
    work(app)
    assert Charge.runs == [5, 5]


def test_a_flush_while_another_reader_holds_messages_says_incomplete(app: App) -> None:
    fill_dlq(app, 20)
    aws.client("sqs").receive_message(QueueUrl=dlq_url(app, "default"), MaxNumberOfMessages=10, VisibilityTimeout=300)
    store = FailedJobs(app)
    assert store.flush() == 10
    assert store.incomplete and "another reader" in store.incomplete[0]


def test_a_retry_that_loses_its_hold_acts_only_on_what_it_still_holds(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hold cannot be extended (SQS refuses) and the read outlasts it: a message whose hold lapsed is
    not acted on (another reader may be retrying it), the command says it was incomplete, and every
    message ends in exactly one place: sent back once, or still in the DLQ."""
    fill_dlq(app, 25)  # three slow receives: the read outlasts the 1 s hide
    monkeypatch.setattr(failed_jobs, "_CONSUME_VISIBILITY_S", 1)
    events = aws.client("sqs").meta.events

    def slow(**_: Any) -> None:
        time.sleep(0.6)

    def refuse(**_: Any) -> None:
        raise RuntimeError("ChangeMessageVisibilityBatch throttled")

    events.register("after-call.sqs.ReceiveMessage", slow)
    events.register("before-call.sqs.ChangeMessageVisibilityBatch", refuse)
    try:
        store = FailedJobs(app)
        done = store.retry()
    finally:
        events.unregister("after-call.sqs.ReceiveMessage", slow)
        events.unregister("before-call.sqs.ChangeMessageVisibilityBatch", refuse)
    assert store.incomplete and len(done) < 25, "the first receives' holds were lost: those stay"
    sent = sent_to(app)
    assert sorted(sent) == sorted(job.body for job in done)

    def visible() -> int:
        attrs = aws.client("sqs").get_queue_attributes(
            QueueUrl=dlq_url(app, "default"), AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])

    wait_for(lambda: visible() == 25 - len(sent), timeout=20, what="the DLQ to show what was not sent")
    left = [m["Body"] for m in drain(dlq_url(app, "default"))]
    assert not set(sent) & set(left) and len(sent) + len(left) == 25


def test_a_long_read_extends_its_hold_a_few_times_not_every_few_seconds(app: App) -> None:
    """Each extension costs a call per 10 messages held: the hide grows with the read (twice its length so
    far), so a read of thousands that lasts minutes extends a handful of times (the 10,000-job soak's DLQ
    read took minutes of extensions when the hide stayed at 30 s)."""
    from sqsjobs.dlq_reading import HeldMessages

    fill_dlq(app, 20)
    clock = FakeClock(1000.0)
    changes = sqs_requests("ChangeMessageVisibilityBatch")
    hold = HeldMessages(aws.client("sqs"), 30, clock=clock)
    assert len(list(hold.read(dlq_url(app, "default")))) == 20
    hides = []
    for _ in range(40):  # ten minutes of reading and acting, looked at every 15 s
        clock.now += 15
        hold.keep_hidden()
        hides.append(hold.hide_s)
    assert hides[-1] >= 600 and hold.incomplete == [], hides
    assert len(changes) <= 2 * 8, f"{len(changes)} extension calls for 20 messages held ten minutes"
    hold.give_back()

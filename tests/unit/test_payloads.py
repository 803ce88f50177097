"""Large bodies travel through S3 in the Amazon SQS Extended Client format, and their objects never leak.

Each test gets its own bucket (named after its queue prefix), so "nothing left behind" is simply an
empty bucket.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from lambda_handlers.sqs import SqsHandler
from sqsjobs import App, ConfigurationError, DispatchError, Job, aws
from sqsjobs.failed_jobs import FailedJobs
from sqsjobs.payloads import DEFAULT_THRESHOLD, POINTER_CLASS, SIZE_ATTRIBUTE
from sqsjobs.provisioning import provision
from sqsjobs.settings import load_settings
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, dead_letters, dlq_url, payload_app, queue_url, sqs_requests, wait_for
from tests.lambda_events import FakeContext, deliver, failed_ids, receive_event

MIB = 1_048_576


def blob(size: int, seed: int = 7) -> str:
    """`size` characters that are not one repeated byte, so a truncated or mixed-up body shows."""
    return random.Random(seed).randbytes(size // 2).hex()


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


LARGE = blob(3 * MIB)


class Carry(Job, name="payloads.carry"):
    """Records which payload it saw (by digest), so a test can tell the full body arrived."""

    runs: ClassVar[list[tuple[str, str]]] = []
    data: str

    def handle(self) -> None:
        Carry.runs.append((self.job_id or "", digest(self.data)))


class Broken(Job, name="payloads.broken"):
    """Fails for good until fixed; then records its payload like Carry."""

    tries = 1
    fixed: ClassVar[bool] = False
    runs: ClassVar[list[tuple[str, str]]] = []
    data: str

    def handle(self) -> None:
        Broken.runs.append((self.job_id or "", digest(self.data)))
        if not Broken.fixed:
            raise RuntimeError("the downstream is broken")


class FailsOnce(Job, name="payloads.fails-once"):
    """Fails its first attempt (released for a retry at once), then records its payload."""

    tries = 2
    backoff = 0
    runs: ClassVar[list[tuple[int, str]]] = []
    data: str

    def handle(self) -> None:
        FailsOnce.runs.append((self.attempts, digest(self.data)))
        if self.attempts == 1:
            raise ConnectionError("try again")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Carry.runs.clear()
    Broken.runs.clear()
    Broken.fixed = False
    FailsOnce.runs.clear()


make_app = payload_app


@pytest.fixture
def app(moto: None, prefix: str) -> Iterator[App]:
    app = make_app(prefix)
    with app.activate():
        yield app


def objects(app: App) -> dict[str, str]:
    """Every object in the app's bucket: key -> body."""
    s3 = aws.client("s3")
    listed = s3.list_objects_v2(Bucket=app.settings.bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=app.settings.bucket, Key=o["Key"])["Body"].read().decode() for o in listed}


def peek(app: App, url: str = "") -> dict[str, Any]:
    """The one message on `default` (or `url`), as SQS holds it, left visible for the consumer."""
    (message,) = aws.client("sqs").receive_message(
        QueueUrl=url or queue_url(app, "default"),
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        MessageAttributeNames=["All"],
    )["Messages"]
    return message  # type: ignore[no-any-return]


def pointer_key(app: App, body: str) -> str:
    """The S3 key of an Extended Client pointer body (asserting its shape and bucket)."""
    data = json.loads(body)
    assert data[0] == POINTER_CLASS, body
    assert data[1]["s3BucketName"] == app.settings.bucket
    return str(data[1]["s3Key"])


def s3_puts() -> list[dict[str, Any]]:
    """The parameters of every PutObject the shared S3 client sends from now on."""
    seen: list[dict[str, Any]] = []
    aws.client("s3").meta.events.register("provide-client-params.s3.PutObject", lambda params, **_: seen.append(params))
    return seen


def work(app: App) -> None:
    assert Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0


def settled(app: App) -> None:
    """Nothing left anywhere: queue, DLQ, bucket."""
    assert not any(counts(app, "default").values())
    assert dead_letters(app) == []
    assert objects(app) == {}


# -- the round trip -------------------------------------------------------------------------------


def test_a_large_job_travels_through_s3_and_its_object_is_deleted_once_done(app: App) -> None:
    job = Carry(data=LARGE).dispatch()

    message = peek(app)
    key = pointer_key(app, message["Body"])
    size = message["MessageAttributes"][SIZE_ATTRIBUTE]
    assert size["DataType"] == "Number"
    stored = objects(app)
    assert list(stored) == [key] and int(size["StringValue"]) == len(stored[key].encode()) > 3 * MIB
    assert json.loads(stored[key])["id"] == job.job_id, "the object is the whole envelope"

    work(app)
    assert Carry.runs == [(job.job_id, digest(LARGE))]
    settled(app)


def test_a_large_job_through_the_lambda_adapter_sees_its_payload_and_leaves_no_object(app: App) -> None:
    job = Carry(data=LARGE).dispatch()
    event = receive_event(app, "default")
    (record,) = event["Records"]
    pointer_key(app, record["body"])
    assert record["messageAttributes"][SIZE_ATTRIBUTE]["dataType"] == "Number"

    response = deliver(SqsHandler(app), app, "default", event)

    assert failed_ids(response) == []
    assert Carry.runs == [(job.job_id, digest(LARGE))]
    settled(app)


def test_a_released_large_job_keeps_its_object_for_the_next_attempt(app: App) -> None:
    FailsOnce(data=LARGE).dispatch()
    work(app)
    # Attempt 2 read the same object: a release keeps it; only the finished job lets it go.
    assert FailsOnce.runs == [(1, digest(LARGE)), (2, digest(LARGE))]
    settled(app)


def test_a_large_job_released_in_lambda_keeps_its_object_for_the_next_attempt(app: App) -> None:
    handler = SqsHandler(app)
    FailsOnce(data=LARGE).dispatch()
    first = receive_event(app, "default")
    assert len(failed_ids(deliver(handler, app, "default", first))) == 1
    assert len(objects(app)) == 1

    again = wait_for(lambda: receive_event(app, "default")["Records"], timeout=5, what="the released record")
    assert failed_ids(deliver(handler, app, "default", {"Records": again})) == []
    assert FailsOnce.runs == [(1, digest(LARGE)), (2, digest(LARGE))]
    settled(app)


def test_lambda_crash_window_a_redelivered_record_whose_object_is_gone_is_failed_not_rerun(app: App) -> None:
    """The handler deletes the object just before it returns; the mapping deletes the record after.
    A crash in between redelivers the record, whose body is gone: it goes to the DLQ, it never runs twice."""
    handler = SqsHandler(app)
    job = Carry(data=LARGE).dispatch()
    event = receive_event(app, "default")
    assert handler(event, FakeContext()) == {"batchItemFailures": []}  # ...and the mapping never deletes it
    assert objects(app) == {}
    aws.client("sqs").change_message_visibility(
        QueueUrl=queue_url(app, "default"), ReceiptHandle=event["Records"][0]["receiptHandle"], VisibilityTimeout=0
    )

    assert failed_ids(deliver(handler, app, "default", receive_event(app, "default"))) == []
    assert Carry.runs == [(job.job_id, digest(LARGE))], "it ran once"
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "missing_payload"
    assert not any(counts(app, "default").values())


def test_small_jobs_stay_in_the_message_by_default(app: App) -> None:
    assert app.settings.payload_threshold == DEFAULT_THRESHOLD
    job = Carry(data="small").dispatch()
    message = peek(app)
    assert json.loads(message["Body"])["id"] == job.job_id
    assert SIZE_ATTRIBUTE not in message.get("MessageAttributes", {})
    assert objects(app) == {}
    work(app)
    assert Carry.runs == [(job.job_id, digest("small"))]


def test_always_sends_even_a_tiny_job_through_s3(moto: None, prefix: str) -> None:
    app = make_app(prefix, payload_threshold="always")
    with app.activate():
        job = Carry(data="tiny").dispatch()
    pointer_key(app, peek(app)["Body"])
    assert len(objects(app)) == 1
    work(app)
    assert Carry.runs == [(job.job_id, digest("tiny"))]
    settled(app)


def test_the_threshold_setting_takes_bytes_or_always_and_names_itself_when_wrong(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SQSJOBS_PAYLOAD_THRESHOLD", "always")
    assert load_settings().payload_threshold == "always"
    monkeypatch.setenv("SQSJOBS_PAYLOAD_THRESHOLD", "200000")
    assert load_settings().payload_threshold == 200_000
    monkeypatch.setenv("SQSJOBS_PAYLOAD_THRESHOLD", str(2 * MIB))  # SQS itself would refuse that
    with pytest.raises(ConfigurationError, match="SQSJOBS_PAYLOAD_THRESHOLD"):
        load_settings()


def test_bulk_dispatch_offloads_only_the_large_entries_and_all_of_them_run(app: App) -> None:
    batches = sqs_requests("SendMessageBatch")
    payloads = [blob(MIB + 4096, seed=1), "small one", blob(2 * MIB, seed=2), "small two"]
    dispatched = Carry.dispatch_many([Carry(data=p) for p in payloads])

    # Pointers are small, so all four fit one SendMessageBatch call (well under 1 MiB).
    (batch,) = batches
    entries = batch["Entries"]
    assert len(entries) == 4
    offloaded = [SIZE_ATTRIBUTE in e.get("MessageAttributes", {}) for e in entries]
    assert offloaded == [True, False, True, False]
    keys = {pointer_key(app, e["MessageBody"]) for e, big in zip(entries, offloaded, strict=True) if big}
    assert set(objects(app)) == keys
    assert [json.loads(e["MessageBody"])["payload"]["data"] for e in entries if not e.get("MessageAttributes")] == [
        "small one",
        "small two",
    ]

    work(app)
    assert sorted(Carry.runs) == sorted((d.job_id, digest(p)) for d, p in zip(dispatched, payloads, strict=True))
    settled(app)


# -- when things go wrong -------------------------------------------------------------------------


def test_a_missing_object_fails_the_message_to_the_dlq_as_missing_payload(app: App) -> None:
    Carry(data=LARGE).dispatch()
    later = Carry(data="small, after it").dispatch()
    (key,) = objects(app)
    aws.client("s3").delete_object(Bucket=app.settings.bucket, Key=key)

    work(app)  # the worker does not crash: it returns 0 after running what it can

    assert Carry.runs == [(later.job_id, digest("small, after it"))], "the job without its payload never ran"
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "missing_payload"
    assert f"s3://{app.settings.bucket}/{key}" in letter["attrs"]["sqsjobs.error"]
    # The DLQ copy is the message as it came: still the pointer, with its size attribute.
    assert pointer_key(app, letter["Body"]) == key
    assert letter["MessageAttributes"][SIZE_ATTRIBUTE]["DataType"] == "Number"
    assert not any(counts(app, "default").values())


def fail_large(app: App) -> tuple[str, str]:
    """A large job that fails for good; returns its id and the key of its (kept) object."""
    job = Broken(data=LARGE).dispatch()
    work(app)
    letter = peek(app, dlq_url(app, "default"))
    (key,) = objects(app)
    assert pointer_key(app, letter["Body"]) == key, "the DLQ copy points at the same object"
    assert letter["MessageAttributes"]["sqsjobs.reason"]["StringValue"] == "tries_exhausted"
    return job.job_id, key


def test_a_large_job_that_failed_keeps_its_object_until_it_is_forgotten(app: App) -> None:
    job_id, key = fail_large(app)
    store = FailedJobs(app)
    (failed,) = store.list()
    assert failed.id == job_id and json.loads(store.body(failed))["payload"]["data"] == LARGE, "shown resolved"
    assert list(objects(app)) == [key], "listing consumes nothing"

    assert store.forget(job_id) is True
    assert store.list() == []
    settled(app)


def test_a_large_failed_job_retried_runs_again_with_its_whole_payload(app: App) -> None:
    job_id, old_key = fail_large(app)
    Broken.fixed = True
    Broken.runs.clear()

    assert [j.id for j in FailedJobs(app).retry([job_id])] == [job_id]
    # The retry stored a fresh body of its own; the DLQ copy's object went with the copy.
    (new_key,) = objects(app)
    assert new_key != old_key

    work(app)
    assert Broken.runs == [(job_id, digest(LARGE))]
    settled(app)


def test_a_long_delay_carries_the_same_pointer_across_hops_and_uploads_once(moto: None, prefix: str) -> None:
    app = make_app(prefix, max_delay_hop=1)
    sends = sqs_requests("SendMessage")
    puts = s3_puts()
    with app.activate():
        started = time.time()
        job = Carry(data=LARGE).dispatch(delay=2)

    work(app)

    assert Carry.runs == [(job.job_id, digest(LARGE))]
    assert time.time() - started >= 2
    assert len(puts) == 1, "a hop re-sends the pointer, it never uploads again"
    assert len(sends) >= 2, "the job was dispatched and then hopped at least once"
    assert {s["MessageBody"] for s in sends} == {sends[0]["MessageBody"]}
    assert {s["MessageAttributes"][SIZE_ATTRIBUTE]["DataType"] for s in sends} == {"Number"}
    pointer_key(app, sends[0]["MessageBody"])
    settled(app)


def test_a_large_dispatch_without_a_bucket_queues_nothing_and_says_what_to_do(moto: None, prefix: str) -> None:
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], bucket=f"{prefix}missing")
    provision(app, ["default"], table=False, bucket=False)
    with app.activate(), pytest.raises(DispatchError, match="sqsjobs provision") as raised:
        Carry(data=LARGE).dispatch()
    assert [name for _, name, _ in raised.value.not_queued] == ["payloads.carry"]
    assert "SQSJOBS_BUCKET" in str(raised.value)
    assert not any(counts(app, "default").values())


def test_a_large_dispatch_that_cannot_be_sent_leaves_no_object(app: App) -> None:
    # The object is stored before the send; the send fails (no such queue), so it is deleted again.
    puts = s3_puts()
    with pytest.raises(ConfigurationError, match="does not exist; run `sqsjobs provision`"):
        Carry(data=LARGE).dispatch(queue="nowhere")
    assert len(puts) == 1
    assert objects(app) == {}


@pytest.mark.parametrize("bulk", [False, True], ids=["dispatch", "dispatch_many"])
def test_a_large_dispatch_that_sqs_refuses_leaves_no_object(app: App, bulk: bool) -> None:
    # A queue mapped by URL is not looked up first, so the object is stored and SQS refuses the send.
    url = queue_url(app, "default").rsplit("/", 1)[0] + f"/{app.settings.queue_prefix}gone"
    gone = App(
        connection="sqs",
        queue_prefix=app.settings.queue_prefix,
        queues={"default": "default", "gone": url},
        bucket=app.settings.bucket,
    )
    puts = s3_puts()
    with gone.activate(), pytest.raises(DispatchError, match="not queued") as raised:
        if bulk:
            Carry.dispatch_many([Carry(data=LARGE), Carry(data="small")], queue="gone")
        else:
            Carry(data=LARGE).dispatch(queue="gone")
    assert len(raised.value.not_queued) == (2 if bulk else 1)
    assert "does not exist" in str(raised.value)
    assert len(puts) == 1
    assert objects(app) == {}


def test_a_failed_job_whose_object_could_not_be_read_is_retried_with_its_object_kept(app: App) -> None:
    job_id, key = fail_large(app)
    Broken.fixed = True
    Broken.runs.clear()

    class Denied:
        status_code = 403

    def deny(**_: Any) -> Any:  # a read that fails for a moment (a role, a throttle) — the object is there
        return Denied(), {"Error": {"Code": "AccessDenied", "Message": "denied"}}

    s3 = aws.client("s3")
    s3.meta.events.register("before-call.s3.GetObject", deny, unique_id="deny")
    try:
        (retried,) = FailedJobs(app).retry([job_id])
    finally:
        s3.meta.events.unregister("before-call.s3.GetObject", unique_id="deny")
    assert retried.message.payload_error, "the retry could not read the body, so it re-sent the pointer"
    assert list(objects(app)) == [key], "the re-sent pointer's object must still be there"

    work(app)
    assert Broken.runs == [(job_id, digest(LARGE))]
    settled(app)

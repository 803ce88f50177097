"""Fault injection (sqsjobs.testing.faults): the kinds behave as specified, and each path of sqsjobs
keeps its promise when AWS misbehaves -- a job is never silently lost, never given up twice, and a
transient error is never mistaken for a permanent one."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from sqsjobs import App, DispatchError, Job, PermanentError, Release, aws
from sqsjobs.provisioning import provision
from sqsjobs.testing import faults as faults_module
from sqsjobs.testing.faults import FaultPlan, parse_spec
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, dead_letters, drain, queue_url, wait_for, work_for

STANDARD = Config(retries={"mode": "standard", "max_attempts": 3})


@pytest.fixture(autouse=True)
def _fewer_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two attempts per call (one retry) for sqsjobs' own clients: a fault that persists is a DispatchError
    or a logged retry after seconds, not after botocore's full backoff; `times=1` faults still show the retry.
    """
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    aws.reset_clients()


@pytest.fixture
def queue(moto: None, prefix: str) -> tuple[Any, str]:
    sqs = boto3.client("sqs", config=STANDARD)
    return sqs, str(sqs.create_queue(QueueName=f"{prefix}faults")["QueueUrl"])


def bodies(sqs: Any, url: str) -> list[str]:
    return sorted(m["Body"] for m in drain(url))


# -- the kinds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["throttle", "500", "reset"])
def test_one_planned_failure_is_retried_by_botocore_and_the_call_succeeds(
    faults: FaultPlan, queue: tuple[Any, str], kind: str
) -> None:
    sqs, url = queue
    faults.add(service="sqs", operation="SendMessage", kind=kind, times=1)
    sent = sqs.send_message(QueueUrl=url, MessageBody=kind)
    assert sent["ResponseMetadata"]["RetryAttempts"] == 1
    assert faults.count(service="sqs", operation="SendMessage", kind=kind) == 1
    assert bodies(sqs, url) == [kind], "the failed attempt had no effect; the retry sent it once"


def test_throttles_look_like_aws_throttles(faults: FaultPlan, queue: tuple[Any, str], prefix: str) -> None:
    sqs, url = queue
    faults.add(service="*", kind="throttle")
    with pytest.raises(ClientError) as caught:
        sqs.send_message(QueueUrl=url, MessageBody="x")
    assert caught.value.response["Error"]["Code"] in ("RequestThrottled", "ThrottlingException")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    ddb = boto3.client("dynamodb", config=STANDARD)
    with pytest.raises(ClientError) as caught:
        ddb.list_tables()
    assert caught.value.response["Error"]["Code"] in ("ProvisionedThroughputExceededException", "ThrottlingException")
    with pytest.raises(ClientError) as caught:
        boto3.client("s3", config=STANDARD).list_buckets()
    assert (caught.value.response["Error"]["Code"], caught.value.response["ResponseMetadata"]["HTTPStatusCode"]) == (
        "SlowDown",
        503,
    )
    assert faults.count(kind="throttle") == 3 * 4, "three services, every attempt (1 + max_attempts=3 retries)"
    faults.clear()
    assert bodies(sqs, url) == [], "a throttled call never reached moto"


def test_reset_raises_what_urllib3_would_surface(faults: FaultPlan, queue: tuple[Any, str]) -> None:
    sqs, url = queue
    faults.add(service="sqs", kind="reset")
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        sqs.send_message(QueueUrl=url, MessageBody="x")


def test_after_takes_effect_then_loses_the_answer(faults: FaultPlan, queue: tuple[Any, str]) -> None:
    sqs, url = queue
    faults.add(service="sqs", operation="SendMessage", kind="after", times=1)
    sqs.send_message(QueueUrl=url, MessageBody="once?")
    assert faults.count(kind="after") == 1
    assert bodies(sqs, url) == ["once?", "once?"], "the first attempt took effect; botocore's retry duplicated it"

    faults.add(service="sqs", operation="SendMessage", kind="after")  # every attempt
    with pytest.raises(ClientError) as caught:
        sqs.send_message(QueueUrl=url, MessageBody="lost answers")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    faults.clear()
    assert bodies(sqs, url) == ["lost answers"] * 4, "each of the four attempts really happened"


def test_slow_delays_then_proceeds(faults: FaultPlan, queue: tuple[Any, str]) -> None:
    sqs, url = queue
    faults.add(service="sqs", operation="SendMessage", kind="slow", times=1, delay=0.3)
    started = time.monotonic()
    sqs.send_message(QueueUrl=url, MessageBody="slow")
    assert time.monotonic() - started >= 0.3
    assert faults.count(kind="slow") == 1
    assert bodies(sqs, url) == ["slow"]


def test_selection_by_glob_and_rate_with_a_seed_is_repeatable(faults: FaultPlan, queue: tuple[Any, str]) -> None:
    _, url = queue
    sqs = boto3.client("sqs", config=Config(retries={"mode": "standard", "total_max_attempts": 1}))  # one draw a call

    def pattern() -> list[bool]:
        faults.clear()
        faults.reseed(7)
        faults.add(service="sq?", operation="Get*", kind="500", rate=0.5)
        hits = []
        for _ in range(20):
            before = faults.count()
            with contextlib.suppress(ClientError):  # when every attempt drew a fault
                sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
            hits.append(faults.count() > before)
        return hits

    first = pattern()
    assert first == pattern()
    assert 0 < sum(first) < 20
    assert faults.count(operation="SendMessage") == 0
    sqs.send_message(QueueUrl=url, MessageBody="untouched")
    assert faults.count(operation="SendMessage") == 0


def test_the_env_spec_parses_and_installs(moto: None) -> None:
    rule, seed = parse_spec("rate=0.1;services=sqs,dynamodb,s3;kinds=throttle,500,reset,after,slow;seed=7")
    kinds = ("throttle", "500", "reset", "after", "slow")
    assert (rule.rate, rule.services, rule.kinds, seed) == (0.1, ("sqs", "dynamodb", "s3"), kinds, 7)
    rule, seed = parse_spec("times=2;operations=SendMessage,Delete*;kinds=after")
    assert (rule.times, rule.rate, rule.operations, seed) == (2, None, ("SendMessage", "Delete*"), None)
    with pytest.raises(ValueError, match="unknown kind"):
        parse_spec("kinds=explode")
    with pytest.raises(ValueError, match="unknown key"):
        parse_spec("rat=0.1")
    assert faults_module.install_from_env({}) is None
    plan = faults_module.install_from_env({"SQSJOBS_TEST_FAULTS": "times=1;services=sqs;kinds=500"})
    try:
        assert plan is not None
        boto3.client("sqs", config=STANDARD).list_queues()
        assert plan.count(service="sqs", kind="500") == 1
    finally:
        faults_module.plan().clear()


def test_the_settings_loader_ignores_sqsjobs_test_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQSJOBS_TEST_STRICT", "1")
    monkeypatch.setenv("SQSJOBS_TEST_FAULTS", "rate=0.1")
    App(connection="memory")  # no ConfigurationError


# -- the paths of sqsjobs -------------------------------------------------------------------------


class Noted(Job, abstract=True):
    runs: ClassVar[list[tuple[str, int]]] = []
    given_up: ClassVar[list[str]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def note(self) -> None:
        with Noted.lock:
            Noted.runs.append((self.job_id or "", self.attempts))

    def failed(self, exc: BaseException) -> None:
        with Noted.lock:
            Noted.given_up.append(self.job_id or "")


class Plain(Noted, name="faults.plain"):
    n: int = 0

    def handle(self) -> None:
        self.note()


class Doomed(Noted, name="faults.doomed"):
    tries = 1

    def handle(self) -> None:
        self.note()
        raise PermanentError("doomed on purpose")


class Long(Noted, name="faults.long"):
    seconds: float = 4

    def handle(self) -> None:
        work_for(self.seconds)
        self.note()


class Unique(Noted, name="faults.unique"):
    unique_for = 3600
    key: int

    def unique_id(self) -> str:
        return str(self.key)

    def handle(self) -> None:
        self.note()


@pytest.fixture(autouse=True)
def _reset_jobs() -> Iterator[None]:
    Noted.runs.clear()
    Noted.given_up.clear()
    yield


def work(app: App, **options: Any) -> int:
    options.setdefault("sleep", 1)
    options.setdefault("stop_when_empty", True)
    return Worker(app, WorkerOptions(**options)).run(install_signals=False)


def ran(job_id: str) -> list[int]:
    return [attempt for jid, attempt in Noted.runs if jid == job_id]


def test_dispatch_failing_on_every_attempt_is_a_clear_dispatch_error(sqs_app: App, faults: FaultPlan) -> None:
    faults.add(service="sqs", operation="SendMessage", kind="500")
    with pytest.raises(DispatchError):
        Plain(n=1).dispatch()
    faults.clear()
    assert not any(counts(sqs_app, "default").values()), "nothing queued, and the caller knows"


@pytest.mark.parametrize("kind", ["throttle", "500", "reset"])
def test_dispatch_through_one_transient_error_queues_exactly_once(sqs_app: App, faults: FaultPlan, kind: str) -> None:
    faults.add(service="sqs", operation="SendMessage", kind=kind, times=1)
    dispatched = Plain(n=2).dispatch()
    assert faults.count(kind=kind) == 1
    assert work(sqs_app) == 0
    assert ran(str(dispatched.job_id)) == [1]


def test_dispatch_whose_answer_is_lost_may_queue_twice_but_never_zero_times(sqs_app: App, faults: FaultPlan) -> None:
    """Documented: SendMessage is not idempotent on standard queues; a lost answer + retry = two copies
    with the same job id. The job is never lost; it may run twice (use idempotency for that)."""
    faults.add(service="sqs", operation="SendMessage", kind="after", times=1)
    dispatched = Plain(n=3).dispatch()
    assert faults.count(kind="after") == 1
    assert work(sqs_app) == 0
    assert ran(str(dispatched.job_id)) in ([1], [1, 1])


def test_dispatch_many_through_throttles_queues_every_job_once(sqs_app: App, faults: FaultPlan) -> None:
    faults.add(service="sqs", operation="SendMessageBatch", kind="throttle", times=1)
    jobs = [Plain(n=i) for i in range(12)]
    Plain.dispatch_many(jobs)
    assert work(sqs_app, concurrency=4) == 0
    assert len(Noted.runs) == 12 and len({jid for jid, _ in Noted.runs}) == 12


def test_receive_errors_do_not_stop_the_worker(sqs_app: App, faults: FaultPlan) -> None:
    dispatched = Plain(n=4).dispatch()
    faults.add(service="sqs", operation="ReceiveMessage", kind="500", times=6)  # > one call's retries
    assert work(sqs_app, stop_when_empty=False, max_jobs=1, max_time=30) == 0
    assert ran(str(dispatched.job_id)) == [1]
    assert faults.count(operation="ReceiveMessage") == 6


def test_a_failed_delete_lets_the_job_run_again_but_never_loses_it(sqs_app: App, faults: FaultPlan) -> None:
    # A short visibility timeout, so the undeleted message comes back within the test.
    aws.client("sqs").set_queue_attributes(
        QueueUrl=queue_url(sqs_app, "default"), Attributes={"VisibilityTimeout": "2"}
    )
    dispatched = Plain(n=5).dispatch()
    faults.add(service="sqs", operation="DeleteMessage*", kind="500")
    assert work(sqs_app, stop_when_empty=False, max_time=3) == 0  # it cannot empty a queue it cannot delete from
    faults.clear()
    first = ran(str(dispatched.job_id))
    assert first[0] == 1
    assert sum(counts(sqs_app, "default").values()) == 1, "the message is still there, not lost"
    wait_for(lambda: counts(sqs_app, "default")["ApproximateNumberOfMessages"] == 1, timeout=20, what="redelivery")
    assert work(sqs_app) == 0
    again = ran(str(dispatched.job_id))
    assert not any(counts(sqs_app, "default").values())
    if len(first) < 3:  # tries left: it ran again, with the next attempt number
        assert len(again) == len(first) + 1 and again == sorted(again)
    else:  # its tries were spent on reruns: given up, in the DLQ, still not lost
        assert [m["attrs"]["sqsjobs.reason"] for m in dead_letters(sqs_app)] == ["tries_exhausted"]


def test_a_delete_whose_answer_is_lost_is_still_a_delete(sqs_app: App, faults: FaultPlan) -> None:
    dispatched = Plain(n=6).dispatch()
    faults.add(service="sqs", operation="DeleteMessageBatch", kind="after", times=1)
    assert work(sqs_app) == 0
    assert faults.count(kind="after") == 1
    assert ran(str(dispatched.job_id)) == [1]
    assert not any(counts(sqs_app, "default").values())
    assert dead_letters(sqs_app) == []


def test_a_failing_dlq_write_keeps_the_message_and_gives_the_job_up_once(sqs_app: App, faults: FaultPlan) -> None:
    dispatched = Doomed().dispatch()
    (message,) = sqs_app.connection.receive("default", 10, 0)
    faults.add(service="sqs", operation="SendMessage", kind="500")  # the DLQ write, every attempt
    decision = sqs_app.runner.process(message)
    assert isinstance(decision, Release) and "DLQ could not be written" in decision.reason
    assert Noted.given_up == [], "failed() waits until the job is really given up"
    faults.clear()
    sqs_app.connection.change_visibility("default", [(message, 0)])  # what the release's end does
    assert work(sqs_app) == 0
    (letter,) = dead_letters(sqs_app)
    assert letter["attrs"]["sqsjobs.reason"] == "tries_exhausted"
    assert Noted.given_up == [str(dispatched.job_id)], "failed() ran once"
    assert not any(counts(sqs_app, "default").values())


def test_a_dlq_write_whose_answer_is_lost_leaves_copies_recognisable_by_job_id(sqs_app: App, faults: FaultPlan) -> None:
    dispatched = Doomed().dispatch()
    faults.add(service="sqs", operation="SendMessage", kind="after", times=1)
    assert work(sqs_app) == 0
    letters = dead_letters(sqs_app)
    assert len(letters) in (1, 2), "one copy, or two when the retried send also landed"
    assert all(str(dispatched.job_id) in letter["Body"] for letter in letters)
    assert Noted.given_up == [str(dispatched.job_id)]
    assert not any(counts(sqs_app, "default").values())


def test_failing_heartbeats_are_logged_and_the_job_still_completes(
    sqs_app: App, faults: FaultPlan, caplog: pytest.LogCaptureFixture
) -> None:
    aws.client("sqs").set_queue_attributes(
        QueueUrl=queue_url(sqs_app, "default"), Attributes={"VisibilityTimeout": "2"}
    )
    dispatched = Long(seconds=4).dispatch()
    faults.add(service="sqs", operation="ChangeMessageVisibility*", kind="500")
    assert work(sqs_app, concurrency=1) == 0
    assert faults.count(operation="ChangeMessageVisibilityBatch") >= 1, "a heartbeat was attempted and failed"
    assert ran(str(dispatched.job_id))[:1] == [1], "the job completed"
    assert any("heartbeat" in r.getMessage().lower() or "visibility" in r.getMessage().lower() for r in caplog.records)


@pytest.fixture
def store_app(moto: None, prefix: str) -> Iterator[App]:
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, table=f"{prefix}t")
    provision(app, ["default"], table=True, bucket=False)
    with app.activate():
        yield app


@pytest.mark.parametrize("kind", ["500", "after"])
def test_a_store_write_failing_at_unique_dispatch_is_a_dispatch_error_and_leaks_no_lock(
    store_app: App, faults: FaultPlan, kind: str
) -> None:
    """The lock is a conditional PutItem. A 500 is a DispatchError; with `after` the lock was written
    and botocore's retry finds it held by this same job id: that is its own lock, so it is sent."""
    faults.add(service="dynamodb", operation="PutItem", kind=kind)
    if kind == "500":
        with pytest.raises(DispatchError):
            Unique(key=1).dispatch()
    else:
        assert Unique(key=1).dispatch().queued
    assert faults.count(operation="PutItem")
    faults.clear()
    queued = sum(counts(store_app, "default").values())
    if queued == 0:
        assert Unique(key=1).dispatch().queued, "the lock did not outlive the failed dispatch"
    assert work(store_app) == 0
    assert len([1 for _, attempt in Noted.runs]) == 1


def objects(app: App) -> list[str]:
    return [o["Key"] for o in aws.client("s3").list_objects_v2(Bucket=app.settings.bucket).get("Contents", [])]


def test_a_transient_s3_get_error_is_not_a_missing_payload(s3_app: App, faults: FaultPlan) -> None:
    dispatched = Plain(n=7).dispatch()
    faults.add(service="s3", operation="GetObject", kind="500")  # every attempt
    (message,) = s3_app.connection.receive("default", 10, 0)
    decision = s3_app.runner.process(message)
    assert isinstance(decision, Release), "a 500 from S3 is not 'the payload is gone'"
    assert dead_letters(s3_app) == []
    faults.clear()
    s3_app.connection.change_visibility("default", [(message, 0)])
    assert work(s3_app) == 0
    assert ran(str(dispatched.job_id)) == [2]
    assert objects(s3_app) == []


def test_a_throttled_s3_get_is_retried_and_the_job_runs(s3_app: App, faults: FaultPlan) -> None:
    dispatched = Plain(n=8).dispatch()
    faults.add(service="s3", operation="GetObject", kind="throttle", times=1)
    assert work(s3_app) == 0
    assert ran(str(dispatched.job_id)) == [1]
    assert dead_letters(s3_app) == []


def test_a_missing_s3_object_is_a_missing_payload(s3_app: App) -> None:
    Plain(n=9).dispatch()
    for key in objects(s3_app):
        aws.client("s3").delete_object(Bucket=s3_app.settings.bucket, Key=key)
    assert work(s3_app) == 0
    (letter,) = dead_letters(s3_app)
    assert letter["attrs"]["sqsjobs.reason"] == "missing_payload"


def test_s3_put_failing_at_dispatch_is_a_dispatch_error(s3_app: App, faults: FaultPlan) -> None:
    faults.add(service="s3", operation="PutObject", kind="500")
    with pytest.raises(DispatchError):
        Plain(n=10).dispatch()
    faults.clear()
    assert not any(counts(s3_app, "default").values())


def test_s3_delete_failing_after_the_job_leaves_an_object_but_loses_nothing(s3_app: App, faults: FaultPlan) -> None:
    dispatched = Plain(n=11).dispatch()
    faults.add(service="s3", operation="DeleteObject", kind="500")
    assert work(s3_app) == 0
    faults.clear()
    assert ran(str(dispatched.job_id)) == [1]
    assert dead_letters(s3_app) == []
    wait_for(lambda: not any(counts(s3_app, "default").values()), timeout=5, what="the message to be deleted")

"""The runner core: one message in, one decision out — on the memory connection and on SQS."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, ClassVar

import pytest

from sqsjobs import Ack, App, Defer, Fail, Job, PermanentError, ReceivedMessage, Release, aws
from sqsjobs.connections.memory import MemoryConnection
from tests.helpers import FakeClock, dead_letters, queue_url


class Recorder(Job, abstract=True):
    runs: ClassVar[list[tuple[str, int]]] = []
    failures: ClassVar[list[str]] = []

    def failed(self, exc: BaseException) -> None:
        type(self).failures.append(f"{type(exc).__name__}: {exc}")


class Succeeds(Recorder, name="runner.succeeds"):
    runs: ClassVar[list[tuple[str, int]]] = []

    def handle(self) -> None:
        self.runs.append((self.job_id or "", self.attempts))


class Flaky(Recorder, name="runner.flaky"):
    runs: ClassVar[list[tuple[str, int]]] = []
    failures: ClassVar[list[str]] = []
    tries = 3
    backoff = [7, 11]

    def handle(self) -> None:
        self.runs.append((self.job_id or "", self.attempts))
        raise ConnectionError("upstream down")


class Declined(Recorder, name="runner.declined"):
    failures: ClassVar[list[str]] = []
    tries = 5

    def handle(self) -> None:
        raise PermanentError("card declined")


class ValueFails(Recorder, name="runner.value-fails"):
    tries = 5
    fail_on = (ValueError,)

    def handle(self) -> None:
        raise ValueError("bad input")


class SelfReleasing(Recorder, name="runner.self-releasing"):
    backoff = 42
    explicit: int | None = None

    def handle(self) -> None:
        self.release(self.explicit)


class GivesUp(Recorder, name="runner.gives-up"):
    failures: ClassVar[list[str]] = []

    def handle(self) -> None:
        self.fail("customer deleted")


class Deadline(Recorder, name="runner.deadline"):
    tries = 10
    retry_until = timedelta(minutes=5)

    def handle(self) -> None:
        raise RuntimeError("still failing")


class Typed(Job, name="runner.typed"):
    count: int

    def handle(self) -> None:
        pass


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(clock: FakeClock) -> App:
    app = App(connection=MemoryConnection(visibility_timeout=30, max_receive_count=None, clock=clock), clock=clock)
    for cls in (Succeeds, Flaky, Declined, GivesUp):
        cls.runs.clear()
        cls.failures.clear()
    return app


def receive(app: App, queue: str = "default") -> ReceivedMessage:
    (message,) = app.connection.receive(queue, 1, 0)
    return message


def dead(app: App, queue: str = "default") -> list[ReceivedMessage]:
    connection = app.connection
    assert isinstance(connection, MemoryConnection)
    return connection.dead_letters(queue)


def test_a_successful_job_is_acknowledged(app: App) -> None:
    with app.activate():
        job_id = Succeeds().dispatch().job_id
    assert app.runner.process(receive(app)) == Ack()
    assert Succeeds.runs == [(job_id, 1)]


def test_exceptions_release_the_same_message_with_the_backoff_until_tries_run_out(app: App, clock: FakeClock) -> None:
    with app.activate():
        Flaky().dispatch()
    decisions = []
    for wait in (0, 7, 11):
        clock.now += wait
        message = receive(app)
        decision = app.runner.process(message)
        decisions.append(decision)
        if isinstance(decision, Release):
            app.connection.change_visibility("default", [(message, decision.delay)])
    assert [type(d) for d in decisions] == [Release, Release, Fail]
    assert [d.delay for d in decisions[:2]] == [7, 11]  # type: ignore[union-attr]
    assert [attempt for _, attempt in Flaky.runs] == [1, 2, 3]
    assert len({job_id for job_id, _ in Flaky.runs}) == 1
    (letter,) = dead(app)
    assert letter.attributes["sqsjobs.reason"] == "tries_exhausted"
    assert letter.attributes["sqsjobs.attempts"] == "3"
    assert Flaky.failures == ["ConnectionError: upstream down"]


def test_a_redelivery_past_its_tries_is_failed_without_running(app: App) -> None:
    """The worker died during the last try: the next delivery must not be one run too many."""
    with app.activate():
        Flaky().dispatch()
    message = receive(app)
    message.receive_count = 4
    decision = app.runner.process(message)
    assert isinstance(decision, Fail) and decision.reason == "tries_exhausted"
    assert Flaky.runs == []
    assert dead(app)[0].attributes["sqsjobs.error_type"] == "MaxAttemptsExceededError"
    assert Flaky.failures and "has run 3 times" in Flaky.failures[0]


def test_permanent_errors_and_fail_on_types_skip_the_retries(app: App) -> None:
    with app.activate():
        Declined().dispatch()
        ValueFails().dispatch()
    first = app.runner.process(receive(app))
    second = app.runner.process(receive(app))
    assert (first, second) == (
        Fail("permanent", "PermanentError", first.exception),  # type: ignore[union-attr]
        Fail("permanent", "ValueError", second.exception),  # type: ignore[union-attr]
    )
    assert [m.attributes["sqsjobs.attempts"] for m in dead(app)] == ["1", "1"]
    assert Declined.failures == ["PermanentError: card declined"]


def test_release_defaults_to_the_backoff_not_to_now(app: App) -> None:
    with app.activate():
        SelfReleasing().dispatch()
        SelfReleasing(explicit=5).dispatch()
    assert app.runner.process(receive(app)) == Release(42, "released by the job")
    assert app.runner.process(receive(app)) == Release(5, "released by the job")


def test_fail_sends_the_job_to_the_dlq_with_its_reason(app: App) -> None:
    with app.activate():
        GivesUp().dispatch()
    decision = app.runner.process(receive(app))
    assert isinstance(decision, Fail) and decision.reason == "failed_by_job"
    assert dead(app)[0].attributes["sqsjobs.error"] == "customer deleted"
    assert GivesUp.failures == ["JobFailedError: customer deleted"]


def test_retry_until_stops_retries_even_with_tries_left(app: App, clock: FakeClock) -> None:
    with app.activate():
        Deadline().dispatch()
    message = receive(app)
    assert isinstance(app.runner.process(message), Release)
    clock.now += 301
    app.connection.change_visibility("default", [(message, 0)])
    decision = app.runner.process(receive(app))
    assert isinstance(decision, Fail) and decision.reason == "retry_until"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{{{", "malformed"),
        (
            json.dumps(
                {
                    "v": 1,
                    "id": "x",
                    "job": "nobody.knows",
                    "payload": {},
                    "queue": "default",
                    "dispatched_at": "2026-01-01T00:00:00Z",
                }
            ),
            "unknown_job",
        ),
        (
            json.dumps(
                {
                    "v": 1,
                    "id": "x",
                    "job": "runner.typed",
                    "payload": {"count": "many"},
                    "queue": "default",
                    "dispatched_at": "2026-01-01T00:00:00Z",
                }
            ),
            "invalid_payload",
        ),
    ],
)
def test_bad_messages_go_to_the_dlq_with_their_reason_and_never_run(app: App, body: str, reason: str) -> None:
    from sqsjobs import OutgoingMessage

    app.connection.send("default", OutgoingMessage(body=body))
    decision = app.runner.process(receive(app))
    assert isinstance(decision, Fail) and decision.reason == reason
    (letter,) = dead(app)
    assert letter.body == body
    assert letter.attributes["sqsjobs.reason"] == reason


def test_with_a_signing_key_unsigned_messages_are_refused(clock: FakeClock) -> None:
    connection = MemoryConnection(clock=clock)
    unsigned = App(connection=connection, clock=clock)
    signed = App(connection=connection, clock=clock, signing_key="s3cret-s3cret-s3cret-s3cret-s3cret-32")
    with unsigned.activate():
        Succeeds().dispatch()
    with signed.activate():
        Succeeds().dispatch()
    first = signed.runner.process(receive(signed))
    second = signed.runner.process(receive(signed))
    assert isinstance(first, Fail) and first.reason == "signature"
    assert second == Ack()


def test_a_long_delay_hops_until_it_is_due_then_runs(app: App, clock: FakeClock) -> None:
    """20 minutes with 900 s hops: one DelaySeconds, one re-send of the rest, then the run."""
    with app.activate():
        Succeeds().dispatch(delay=timedelta(minutes=20))
    assert app.connection.receive("default", 1, 0) == []
    clock.now += 900
    first = receive(app)
    decision = app.runner.process(first)
    assert decision == Defer(300)
    app.connection.delete("default", [first])
    assert Succeeds.runs == []
    clock.now += 299
    assert app.connection.receive("default", 1, 0) == []
    clock.now += 1
    second = receive(app)
    assert second.body == first.body and second.receive_count == 1
    assert app.runner.process(second) == Ack()
    assert len(Succeeds.runs) == 1


def test_the_dlq_copy_on_sqs_carries_every_reason_attribute(sqs_app: App) -> None:
    with sqs_app.activate():
        Declined().dispatch()
    (raw,) = aws.client("sqs").receive_message(
        QueueUrl=queue_url(sqs_app, "default"), MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"]
    )["Messages"]
    message = ReceivedMessage("default", raw["MessageId"], raw["ReceiptHandle"], raw["Body"], 1, 0.0)
    assert isinstance(sqs_app.runner.process(message), Fail)
    (letter,) = dead_letters(sqs_app)
    attrs: dict[str, Any] = letter["attrs"]
    assert letter["Body"] == raw["Body"]
    assert attrs["sqsjobs.reason"] == "permanent"
    assert attrs["sqsjobs.error_type"] == "PermanentError"
    assert attrs["sqsjobs.error"] == "card declined"
    assert "card declined" in attrs["sqsjobs.traceback"] and "Traceback" in attrs["sqsjobs.traceback"]
    assert attrs["sqsjobs.source_queue"] == "default"
    assert attrs["sqsjobs.attempts"] == "1"
    assert attrs["sqsjobs.job"] == "runner.declined"
    assert attrs["sqsjobs.failed_at"].endswith("Z")
    assert attrs["sqsjobs.job_id"] == json.loads(raw["Body"])["id"]

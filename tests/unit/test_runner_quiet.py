"""`Runner.begin_quiet` / `finish_quiet`: what the asyncio worker may begin and finish on its loop.

The loop must never wait on AWS or the store, so a quiet begin either hands back a job to run that
needed no call on the way, or None having done *nothing* — no DLQ copy, no hop, no lock, no event —
for `begin` to do it all in the pool. These check both halves of that promise for every way a
delivery can need a call, and that the ordinary `begin` then decides exactly as it always did.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from botocore import handlers as botocore_handlers

from sqsjobs import Ack, App, Defer, Fail, Job, OutgoingMessage, ReceivedMessage, Release, aws
from sqsjobs.batches import batch
from sqsjobs.chains import chain
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.cron import every_minute
from sqsjobs.events import JobEvent
from sqsjobs.runner import Run
from sqsjobs.schedules import Schedules, schedule
from sqsjobs.scheduling import Scheduler
from tests.helpers import FakeClock


class Plain(Job, name="quiet.plain"):
    runs: ClassVar[list[int]] = []
    n: int = 0

    def handle(self) -> None:
        Plain.runs.append(self.n)


class Unique(Job, name="quiet.unique"):
    unique_for = timedelta(minutes=10)

    def handle(self) -> None:
        Plain.runs.append(-1)


class Keyed(Job, name="quiet.keyed"):
    order: int

    def idempotency_key(self) -> str | None:
        return f"order-{self.order}"

    def handle(self) -> None:
        Plain.runs.append(-2)


class Exhausted(Job, name="quiet.exhausted"):
    tries = 2
    failures: ClassVar[list[str]] = []

    def handle(self) -> None:
        Plain.runs.append(-3)

    def failed(self, exc: BaseException) -> None:
        Exhausted.failures.append(type(exc).__name__)


class Releases(Job, name="quiet.releases"):
    def handle(self) -> None:
        self.release(5)


class GivesUp(Job, name="quiet.gives-up"):
    def handle(self) -> None:
        self.fail("not today")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def seen() -> list[str]:
    return []


def _app(clock: FakeClock, seen: list[str], **settings: object) -> App:
    app = App(
        connection=MemoryConnection(visibility_timeout=30, max_receive_count=None, clock=clock), clock=clock, **settings
    )  # type: ignore[arg-type]
    app.events.listen(lambda e: seen.append(e.kind) if isinstance(e, JobEvent) and e.kind != "queued" else None)
    Plain.runs.clear()
    Exhausted.failures.clear()
    return app


@pytest.fixture
def app(clock: FakeClock, seen: list[str]) -> App:
    return _app(clock, seen)


def receive(app: App, queue: str = "default") -> ReceivedMessage:
    (message,) = app.connection.receive(queue, 1, 0)
    return message


def dead(app: App) -> list[ReceivedMessage]:
    connection = app.connection
    assert isinstance(connection, MemoryConnection)
    return connection.dead_letters("default")


def test_a_plain_job_is_begun_and_finished_quietly_as_begin_and_finish_would(app: App, seen: list[str]) -> None:
    with app.activate():
        Plain(n=7).dispatch()
    step = app.runner.begin_quiet(receive(app))
    assert isinstance(step, Run)
    app.runner.run_handle(step.job, context=step.delivery.context)
    assert app.runner.finish_quiet(step, 0.01) == Ack()
    assert Plain.runs == [7]
    assert seen == ["processing", "processed"]  # each once, as `begin` and `finish` emit them


def _nothing_done(app: App, seen: list[str]) -> None:
    assert Plain.runs == [] and seen == [] and dead(app) == []


def _refused_then_failed(app: App, seen: list[str], message: ReceivedMessage, reason: str) -> None:
    """`begin_quiet` does nothing; `begin` then fails the message to the DLQ with `reason`, as always."""
    assert app.runner.begin_quiet(message) is None
    _nothing_done(app, seen)
    decision = app.runner.begin(message)
    assert isinstance(decision, Fail) and decision.reason == reason
    assert [letter.attributes["sqsjobs.reason"] for letter in dead(app)] == [reason]


@pytest.mark.parametrize(
    "dispatch",
    [
        pytest.param(lambda: Unique().dispatch(), id="a unique job (its lock is released by a hook)"),
        pytest.param(lambda: Keyed(order=1).dispatch(), id="an idempotency key (claimed in the store)"),
        pytest.param(lambda: chain([Plain(n=1), Plain(n=2)]).dispatch(), id="a chain (its next link is sent)"),
    ],
)
def test_a_job_a_hook_acts_on_is_left_untouched_for_begin(app: App, seen: list[str], dispatch: object) -> None:
    with app.activate():
        dispatch()  # type: ignore[operator]
    message = receive(app)
    assert app.runner.begin_quiet(message) is None
    _nothing_done(app, seen)
    assert isinstance(app.runner.begin(message), Run)


def test_with_the_job_log_on_every_job_is_begun_in_the_pool(clock: FakeClock, seen: list[str]) -> None:
    app = _app(clock, seen, job_log=True)
    with app.activate():
        Plain().dispatch()
    assert app.runner.begin_quiet(receive(app)) is None
    _nothing_done(app, seen)


@pytest.mark.parametrize(("job_name", "reason"), [(None, "malformed"), ("nobody.knows", "unknown_job")])
def test_a_message_that_cannot_become_a_job_writes_no_dlq_copy_quietly(
    app: App, seen: list[str], job_name: str | None, reason: str
) -> None:
    with app.activate():
        Plain().dispatch()
    body = receive(app).body
    app.connection.send(
        "default", OutgoingMessage(body="not json" if job_name is None else body.replace("quiet.plain", job_name))
    )
    message = next(m for m in app.connection.receive("default", 10, 0) if "quiet.plain" not in m.body)
    _refused_then_failed(app, seen, message, reason)


def test_a_delivery_past_its_tries_is_failed_only_by_begin(app: App, seen: list[str]) -> None:
    with app.activate():
        Exhausted().dispatch()
    message = receive(app)
    message.receive_count = 3
    assert app.runner.begin_quiet(message) is None
    assert Exhausted.failures == []
    _refused_then_failed(app, seen, message, "tries_exhausted")
    assert Exhausted.failures == ["MaxAttemptsExceededError"]


def test_a_long_delay_is_hopped_only_by_begin(app: App, clock: FakeClock, seen: list[str]) -> None:
    with app.activate():
        Plain().dispatch(delay=timedelta(minutes=20))
    clock.now += 900
    message = receive(app)
    assert app.runner.begin_quiet(message) is None
    assert app.connection.counts("default")["ApproximateNumberOfMessages"] == 0  # no hop sent
    assert app.runner.begin(message) == Defer(300)


def test_a_fifo_redelivery_reads_its_postponements_so_is_begun_in_the_pool(app: App, seen: list[str]) -> None:
    with app.activate():
        Plain().dispatch()
    message = receive(app)
    message.group_id, message.receive_count = "orders", 2
    assert app.runner.begin_quiet(message) is None
    _nothing_done(app, seen)


@pytest.mark.parametrize("job", [Releases, GivesUp], ids=["released by the job", "failed by the job"])
def test_a_job_that_releases_or_fails_itself_is_finished_by_finish(app: App, seen: list[str], job: type[Job]) -> None:
    with app.activate():
        job().dispatch()
    step = app.runner.begin_quiet(receive(app))
    assert isinstance(step, Run)
    app.runner.run_handle(step.job, context=step.delivery.context)
    assert app.runner.finish_quiet(step, 0.01) is None
    assert dead(app) == [] and "failed" not in seen and "released" not in seen
    decision = app.runner.finish(step, None, 0.01)
    assert isinstance(decision, Release if job is Releases else Fail)
    assert len(dead(app)) == (0 if job is Releases else 1)


class Deadline(Job, name="quiet.deadline"):
    retry_until = timedelta(seconds=10)

    def handle(self) -> None:
        Plain.runs.append(-4)


def test_a_job_past_its_retry_until_is_failed_only_by_begin(app: App, clock: FakeClock, seen: list[str]) -> None:
    with app.activate():
        Deadline().dispatch()
    clock.now += 60
    _refused_then_failed(app, seen, receive(app), "retry_until")


def test_an_invalid_payload_writes_no_dlq_copy_quietly(app: App, seen: list[str]) -> None:
    with app.activate():
        Plain().dispatch()
    body = json.loads(receive(app).body)
    body["payload"] = {"n": "not a number"}
    app.connection.send("default", OutgoingMessage(body=json.dumps(body)))
    (message,) = app.connection.receive("default", 10, 0)
    _refused_then_failed(app, seen, message, "invalid_payload")


def test_a_batch_member_is_begun_in_the_pool(app: App, seen: list[str]) -> None:
    with app.activate():
        batch([Plain(n=1), Plain(n=2)]).dispatch()
    messages = app.connection.receive("default", 10, 0)
    assert len(messages) == 2
    assert [app.runner.begin_quiet(message) for message in messages] == [None, None]
    _nothing_done(app, seen)


def test_a_scheduled_run_is_begun_in_the_pool(clock: FakeClock, seen: list[str]) -> None:
    schedules = Schedules()
    app = _app(clock, seen, schedules=schedules, store="memory")
    schedule(Plain(n=9), every_minute(), name="quiet-every-minute", registry=schedules)
    Scheduler(app).run_due()
    assert app.runner.begin_quiet(receive(app)) is None
    _nothing_done(app, seen)


def test_an_encrypted_job_is_opened_only_by_begin(moto: None, seen: list[str]) -> None:
    """Opening a sealed payload may call KMS: never on the loop."""
    key = str(aws.client("kms").create_key(Description="quiet")["KeyMetadata"]["KeyId"])
    app = App(connection="memory", kms_key=key)
    app.events.listen(lambda e: seen.append(e.kind) if isinstance(e, JobEvent) and e.kind != "queued" else None)
    kms_calls: list[str] = []

    def called(model: Any, **_: Any) -> None:
        kms_calls.append(model.name)

    with app.activate():
        Sealed(card="4242").dispatch()
        message = receive(app)
        spec = ("before-call.kms", called)
        botocore_handlers.BUILTIN_HANDLERS.append(spec)
        aws.client("kms").meta.events.register(*spec)
        try:
            assert app.runner.begin_quiet(message) is None
            assert kms_calls == [] and seen == []
        finally:
            botocore_handlers.BUILTIN_HANDLERS.remove(spec)
            aws.client("kms").meta.events.unregister(*spec)
        step = app.runner.begin(message)
        assert isinstance(step, Run) and step.job.card == "4242"  # type: ignore[attr-defined]


class Sealed(Job, name="quiet.sealed"):
    encrypted = True
    card: str

    def handle(self) -> None:
        Plain.runs.append(-5)

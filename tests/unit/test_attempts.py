"""Attempts count runs, not receives (docs/attempts.md): a message whose job did not run spends no try.

Each case goes through the runner and the settler to moto with the strict AWS rules, as a worker does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest

from sqsjobs import Ack, App, Fail, Job, Middleware, Postpone, Release, WithoutOverlapping, policy
from sqsjobs.connections.base import ReceivedMessage
from sqsjobs.provisioning import provision
from sqsjobs.testing import rule_state
from tests.helpers import dead_letters


class Guarded(Job, name="attempts.guarded"):
    """tries=1: one spent try too many and it is in the DLQ having never run."""

    tries = 1
    runs: ClassVar[list[int]] = []

    def middleware(self) -> list[Any]:
        return [WithoutOverlapping("the-lock", release_after=0)]

    def handle(self) -> None:
        Guarded.runs.append(self.attempts)


class Failing(Job, name="attempts.failing"):
    tries = 2
    backoff = 0
    runs: ClassVar[list[int]] = []

    def handle(self) -> None:
        Failing.runs.append(self.attempts)
        raise RuntimeError("down")


def settle(app: App, queue: str, message: ReceivedMessage) -> Any:
    decision = app.runner.process(message)
    if app.settler.apply(message, decision).delete:
        app.connection.delete(queue, [message])
    return decision


def receive_one(app: App, queue: str) -> ReceivedMessage:
    for _ in range(20):
        got = app.connection.receive(queue, 1, 1)
        if got:
            return got[0]
    raise AssertionError(f"nothing came back on {queue}")


@pytest.fixture
def locked(sqs_app: App) -> App:
    Guarded.runs.clear()
    provision(sqs_app, ["default"], table=True, bucket=False)
    sqs_app.store.add(("overlap", "attempts.guarded:the-lock"), {"owner": "someone-else"}, ttl=600)
    return sqs_app


def test_a_job_held_back_by_its_middleware_again_and_again_runs_on_its_first_try(moto: None, locked: App) -> None:
    Guarded().dispatch()
    for _ in range(4):
        decision = settle(locked, "default", receive_one(locked, "default"))
        assert isinstance(decision, Postpone)
    locked.store.delete(("overlap", "attempts.guarded:the-lock"))
    message = receive_one(locked, "default")
    assert message.attributes[policy.RUNS_ATTRIBUTE] == "0", "the copy carries the runs so far"
    assert settle(locked, "default", message) == Ack()
    assert Guarded.runs == [1], "it ran once, as attempt 1 of its single try"


def test_a_fifo_job_held_back_keeps_its_place_and_its_tries(moto: None, prefix: str) -> None:
    app = App(connection="sqs", queue_prefix=prefix, visibility_timeout=30)
    provision(app, ["orders.fifo"], table=True, bucket=False)
    Guarded.runs.clear()
    app.store.add(("overlap", "attempts.guarded:the-lock"), {"owner": "someone-else"}, ttl=600)
    with app.activate():
        Guarded().dispatch(queue="orders.fifo", group="g")
        first = receive_one(app, "orders.fifo")
        assert first.group_id == "g"
        for _ in range(3):
            assert isinstance(settle(app, "orders.fifo", first), Postpone)
            again = receive_one(app, "orders.fifo")
            assert again.message_id == first.message_id, "the same message, in its place in the group"
            first = again
        app.store.delete(("overlap", "attempts.guarded:the-lock"))
        assert first.receive_count == 4
        assert settle(app, "orders.fifo", first) == Ack()
    assert Guarded.runs == [1]


def test_a_real_failure_still_spends_a_try_and_ends_in_the_dlq(sqs_app: App) -> None:
    Failing.runs.clear()
    Failing().dispatch()
    assert isinstance(settle(sqs_app, "default", receive_one(sqs_app, "default")), Release)
    decision = settle(sqs_app, "default", receive_one(sqs_app, "default"))
    assert isinstance(decision, Fail) and decision.reason == "tries_exhausted"
    assert Failing.runs == [1, 2]


def test_a_carried_run_count_is_read_and_a_forged_one_ignored(memory_app: App) -> None:
    base = ReceivedMessage("q", "m", "h", "{}", 3, 0.0)
    assert policy.attempt(base.receive_count, {policy.RUNS_ATTRIBUTE: "2"}) == 5
    for forged in ("-5", "1e9", "99999999", "\uff12", ""):
        assert policy.attempt(3, {policy.RUNS_ATTRIBUTE: forged}) == 3, forged
    assert policy.attempt(4, {}, skipped=3) == 1


def test_a_release_longer_than_sqs_allows_from_this_receive_is_cut_not_refused(sqs_app: App) -> None:
    Failing().dispatch()
    message = receive_one(sqs_app, "default")
    rule_state.advance_clock(11 * 3600)  # the job ran for 11 hours
    aged = dataclasses.replace(message, received_at=message.received_at - 11 * 3600)
    sqs_app.settler.apply(aged, Release(3 * 3600))  # SQS would refuse 3 h: only ~1 h is left
    counts = sqs_app.connection.counts("default")
    assert counts["ApproximateNumberOfMessagesNotVisible"] == 1, "the visibility change was accepted"


class Flaky(Job, name="attempts.flaky"):
    tries = 5
    max_exceptions = 2
    backoff = 0
    runs: ClassVar[list[int]] = []

    def handle(self) -> None:
        Flaky.runs.append(self.attempts)
        raise RuntimeError("still down")


def test_a_job_retried_from_the_dlq_starts_its_max_exceptions_count_again(sqs_app: App) -> None:
    """`failed retry` is a new life: attempts start at 1, and so does the exception count (it used to
    survive, so a retried job was given up again after its first exception)."""
    from sqsjobs.failed_jobs import FailedJobs

    provision(sqs_app, ["default"], table=True, bucket=False)
    Flaky.runs.clear()
    dispatched = Flaky().dispatch()
    assert isinstance(settle(sqs_app, "default", receive_one(sqs_app, "default")), Release)
    given_up = settle(sqs_app, "default", receive_one(sqs_app, "default"))
    assert isinstance(given_up, Fail) and given_up.reason == "max_exceptions"
    FailedJobs(sqs_app).retry([dispatched.job_id])
    assert isinstance(settle(sqs_app, "default", receive_one(sqs_app, "default")), Release), "one exception of two"
    assert Flaky.runs == [1, 2, 1]


class Once(Job, name="attempts.once-fails"):
    tries = 3
    backoff = 0
    runs: ClassVar[list[int]] = []

    def handle(self) -> None:
        Once.runs.append(self.attempts)
        if len(Once.runs) == 1:
            raise RuntimeError("once")


def test_a_fifo_job_retries_without_a_table(moto: None, prefix: str) -> None:
    """FIFO redeliveries read their postponements from the store; with no table that read fails softly
    (the job runs; a postponement would spend a try) instead of holding every retry back for good."""
    app = App(connection="sqs", queue_prefix=prefix, visibility_timeout=30)
    provision(app, ["orders.fifo"], table=False, bucket=False)
    Once.runs.clear()
    with app.activate():
        Once().dispatch(queue="orders.fifo", group="g")
        assert isinstance(settle(app, "orders.fifo", receive_one(app, "orders.fifo")), Release)
        assert settle(app, "orders.fifo", receive_one(app, "orders.fifo")) == Ack()
    assert Once.runs == [1, 2]


class Hold(Middleware):
    def handle(self, job: Job, next: Any) -> Any:
        job.release()  # no delay given: the job's backoff, never "visible again now"
        return None


class Held(Job, name="attempts.held"):
    backoff = 60

    def middleware(self) -> list[Any]:
        return [Hold()]

    def handle(self) -> None:
        pass


def test_a_job_held_back_without_a_delay_waits_its_backoff_not_zero(memory_app: App) -> None:
    Held().dispatch()
    (message,) = memory_app.connection.receive("default", 1, 0)
    assert memory_app.runner.process(message) == Postpone(60, "held back before it ran")


def test_a_fifo_job_held_back_until_its_redrive_would_move_it_is_failed_with_a_reason(moto: None, prefix: str) -> None:
    """On FIFO a postponement keeps its place, so it still counts toward maxReceiveCount: on the last
    receive the runner fails it to the DLQ with a reason instead of SQS moving it silently."""
    app = App(connection="sqs", queue_prefix=prefix, visibility_timeout=30, max_receive_count=3)
    provision(app, ["orders.fifo"], table=True, bucket=False)
    Guarded.runs.clear()
    app.store.add(("overlap", "attempts.guarded:the-lock"), {"owner": "someone-else"}, ttl=600)
    decisions = []
    with app.activate():
        Guarded().dispatch(queue="orders.fifo", group="g")
        for _ in range(3):
            decisions.append(settle(app, "orders.fifo", receive_one(app, "orders.fifo")))
    assert [type(d) for d in decisions] == [Postpone, Postpone, Fail]
    assert decisions[-1].reason == "held_back"  # type: ignore[union-attr]
    (letter,) = dead_letters(app, "orders.fifo")
    assert letter["attrs"]["sqsjobs.reason"] == "held_back"
    assert Guarded.runs == []


class Charge(Job, name="attempts.charge"):
    order: int
    runs: ClassVar[list[int]] = []

    def idempotency_key(self) -> str:
        return f"order-{self.order}"

    def handle(self) -> None:
        Charge.runs.append(self.attempts)


def test_an_idempotency_key_on_dynamodb_is_taken_over_by_its_job_after_the_runs_timeout(
    moto: None, prefix: str
) -> None:
    """The worker running an idempotent job is killed: its message comes back, waits out the rest of the
    run's timeout for free (a live run would still hold the key), then its copy takes the key over and runs.
    Another message of the same job afterwards is a duplicate. On the DynamoDB store, as in production."""
    from tests.helpers import FakeClock

    clock = FakeClock()
    app = App(connection="sqs", queue_prefix=prefix, visibility_timeout=30, timeout=2, clock=clock, clock_skew=0)
    provision(app, ["default"], table=True, bucket=False)
    Charge.runs.clear()
    with app.activate():
        Charge(order=1).dispatch()
        message = receive_one(app, "default")
        assert not isinstance(app.runner.begin(message), Release | Ack | Fail | Postpone)  # then SIGKILL
        app.connection.change_visibility("default", [(message, 0)])  # its visibility runs out
        clock.now += 1
        back = receive_one(app, "default")
        assert back.receive_count == 2
        waits = settle(app, "default", back)
        assert isinstance(waits, Postpone) and waits.delay == 1, "the rest of the run's 2 s timeout"
        clock.now += 2
        copy = receive_one(app, "default")
        assert copy.message_id != message.message_id and copy.attributes[policy.RUNS_ATTRIBUTE] == "1"
        assert settle(app, "default", copy) == Ack()
        duplicate = dataclasses.replace(copy, message_id="another", receipt_handle="h4")
        assert app.runner.process(duplicate) == Ack("duplicate")
    assert Charge.runs == [2], "the killed run counts as attempt 1; the copy ran once, as attempt 2"

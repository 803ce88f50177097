"""Records the Lambda handler does not run -- not started for lack of time, postponed by the core, or
held back behind a FIFO record that did not finish -- come back without spending a try, and every one
is logged and counted."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from lambda_handlers.sqs import SqsHandler
from sqsjobs import App, Job
from sqsjobs.connections.base import ReceivedMessage
from sqsjobs.decisions import Decision, Postpone
from sqsjobs.provisioning import provision
from sqsjobs.testing.faults import FaultPlan
from tests.helpers import counts, dead_letters
from tests.lambda_events import FakeContext, deliver, failed_ids, receive_event


class Ran(Job, abstract=True):
    runs: ClassVar[list[tuple[str, str, int]]] = []
    step_name: str = ""

    def handle(self) -> None:
        Ran.runs.append((type(self).job_name, self.step_name, self.attempts))


class OneShot(Ran, name="lambda-handback.one-shot"):
    """One try only: a delivery that spends a try without running would send it to the DLQ unrun."""

    tries = 1
    timeout = 60


class Quick(Ran, name="lambda-handback.quick"):
    timeout = 5


class InOrder(Ran, name="lambda-handback.in-order"):
    queue = "steps.fifo"
    tries = 2
    backoff = 30
    broken: bool = False

    def handle(self) -> None:
        super().handle()
        if self.broken:
            raise RuntimeError(f"{self.step_name} failed")


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    Ran.runs.clear()
    yield
    Ran.runs.clear()


@pytest.fixture
def app(moto: None, prefix: str) -> Iterator[App]:
    """Jobs without their own timeout get 20 s, so a 30 s invocation is a valid configuration."""
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, timeout=20)
    provision(app, ["default"], table=False, bucket=False)
    with app.activate():
        yield app


def fifo_app(prefix: str, skip_group: bool = False, **settings: Any) -> App:
    """A FIFO queue and the table: a FIFO message given back keeps its place and its skip is counted there."""
    app = App(
        connection="sqs",
        queue_prefix=prefix,
        queues=["steps.fifo"],
        visibility_timeout=30,
        lambda_fifo_skip_group=skip_group,
        **settings,
    )
    provision(app, ["steps.fifo"], table=True, bucket=False)
    return app


def stages(event: dict[str, Any]) -> dict[str, str]:
    return {r["messageId"]: json.loads(r["body"])["payload"]["step_name"] for r in event["Records"]}


def test_a_record_not_started_for_lack_of_time_runs_later_without_spending_a_try(app: App) -> None:
    handler = SqsHandler(app)
    job = OneShot().dispatch()

    first = deliver(handler, app, "default", receive_event(app, "default"), FakeContext(remaining_s=30, started_s=300))
    assert Ran.runs == []
    # Given back at once (a copy carrying no runs): not after the queue's 30 s visibility timeout.
    again = receive_event(app, "default")
    assert [json.loads(r["body"])["id"] for r in again["Records"]] == [job.job_id]
    assert deliver(handler, app, "default", again, FakeContext(remaining_s=300)) == {"batchItemFailures": []}

    assert Ran.runs == [("lambda-handback.one-shot", "", 1)], "it ran once, as its first attempt"
    assert dead_letters(app) == []
    assert failed_ids(first) == []  # the copy is on the queue, so the mapping may delete the record
    assert not any(counts(app, "default").values())


def test_every_record_handed_back_is_logged_with_what_was_left_and_what_it_needed(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    OneShot().dispatch()
    Quick().dispatch()
    with caplog.at_level(logging.INFO, logger="sqsjobs.lambda"):
        deliver(
            SqsHandler(app), app, "default", receive_event(app, "default"), FakeContext(remaining_s=30, started_s=300)
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "sqsjobs.lambda" and "not started" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("lambda-handback.one-shot not started: 30.0s left in this invocation, it needs 62.0s")
    assert "handed back without spending a try" in lines[0]
    assert [name for name, *_ in Ran.runs] == ["lambda-handback.quick"]


def test_every_record_handed_back_is_counted_per_job_when_metrics_are_on(
    app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "sqsjobs-test")
    OneShot().dispatch()
    OneShot().dispatch()
    Quick().dispatch()
    deliver(SqsHandler(app), app, "default", receive_event(app, "default"), FakeContext(remaining_s=30, started_s=300))
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    handed = [d for d in documents if "handed_back" in d]
    assert [(d["job"], d["handed_back"], d["processed"]) for d in handed] == [("lambda-handback.one-shot", 2, 0)]
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "sqsjobs-test" for d in handed)


def postpone_once(app: App, job_name: str, delay: int = 0) -> list[str]:
    """The core decides Postpone (the job did not run: a rate limit, a lock) the first time it sees this job."""
    process = app.runner.process
    postponed: list[str] = []

    def deciding(message: ReceivedMessage, *args: Any, **kwargs: Any) -> Decision:
        if job_name in message.body and not postponed:
            postponed.append(message.message_id)
            return Postpone(delay, "rate limited")
        return process(message, *args, **kwargs)

    app.runner.process = deciding  # type: ignore[method-assign]
    return postponed


def test_a_postponed_record_on_a_standard_queue_comes_back_as_a_copy_and_runs_as_its_first_attempt(app: App) -> None:
    handler = SqsHandler(app)
    job = OneShot().dispatch()
    postponed = postpone_once(app, "lambda-handback.one-shot")
    first = deliver(handler, app, "default", receive_event(app, "default"))
    assert postponed and failed_ids(first) == []
    again = receive_event(app, "default")
    assert [json.loads(r["body"])["id"] for r in again["Records"]] == [job.job_id]
    assert again["Records"][0]["messageAttributes"]["sqsjobs.runs"]["stringValue"] == "0"
    deliver(handler, app, "default", again)
    assert Ran.runs == [("lambda-handback.one-shot", "", 1)]
    assert dead_letters(app) == []


@pytest.mark.parametrize("skip_group", [False, True])
def test_fifo_records_held_back_come_back_at_once_without_spending_a_try(
    moto: None, prefix: str, skip_group: bool
) -> None:
    app = fifo_app(prefix, skip_group)
    with app.activate():
        InOrder(step_name="a1", broken=True).dispatch(group="a")
        InOrder(step_name="b1").dispatch(group="b")
        InOrder(step_name="a2").dispatch(group="a")
    event = receive_event(app, "steps.fifo", "sqs_fifo.json")
    names = stages(event)
    assert list(names.values()) == ["a1", "b1", "a2"]
    response = deliver(SqsHandler(app), app, "steps.fifo", event)

    held = {"a2"} if skip_group else {"b1", "a2"}
    assert sorted(names[i] for i in failed_ids(response)) == sorted({"a1"} | held)
    assert [step for _, step, _ in Ran.runs] == (["a1", "b1"] if skip_group else ["a1"])
    # a1 was released for its 30 s backoff and its group waits behind it; what was held back from other
    # groups is visible at once (not after the 30 s visibility timeout) and runs as its first attempt.
    again = receive_event(app, "steps.fifo", "sqs_fifo.json")
    assert sorted(stages(again).values()) == sorted(held - {"a2"})
    if again["Records"]:
        deliver(SqsHandler(app), app, "steps.fifo", again)
    assert sorted(Ran.runs) == sorted([("lambda-handback.in-order", "a1", 1), ("lambda-handback.in-order", "b1", 1)])


def test_a_fifo_postpone_holds_back_the_rest_of_its_group(moto: None, prefix: str) -> None:
    app = fifo_app(prefix, skip_group=True)
    with app.activate():
        InOrder(step_name="a1").dispatch(group="a")
        InOrder(step_name="b1").dispatch(group="b")
        InOrder(step_name="a2").dispatch(group="a")
    postponed = postpone_once(app, '"a1"')
    event = receive_event(app, "steps.fifo", "sqs_fifo.json")
    names = stages(event)
    response = deliver(SqsHandler(app), app, "steps.fifo", event)
    assert postponed
    assert sorted(names[i] for i in failed_ids(response)) == ["a1", "a2"]
    assert [step for _, step, _ in Ran.runs] == ["b1"]
    # a1 kept its place (a copy would jump the group's order): it comes back first, as attempt 1.
    again = receive_event(app, "steps.fifo", "sqs_fifo.json")
    assert list(stages(again).values())[:1] == ["a1"]
    deliver(SqsHandler(app), app, "steps.fifo", again)
    assert ("lambda-handback.in-order", "a1", 1) in Ran.runs


def test_a_failed_visibility_call_leaves_those_records_failures_and_the_response_whole(
    moto: None, prefix: str, faults: FaultPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the injected 500 is final at once, not after retries
    app = fifo_app(prefix, skip_group=True)
    with app.activate():
        InOrder(step_name="a1", broken=True).dispatch(group="a")
        InOrder(step_name="b1").dispatch(group="b")
        InOrder(step_name="a2").dispatch(group="a")
    event = receive_event(app, "steps.fifo", "sqs_fifo.json")
    names = stages(event)
    faults.add(service="sqs", operation="ChangeMessageVisibilityBatch", kind="500")

    response = deliver(SqsHandler(app), app, "steps.fifo", event)

    assert faults.count(operation="ChangeMessageVisibilityBatch") >= 1
    assert sorted(names[i] for i in failed_ids(response)) == ["a1", "a2"]
    assert sorted(step for _, step, _ in Ran.runs) == ["a1", "b1"]


class SlowStep(InOrder, name="lambda-handback.slow-step"):
    timeout = 60


def test_a_fifo_record_not_started_holds_back_the_batch_and_all_of_it_runs_later_in_order_first_try(
    moto: None, prefix: str
) -> None:
    app = fifo_app(prefix, timeout=20)  # jobs without their own timeout fit a 30 s invocation; SlowStep does not
    handler = SqsHandler(app)
    with app.activate():
        SlowStep(step_name="a1").dispatch(group="a")
        InOrder(step_name="b1").dispatch(group="b")
        InOrder(step_name="a2").dispatch(group="a")
    event = receive_event(app, "steps.fifo", "sqs_fifo.json")
    response = deliver(handler, app, "steps.fifo", event, FakeContext(remaining_s=30, started_s=300))
    assert len(failed_ids(response)) == 3 and Ran.runs == []

    again = receive_event(app, "steps.fifo", "sqs_fifo.json")  # at once: nothing waits for a visibility timeout
    assert list(stages(again).values()) == ["a1", "b1", "a2"]
    assert deliver(handler, app, "steps.fifo", again, FakeContext(remaining_s=300)) == {"batchItemFailures": []}
    assert Ran.runs == [
        ("lambda-handback.slow-step", "a1", 1),
        ("lambda-handback.in-order", "b1", 1),
        ("lambda-handback.in-order", "a2", 1),
    ]


class NeverFits(Job, name="handback.never-fits"):
    timeout = 120
    runs: ClassVar[int] = 0

    def handle(self) -> None:
        NeverFits.runs += 1


def test_a_job_that_can_never_start_in_the_function_goes_to_the_dlq_with_its_reason(moto: None, prefix: str) -> None:
    """A job whose own timeout is longer than the whole function is not this invocation's bad luck:
    handed back for free it would come back for ever (each copy with a fresh receive count, so the
    redrive policy never catches it). It is given up at once, with the reason."""
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, timeout=20)
    provision(app, ["default"], table=False, bucket=False)
    handler = SqsHandler(app)
    NeverFits.runs = 0
    with app.activate():
        NeverFits().dispatch()
        event = receive_event(app, "default")
        response = deliver(handler, app, "default", event, FakeContext(remaining_s=60))
    assert response["batchItemFailures"] == []
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "never_fits"
    assert "SQSJOBS_LAMBDA_DEADLINE_MARGIN" in letter["attrs"]["sqsjobs.error"]
    assert NeverFits.runs == 0

"""A worker that dies right after a batch member's DLQ write: the member never runs again.

Death is a BaseException raised from a botocore `after-call` hook on the DLQ send: the copy is in
the DLQ, nothing after it ran, and the message comes back as a redelivery would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from sqsjobs import Ack, App, Fail, Job, PermanentError, Release, aws, batch
from sqsjobs.failed_jobs import FailedJobs
from sqsjobs.provisioning import provision


class Died(BaseException):
    """The worker process ends here (SIGKILL has no exception; this is the closest in-process)."""


class Member(Job, name="crash.member"):
    runs: ClassVar[list[int]] = []
    failures: ClassVar[list[int]] = []
    n: int

    def handle(self) -> None:
        Member.runs.append(self.n)
        raise PermanentError(f"member {self.n} is broken")

    def failed(self, exc: BaseException) -> None:
        Member.failures.append(self.n)


@pytest.fixture
def app(moto: None, prefix: str) -> Iterator[App]:
    Member.runs.clear()
    Member.failures.clear()
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], table=f"{prefix}table", visibility_timeout=30)
    provision(app, ["default"], bucket=False)
    with app.activate():
        yield app


def die_after_dlq_write() -> None:
    sqs = aws.client("sqs")

    def hook(params: dict[str, Any], **_: Any) -> None:
        if params.get("QueueUrl", "").endswith("-dlq"):
            sqs.meta.events.unregister("after-call.sqs.SendMessage", after)
            raise Died

    seen: dict[str, Any] = {}

    def remember(params: dict[str, Any], **_: Any) -> None:
        seen.update(params)

    def after(**_: Any) -> None:
        hook(seen)

    sqs.meta.events.register("provide-client-params.sqs.SendMessage", remember)
    sqs.meta.events.register("after-call.sqs.SendMessage", after)


def test_a_batch_member_whose_worker_died_after_its_dlq_write_is_settled_not_run_again(app: App) -> None:
    created = batch([Member(n=1), Member(n=2)]).allow_failures().dispatch()
    die_after_dlq_write()
    messages = app.connection.receive("default", 10, 0)
    assert len(messages) == 2
    first, second = messages
    with pytest.raises(Died):
        app.runner.process(first)
    assert isinstance(app.runner.process(second), Fail)
    app.connection.delete("default", [second])

    app.connection.change_visibility("default", [(first, 0)])  # the redelivery after the crash
    (again,) = app.connection.receive("default", 10, 0)
    assert again.receive_count == 2
    decision = app.runner.process(again)
    assert isinstance(decision, Fail)
    app.connection.delete("default", [again])

    assert sorted(Member.runs) == [1, 2], "the member whose worker died is not run again"
    assert sorted(Member.failures) == [1, 2], "failed() ran for it too, on the redelivery that wrote its copy"
    found = created.fresh()
    assert (found.processed, found.failed, found.pending, found.finished) == (0, 2, 0, True)
    # Two DLQ copies at most for the job whose worker died, shown as one failed job.
    jobs = FailedJobs(app).list()
    assert len(jobs) == 2
    assert sorted(job.reason for job in jobs) == ["permanent", "permanent"]


def test_failed_runs_once_when_the_bookkeeping_keeps_the_message_first(app: App, faults: Any) -> None:
    """The DLQ copy is written, then the batch cannot be updated: the message is kept, and its
    redelivery only settles the batch. `failed()` ran once, before the bookkeeping (it used to be
    skipped on both deliveries)."""
    created = batch([Member(n=7)]).dispatch()
    (message,) = app.connection.receive("default", 10, 0)
    faults.add(service="dynamodb", operation="TransactWriteItems", kind="500")
    held = app.runner.process(message)
    assert isinstance(held, Release) and "chain or batch" in held.reason
    assert Member.failures == [7]
    faults.clear()
    again = app.runner.process(dataclasses.replace(message, receive_count=2, receipt_handle="again"))
    assert isinstance(again, Fail) and again.error_type == "AlreadyFailed"
    assert Member.runs == [7] and Member.failures == [7], "not run again, failed() not called again"
    assert created.fresh().failed == 1


class Link(Job, name="crash.link"):
    runs: ClassVar[list[int]] = []
    n: int

    def handle(self) -> None:
        Link.runs.append(self.n)


def copy_of(app: App, body: str) -> None:
    """A second message with the same body, as a send retried after its answer was lost leaves."""
    from tests.helpers import queue_url

    aws.client("sqs").send_message(QueueUrl=queue_url(app, "default"), MessageBody=body)


def test_a_copy_of_a_chain_link_arriving_later_as_a_first_delivery_only_settles(app: App) -> None:
    from sqsjobs import Ack, chain

    Link.runs.clear()
    chain([Link(n=1), Link(n=2)]).dispatch()
    (first,) = app.connection.receive("default", 10, 0)
    copy_of(app, first.body)
    assert app.runner.process(first) == Ack()
    app.connection.delete("default", [first])
    received = app.connection.receive("default", 10, 0)
    copy = next(m for m in received if m.body == first.body)
    assert copy.receive_count == 1
    assert app.runner.process(copy) == Ack("duplicate")
    assert Link.runs == [1]


def test_a_copy_arriving_while_the_first_runs_waits_instead_of_running_too(app: App) -> None:
    from sqsjobs import Postpone, chain
    from sqsjobs.runner import Run

    Link.runs.clear()
    chain([Link(n=1), Link(n=2)]).dispatch()
    (first,) = app.connection.receive("default", 10, 0)
    copy_of(app, first.body)
    (copy,) = app.connection.receive("default", 10, 0)
    running = app.runner.begin(first)
    assert isinstance(running, Run)
    held = app.runner.begin(copy)
    assert isinstance(held, Postpone) and "another copy" in held.reason
    assert Link.runs == []


def test_a_copy_held_back_while_the_first_runs_spends_no_tries_and_never_fails(app: App) -> None:
    """Four deliveries of a copy while the first copy runs: each waits, none is given up."""
    import dataclasses

    from sqsjobs import Postpone, chain
    from sqsjobs.runner import Run

    Link.runs.clear()
    chain([Link(n=1), Link(n=2)]).dispatch()
    (first,) = app.connection.receive("default", 10, 0)
    running = app.runner.begin(first)
    assert isinstance(running, Run)
    for count in (1, 2, 3, 4):
        copy = dataclasses.replace(first, message_id="copy", receive_count=count)
        held = app.runner.begin(copy)
        assert isinstance(held, Postpone), held
        assert held.delay >= 60, "it waits out the other copy's claim, not a fixed short time"
    assert FailedJobs(app).list() == []


def test_the_same_message_back_after_its_worker_died_renews_its_claim(memory_app: App) -> None:
    import dataclasses

    from sqsjobs import Postpone, chain
    from sqsjobs.runner import Run

    now = [1_000.0]
    memory_app.store._clock = lambda: now[0]  # type: ignore[attr-defined]
    memory_app.clock = lambda: now[0]  # type: ignore[method-assign]
    chain([Link(n=1), Link(n=2)]).dispatch()
    (first,) = memory_app.connection.receive("default", 10, 0)
    assert isinstance(memory_app.runner.begin(first), Run)  # its worker is killed mid-run
    now[0] += 30
    # Back before the run's timeout (60 s) and the clock skew (60 s) have passed: that run may be alive.
    assert isinstance(memory_app.runner.begin(dataclasses.replace(first, receive_count=2)), Postpone)
    now[0] += 100
    assert isinstance(memory_app.runner.begin(dataclasses.replace(first, receive_count=3)), Run)
    now[0] += 25  # past the first claim's expiry, while the second run goes on
    copy = dataclasses.replace(first, message_id="copy", receive_count=1)
    assert isinstance(memory_app.runner.begin(copy), Postpone)


class Broken(Job, name="crash.broken-callback"):
    runs: ClassVar[int] = 0
    broken: ClassVar[bool] = True

    def handle(self) -> None:
        Broken.runs += 1
        if Broken.broken:
            raise PermanentError("callback broken")


def process_all(app: App) -> list[Any]:
    decisions = []
    while messages := app.connection.receive("default", 10, 0):
        for message in messages:
            decisions.append(app.runner.process(message))
            app.connection.delete("default", [message])
    return decisions


def test_a_failed_batch_callback_retried_from_the_dlq_runs_again(app: App) -> None:
    Broken.runs, Broken.broken = 0, True
    batch([Link(n=1)]).then(Broken()).dispatch()
    process_all(app)
    (failed,) = FailedJobs(app).list()
    assert failed.job == "crash.broken-callback"
    Broken.broken = False
    FailedJobs(app).retry([failed.id])
    process_all(app)
    assert Broken.runs == 2 and FailedJobs(app).list() == []


def test_a_next_link_that_names_no_registered_job_is_in_the_dlq_with_a_reason_at_once(app: App) -> None:
    import json as json_

    from tests.helpers import queue_url

    body = {
        "v": 1,
        "id": "a0000000-0000-0000-0000-000000000001",
        "job": "crash.link",
        "payload": {"n": 1},
        "queue": "default",
        "dispatched_at": "2026-01-01T00:00:00Z",
        "chain": {
            "id": "00000000-0000-0000-0000-000000000001",
            "pos": 0,
            "next": [{"job": "crash.renamed-away", "payload": {}}],
        },
    }
    aws.client("sqs").send_message(QueueUrl=queue_url(app, "default"), MessageBody=json_.dumps(body))
    Link.runs.clear()
    (decision,) = process_all(app)
    assert decision == Ack() and Link.runs == [1], "the job itself succeeded"
    (failed,) = FailedJobs(app).list()
    assert failed.reason == "invalid_link" and "crash.renamed-away" in failed.error


def test_two_live_receipts_of_one_message_never_both_run_a_chain_link(memory_app: App) -> None:
    """The soak caught it: a batch member's message became visible while its first receiver still held
    it, a second worker received it again, and both ran it — their claims had the same owner (the message
    id). The receive count tells the two receipts apart, in either order."""
    import dataclasses

    from sqsjobs import Postpone, chain
    from sqsjobs.runner import Run

    chain([Link(n=1), Link(n=2)]).dispatch()
    (first,) = memory_app.connection.receive("default", 10, 0)
    again = dataclasses.replace(first, receipt_handle="second-receipt", receive_count=first.receive_count + 1)
    assert isinstance(memory_app.runner.begin(first), Run)
    assert isinstance(memory_app.runner.begin(again), Postpone), "the newer receipt waits for the live run"

    chain([Link(n=3), Link(n=4)]).dispatch()
    (other,) = memory_app.connection.receive("default", 10, 0)
    newer = dataclasses.replace(other, receipt_handle="newer-receipt", receive_count=other.receive_count + 1)
    assert isinstance(memory_app.runner.begin(newer), Run)
    assert isinstance(memory_app.runner.begin(other), Postpone), "the older receipt waits too"

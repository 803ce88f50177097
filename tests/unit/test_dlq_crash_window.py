"""A worker that dies right after a batch member's DLQ write: the member never runs again.

Death is a BaseException raised from a botocore `after-call` hook on the DLQ send: the copy is in
the DLQ, nothing after it ran, and the message comes back as a redelivery would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from sqsjobs import App, Fail, Job, PermanentError, aws, batch
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
    found = created.fresh()
    assert (found.processed, found.failed, found.pending, found.finished) == (0, 2, 0, True)
    # Two DLQ copies at most for the job whose worker died, shown as one failed job.
    jobs = FailedJobs(app).list()
    assert len(jobs) == 2
    assert sorted(job.reason for job in jobs) == ["permanent", "permanent"]


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
    from sqsjobs import Release, chain
    from sqsjobs.runner import Run

    Link.runs.clear()
    chain([Link(n=1), Link(n=2)]).dispatch()
    (first,) = app.connection.receive("default", 10, 0)
    copy_of(app, first.body)
    (copy,) = app.connection.receive("default", 10, 0)
    running = app.runner.begin(first)
    assert isinstance(running, Run)
    held = app.runner.begin(copy)
    assert isinstance(held, Release) and "another copy" in held.reason
    assert Link.runs == []

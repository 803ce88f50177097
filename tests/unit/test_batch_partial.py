"""A batch whose members were only partly sent still finishes once the sent ones have run.

The members that reached SQS may all finish before the dispatcher learns that the others did not:
the total is then lowered, and that is the moment to see that the batch is done (it used to wait
forever, its `then` and `finally` never sent).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from sqsjobs import Ack, App, DispatchError, Job, aws, batch
from sqsjobs.provisioning import provision


class Sent(Job, name="partial.sent"):
    runs: ClassVar[int] = 0

    def handle(self) -> None:
        Sent.runs += 1


class Lost(Job, name="partial.lost"):
    queue = "other"  # its own SendMessageBatch call, which fails

    def handle(self) -> None:
        raise AssertionError("never sent, never run")


class Done(Job, name="partial.done"):
    def handle(self) -> None:
        pass


@pytest.fixture
def app(moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # a 500 is final at once: no retry waits in this test
    aws.reset_clients()
    Sent.runs = 0
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], table=f"{prefix}table", visibility_timeout=30)
    provision(app, ["default", "other"], bucket=False)
    with app.activate():
        yield app


def run_sent_member_before_the_second_send(app: App, faults: Any) -> None:
    """A fast worker: the member sent in the first SendMessageBatch runs before the second one is
    made, and the second one fails for good (every retry answered with a 500)."""
    sqs = aws.client("sqs")
    calls: list[int] = []

    def between(**_: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            (message,) = app.connection.receive("default", 10, 0)
            assert app.runner.process(message) == Ack()
            app.connection.delete("default", [message])
            # The next call only: the `then` sent later goes through.
            faults.add(service="sqs", operation="SendMessageBatch", kind="500", times=1)

    sqs.meta.events.register("after-call.sqs.SendMessageBatch", between)


def test_a_partly_sent_batch_finishes_when_its_sent_members_are_done(app: App, faults: Any) -> None:
    run_sent_member_before_the_second_send(app, faults)
    with pytest.raises(DispatchError) as raised:
        batch([Sent(), Lost()]).then(Done()).dispatch()
    assert [job for _, job, _ in raised.value.not_queued] == ["partial.lost"]
    assert Sent.runs == 1
    found = _batches(app)
    assert len(found) == 1
    record = found[0]
    assert (record.total, record.processed, record.pending, record.finished) == (1, 1, 0, True)
    messages = app.connection.receive("default", 10, 0)
    assert [m.body for m in messages if '"partial.done"' in m.body], "its `then` was sent"


def _batches(app: App) -> list[Any]:
    from sqsjobs.batches import list_batches

    return list_batches(app)

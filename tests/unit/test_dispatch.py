from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sqsjobs import App, DispatchError, Job, aws, dispatch_many
from sqsjobs.provisioning import provision
from sqsjobs.timing import parse_iso
from tests.helpers import counts, drain, queue_url, sqs_requests


class Notify(Job, name="dispatch.notify"):
    user: int

    def handle(self) -> None:
        pass


class Urgent(Job, name="dispatch.urgent"):
    queue = "high"

    def handle(self) -> None:
        pass


class Ordered(Job, name="dispatch.ordered"):
    queue = "orders.fifo"
    number: int

    def handle(self) -> None:
        pass


def bodies(app: App, queue: str) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in drain(queue_url(app, queue))]


def test_a_job_goes_to_its_own_queue_unless_the_dispatch_names_another(sqs_app: App) -> None:
    Urgent().dispatch()
    result = Notify(user=1).dispatch(queue="high")
    Notify(user=2).dispatch()
    high = bodies(sqs_app, "high")
    assert sorted(b["job"] for b in high) == ["dispatch.notify", "dispatch.urgent"]
    assert [b["payload"] for b in bodies(sqs_app, "default")] == [{"user": 2}]
    assert result.queued and result.queue == "high" and result.job_id in {b["id"] for b in high}


def test_dispatch_if_and_unless_only_queue_when_they_should(sqs_app: App) -> None:
    assert Notify(user=1).dispatch_if(False) is None
    assert Notify(user=2).dispatch_unless(True) is None
    assert Notify(user=3).dispatch_if(True) is not None
    assert Notify(user=4).dispatch_unless(False) is not None
    assert sorted(b["payload"]["user"] for b in bodies(sqs_app, "default")) == [3, 4]


def test_a_short_delay_uses_delay_seconds(sqs_app: App) -> None:
    Notify(user=1).dispatch(delay=timedelta(seconds=60))
    assert counts(sqs_app, "default")["ApproximateNumberOfMessagesDelayed"] == 1
    assert drain(queue_url(sqs_app, "default")) == []


def test_a_delay_over_15_minutes_travels_as_available_at_and_is_never_truncated(sqs_app: App) -> None:
    sent = sqs_requests("SendMessage")
    before = time.time()
    Notify(user=1).dispatch(delay=datetime.now(UTC) + timedelta(minutes=20))
    (params,) = sent
    assert params["DelaySeconds"] == 900
    assert parse_iso(json.loads(params["MessageBody"])["available_at"]) - before == pytest.approx(1200, abs=2)
    assert counts(sqs_app, "default")["ApproximateNumberOfMessagesDelayed"] == 1


def test_bulk_dispatch_sends_batches_of_ten(sqs_app: App) -> None:
    calls: list[int] = []
    sqs = aws.client("sqs")

    def count(params: dict[str, Any], **_: Any) -> None:
        calls.append(len(params["Entries"]))

    sqs.meta.events.register("provide-client-params.sqs.SendMessageBatch", count)
    try:
        results = Notify.dispatch_many([Notify(user=i) for i in range(25)])
    finally:
        sqs.meta.events.unregister("provide-client-params.sqs.SendMessageBatch", count)
    assert calls == [10, 10, 5]
    assert len(results) == 25
    assert sorted(b["payload"]["user"] for b in bodies(sqs_app, "default")) == list(range(25))


def test_bulk_dispatch_names_each_job_sqs_rejected_and_queues_the_rest(sqs_app: App) -> None:
    """SQS really rejects one entry (moto checks DelaySeconds per entry); we corrupt it on the wire."""
    sqs = aws.client("sqs")

    def corrupt(params: dict[str, Any], **_: Any) -> None:
        for entry in params["Entries"]:
            if json.loads(entry["MessageBody"])["payload"]["user"] == 13:
                entry["DelaySeconds"] = 901

    sqs.meta.events.register("provide-client-params.sqs.SendMessageBatch", corrupt)
    jobs = [Notify(user=i) for i in range(25)]
    try:
        with pytest.raises(DispatchError) as caught:
            dispatch_many(jobs)
    finally:
        sqs.meta.events.unregister("provide-client-params.sqs.SendMessageBatch", corrupt)
    (job_id, name, reason) = caught.value.not_queued[0]
    assert len(caught.value.not_queued) == 1
    assert name == "dispatch.notify" and "DelaySeconds" in reason and job_id in str(caught.value)
    assert sorted(b["payload"]["user"] for b in bodies(sqs_app, "default")) == [i for i in range(25) if i != 13]


def test_bulk_dispatch_keeps_each_request_under_one_mebibyte(sqs_app: App) -> None:
    class Big(Job, name="dispatch.big"):
        blob: str

        def handle(self) -> None:
            pass

    sizes: list[int] = []

    def measure(params: dict[str, Any], **_: Any) -> None:
        sizes.append(sum(len(e["MessageBody"].encode()) for e in params["Entries"]))

    aws.client("sqs").meta.events.register("provide-client-params.sqs.SendMessageBatch", measure)
    dispatch_many([Big(blob="x" * 300_000) for _ in range(5)])
    assert len(sizes) == 2 and max(sizes) <= 1_048_576


def test_a_large_message_without_a_bucket_is_refused_with_what_to_do(sqs_app: App) -> None:
    class Huge(Job, name="dispatch.huge"):
        blob: str

        def handle(self) -> None:
            pass

    with pytest.raises(DispatchError, match=r"could not be stored in the bucket .*sqsjobs provision") as raised:
        Huge(blob="x" * 1_100_000).dispatch()
    assert raised.value.not_queued[0][1] == "dispatch.huge"
    assert counts(sqs_app, "default")["ApproximateNumberOfMessages"] == 0


def test_fifo_queues_get_a_group_and_deduplication_id_and_refuse_delays(moto: None, prefix: str) -> None:
    app = App(connection="sqs", queue_prefix=prefix)
    provision(app, ["orders.fifo"])
    with app.activate():
        Ordered(number=1).dispatch(group="order-7")
        Ordered(number=2).dispatch()
        with pytest.raises(DispatchError, match="FIFO"):
            Ordered(number=3).dispatch(delay=5)
    messages = drain(queue_url(app, "orders.fifo"))
    groups = sorted(m["Attributes"]["MessageGroupId"] for m in messages)
    assert groups == ["dispatch.ordered", "order-7"]


def test_sync_runs_the_job_now_through_the_core(moto: None) -> None:
    ran: list[int] = []

    class Inline(Job, name="dispatch.inline"):
        n: int
        backoff = 0

        def handle(self) -> None:
            ran.append(self.attempts)
            if self.attempts < 2:
                raise RuntimeError("first try fails")

    app = App(connection="sync")
    with app.activate():
        Inline(n=1).dispatch(delay=600)
    assert ran == [1, 2]

    class Always(Job, name="dispatch.always"):
        tries = 2
        backoff = 0

        def handle(self) -> None:
            raise ValueError("nope")

    with App(connection="memory").activate(), pytest.raises(ValueError, match="nope"):
        Always().dispatch_sync()


def test_the_null_connection_drops_everything(moto: None) -> None:
    with App(connection="null").activate():
        assert Notify(user=1).dispatch().job_id


def test_the_sync_connection_moves_aside_a_job_that_never_settles_as_a_redrive_would() -> None:
    runs: list[int] = []

    class Forever(Job, name="dispatch.forever"):
        tries = 100

        def handle(self) -> None:
            runs.append(self.attempts)
            self.release(0)

    app = App(connection="sync", max_receive_count=5)
    with app.activate():
        Forever().dispatch()
    assert runs == [1, 2, 3, 4, 5]
    (moved,) = app.connection.dead_letters("default")  # type: ignore[attr-defined]
    assert json.loads(moved.body)["job"] == "dispatch.forever"

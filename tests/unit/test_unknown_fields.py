"""A producer deployed before the workers sends fields the worker's job class does not know: the job still
runs as before (they are ignored), and the worker says which fields it ignored — once per job and set of
fields, not once per message."""

from __future__ import annotations

import logging
import tracemalloc
import uuid
from typing import Any, ClassVar

import pytest
from pydantic import AliasChoices, ConfigDict, Field, computed_field

from sqsjobs import App, Job, OutgoingMessage, payload_fields
from sqsjobs.envelope import Envelope
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import FakeClock


class Wrap(Job, name="unknown-fields.wrap"):
    ran: ClassVar[list[int]] = []
    order_id: int = Field(validation_alias=AliasChoices("order_id", "order"))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str:
        return f"order {self.order_id}"

    def handle(self) -> None:
        Wrap.ran.append(self.order_id)


class Open(Job, name="unknown-fields.open"):
    model_config = ConfigDict(extra="allow")
    seen: ClassVar[list[dict[str, Any]]] = []
    order_id: int

    def handle(self) -> None:
        Open.seen.append(dict(self.model_extra or {}))


@pytest.fixture(autouse=True)
def _reset() -> None:
    payload_fields._warned.clear()  # said once per process: each test starts from a fresh worker's memory
    payload_fields._last_warned.clear()
    Wrap.ran.clear()
    Open.seen.clear()


def send(app: App, job: str, payload: dict[str, Any]) -> None:
    envelope = Envelope(str(uuid.uuid4()), job, payload, "default", "2026-01-01T00:00:00.000Z")
    app.connection.send("default", OutgoingMessage(body=envelope.encode()))


def work(app: App) -> None:
    Worker(app, WorkerOptions(queues=["default"], sleep=1, stop_when_empty=True)).run(install_signals=False)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "does not declare" in r.getMessage()
    ]


def test_unknown_fields_are_ignored_as_before_and_named_once(memory_app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sqsjobs")
    for n in range(3):
        send(memory_app, "unknown-fields.wrap", {"order_id": n, "coupon": "X1", "gift_wrap": True})
    send(memory_app, "unknown-fields.wrap", {"order_id": 7, "coupon": "X2"})
    work(memory_app)

    assert sorted(Wrap.ran) == [0, 1, 2, 7], "every job ran, with the fields it knows"
    said = warnings(caplog)
    assert len(said) == 1, said  # not once per message, and another set within the minute waits its turn
    assert "unknown-fields.wrap" in said[0] and "coupon, gift_wrap" in said[0]
    assert "Deploy workers first" in said[0]
    assert memory_app.connection.dead_letters("default") == []


def test_fields_the_class_reads_or_writes_are_not_news(memory_app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sqsjobs")
    Wrap(order_id=1).dispatch()  # its payload carries the computed `label` too
    send(memory_app, "unknown-fields.wrap", {"order": 2})  # the old name, still accepted
    work(memory_app)
    assert sorted(Wrap.ran) == [1, 2]
    assert warnings(caplog) == []


def test_a_class_that_keeps_extra_fields_gets_them_and_no_warning(
    memory_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sqsjobs")
    send(memory_app, "unknown-fields.open", {"order_id": 1, "coupon": "X1"})
    work(memory_app)
    assert Open.seen == [{"coupon": "X1"}]
    assert warnings(caplog) == []


def test_a_field_name_that_is_not_an_identifier_is_counted_not_printed(
    memory_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sqsjobs")
    send(memory_app, "unknown-fields.wrap", {"order_id": 1, "ok_name": 1, "evil\n12:00 INFO forged\x1b[2J": 2})
    work(memory_app)
    (said,) = warnings(caplog)
    assert "ok_name and 1 other key(s)" in said
    assert "forged" not in said and "\n" not in said and "\x1b" not in said


class Aliased(Job, name="unknown-fields.aliased"):
    """A field with a plain pydantic alias: envelopes we write carry the field's name, another
    producer may send the alias; both must run."""

    ran: ClassVar[list[int]] = []
    user_id: int = Field(alias="userId")

    def handle(self) -> None:
        Aliased.ran.append(self.user_id)


def test_a_field_with_an_alias_runs_from_our_envelopes_and_from_the_alias() -> None:
    Aliased.ran.clear()
    with App(connection="sync").activate():
        Aliased(userId=7).dispatch()
        Aliased.model_validate({"user_id": 8}).dispatch()
    assert Aliased.ran == [7, 8]


def test_each_set_is_said_once_and_a_job_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sqsjobs")
    clock = FakeClock()

    def seen(payload: dict[str, Any], after: float) -> int:
        clock.now += after
        before = len(warnings(caplog))
        payload_fields.warn_unknown(Wrap, Wrap.job_name, payload, clock)
        return len(warnings(caplog)) - before

    assert seen({"order_id": 1, "coupon": "X1"}, 0) == 1
    assert seen({"order_id": 1, "gift_wrap": True}, 1) == 0, "a new set within the minute is held back"
    assert [seen({f"k{n}": 0}, 1) for n in range(50)] == [0] * 50, "random key sets cannot flood the log"
    assert seen({"order_id": 1, "gift_wrap": True}, 60) == 1, "and said when it comes again later"
    assert seen({"coupon": "X1", "order_id": 2}, 120) == 0, "a set already said is not said again"
    assert "coupon" in warnings(caplog)[0] and "gift_wrap" in warnings(caplog)[1]


def test_payloads_full_of_unknown_keys_do_not_grow_the_workers_memory() -> None:
    logging.getLogger("sqsjobs.runner").disabled = True  # the warning itself is not what is measured
    try:
        tracemalloc.start()
        for m in range(10):
            payload = {f"k{m}_{i}": 0 for i in range(20_000)}  # ~ 0.3 MB of keys; SQS takes 1 MB
            payload_fields.warn_unknown(Wrap, f"unknown-fields.job-{m}", payload)
            del payload
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        logging.getLogger("sqsjobs.runner").disabled = False
    assert retained < 200_000, f"{retained} bytes kept after 10 messages"

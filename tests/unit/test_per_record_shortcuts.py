"""What each record or job is spared, and that what it is spared never changes a decision.

- The Lambda adapter runs a record without decoding it for its timeout first when the invocation has
  time for the longest job registered; a class registered later is held to its own timeout again.
- The runner asks the hooks once whether any acts on a delivery; when none does (most jobs), no hook
  point is called. A hook that acts, or whose answer raises, is called at every point as before.
- The handler keeps one Powertools processor per kind: what one invocation failed or held back is
  not carried into the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest

from lambda_handlers.sqs import SqsHandler
from sqsjobs import Ack, App, Job, ReceivedMessage
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.decisions import Decision
from sqsjobs.provisioning import provision
from sqsjobs.registry import Registry
from sqsjobs.runner import Delivery, Hook, Runner
from tests.helpers import FakeClock, counts
from tests.lambda_events import FakeContext, deliver, failed_ids, receive_event


class Short(Job, abstract=True):
    runs: ClassVar[list[str]] = []
    timeout = 5
    broken: bool = False

    def handle(self) -> None:
        Short.runs.append(type(self).job_name)
        if self.broken:
            raise RuntimeError("broken on purpose")


class Quick(Short, name="shortcut.quick"):
    pass


class Slow(Short, name="shortcut.slow"):
    timeout = 200


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    Short.runs.clear()
    yield
    Short.runs.clear()


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    registry.add(Quick, "shortcut.quick")
    return registry


@pytest.fixture
def app(moto: None, prefix: str, registry: Registry) -> Iterator[App]:
    app = App(
        connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, timeout=20, registry=registry
    )
    provision(app, ["default"], table=False, bucket=False)
    with app.activate():
        yield app


def test_a_class_registered_after_the_first_event_is_held_to_its_own_timeout(app: App, registry: Registry) -> None:
    handler = SqsHandler(app)
    Quick().dispatch()
    assert deliver(handler, app, "default", receive_event(app, "default"), FakeContext(remaining_s=300)) == {
        "batchItemFailures": []
    }
    assert Short.runs == ["shortcut.quick"]
    assert handler.longest_timeout() == 5

    registry.add(Slow, "shortcut.slow")  # e.g. a module imported by a job: 200 s no longer fits 150 s
    Slow().dispatch()
    Quick().dispatch()
    event = receive_event(app, "default")
    response = deliver(handler, app, "default", event, FakeContext(remaining_s=150))
    assert handler.longest_timeout() == 200
    assert Short.runs == ["shortcut.quick", "shortcut.quick"], "the slow job was not started"
    assert failed_ids(response) == []  # handed back as a copy: the mapping may delete the record
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 1


def test_the_processor_kept_between_invocations_carries_nothing_over(app: App, registry: Registry) -> None:
    handler = SqsHandler(app)
    Quick(broken=True).dispatch()
    first = deliver(handler, app, "default", receive_event(app, "default"), FakeContext())
    assert len(failed_ids(first)) == 1
    registry.add(Slow, "shortcut.slow")
    Slow().dispatch()
    # This invocation's hand-back is settled by this invocation's Batch: its copy is sent, the record succeeds.
    second = deliver(handler, app, "default", receive_event(app, "default", max_messages=1), FakeContext(150))
    assert second == {"batchItemFailures": []}
    assert Short.runs == ["shortcut.quick"]
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 1


def test_with_time_for_any_job_no_record_is_decoded_for_its_timeout(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(message: ReceivedMessage) -> float:
        raise AssertionError("decoded for its timeout")

    monkeypatch.setattr(app.runner, "timeout_for", refuse)
    Quick().dispatch()
    assert deliver(SqsHandler(app), app, "default", receive_event(app, "default"), FakeContext()) == {
        "batchItemFailures": []
    }
    assert Short.runs == ["shortcut.quick"]


class Registers(Short, name="shortcut.registers"):
    """Its run registers a class with a longer timeout, as importing a module of jobs would."""

    target: ClassVar[Registry | None] = None

    def handle(self) -> None:
        super().handle()
        assert Registers.target is not None
        Registers.target.add(Slow, "shortcut.slow")


def test_a_class_registered_by_an_earlier_record_counts_for_the_next(app: App, registry: Registry) -> None:
    registry.add(Registers, "shortcut.registers")
    Registers.target = registry
    Registers().dispatch()
    Slow().dispatch()  # sent by name: this worker does not know it until the first record's job ran
    event = receive_event(app, "default")
    assert [r["body"].count("shortcut.registers") for r in event["Records"]] == [1, 0]
    deliver(SqsHandler(app), app, "default", event, FakeContext(remaining_s=150))
    assert Short.runs == ["shortcut.registers"], "the slow job was handed back, not started"


class Misconfigured(Short, abstract=True):  # never in the default registry: other tests would meet it
    timeout = "soon"  # type: ignore[assignment]


def test_one_class_with_an_unreadable_timeout_does_not_stop_the_others(app: App, registry: Registry) -> None:
    handler = SqsHandler(app)
    Quick().dispatch()
    deliver(handler, app, "default", receive_event(app, "default"), FakeContext())
    registry.add(Misconfigured, "shortcut.misconfigured")  # after the first event's check of every class
    Quick().dispatch()
    assert deliver(handler, app, "default", receive_event(app, "default"), FakeContext()) == {"batchItemFailures": []}
    assert Short.runs == ["shortcut.quick", "shortcut.quick"]


# -- the runner's hooks ------------------------------------------------------------------------------


class Recording(Hook):
    """Notes every point it is called at; `acts` is what its `quiet` answers (an exception: raised)."""

    def __init__(self, name: str, acts: bool | Exception, calls: list[str]) -> None:
        self.name, self.acts, self.calls = name, acts, calls

    def quiet(self, delivery: Delivery) -> bool:
        if isinstance(self.acts, Exception):
            raise self.acts
        return not self.acts

    def on_received(self, delivery: Delivery) -> Decision | None:
        self.calls.append(f"{self.name}.on_received")
        return None

    def before_run(self, delivery: Delivery) -> Decision | None:
        self.calls.append(f"{self.name}.before_run")
        return None

    def on_start(self, delivery: Delivery) -> Decision | None:
        self.calls.append(f"{self.name}.on_start")
        return None

    def on_decided(self, delivery: Delivery, decision: Decision, error: BaseException | None) -> Decision | None:
        self.calls.append(f"{self.name}.on_decided")
        return None


def _process(registry: Registry, hooks: list[Hook]) -> Decision:
    clock = FakeClock()
    app = App(connection=MemoryConnection(visibility_timeout=30, clock=clock), clock=clock, registry=registry)
    with app.activate():
        Quick().dispatch()
    (message,) = app.connection.receive("default", 1, 0)
    assert isinstance(message, ReceivedMessage)
    return Runner(app, hooks).process(message)


def test_no_hook_point_is_called_for_a_delivery_no_hook_acts_on(registry: Registry) -> None:
    calls: list[str] = []
    assert _process(registry, [Recording("a", False, calls), Recording("b", False, calls)]) == Ack()
    assert Short.runs == ["shortcut.quick"]
    assert calls == []


@pytest.mark.parametrize("acts", [True, RuntimeError("cannot tell")], ids=["acts", "quiet raises"])
def test_every_hook_is_called_at_every_point_once_one_acts_or_cannot_tell(
    registry: Registry, acts: bool | Exception
) -> None:
    calls: list[str] = []
    assert _process(registry, [Recording("a", False, calls), Recording("b", acts, calls)]) == Ack()
    assert Short.runs == ["shortcut.quick"]
    points = ["on_received", "before_run", "on_start", "on_decided"]
    assert calls == [f"{hook}.{point}" for point in points for hook in ("a", "b")]

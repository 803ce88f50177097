"""What each record or job is spared, and that what it is spared never changes a decision.

- The Lambda adapter runs a record without decoding it for its timeout first when the invocation has
  time for the longest job registered; a class registered later is held to its own timeout again.
- The runner asks the hooks once whether any acts on a delivery; when none does (most jobs), no hook
  point is called. A hook that acts, or whose answer raises, is called at every point as before.
  Hooks that the job's class, or a plain envelope, leave quiet are not even asked (`quiet_for`,
  `features_only`), and that shortcut answers as asking every hook would.
- The handler keeps one Powertools processor per kind: what one invocation failed or held back is
  not carried into the next.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from lambda_handlers.sqs import SqsHandler
from sqsjobs import Ack, App, Job, ReceivedMessage
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.cron import every_minute
from sqsjobs.decisions import Decision
from sqsjobs.envelope import Envelope
from sqsjobs.provisioning import provision
from sqsjobs.registry import Registry
from sqsjobs.runner import Delivery, Hook, Runner
from sqsjobs.runner.hook import Asking, acting, any_acts
from sqsjobs.schedules import Schedules, run_id, schedule
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


class Keyed(Short, name="shortcut.keyed"):
    def idempotency_key(self) -> str | None:
        return "k"


def _envelopes() -> dict[str, Envelope]:
    """One envelope of each shape a hook may act on, and a plain one."""
    base: dict[str, Any] = {"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "payload": {}, "queue": "default"}
    base["dispatched_at"] = "2026-01-01T00:00:00.000Z"
    chain = {"id": base["id"], "pos": 0, "next": [], "catch": None}
    return {
        "plain": Envelope(job="", **base),
        "unique": Envelope(job="", unique_key="u", **base),
        "chain": Envelope(job="", chain=chain, **base),
        "batch": Envelope(job="", batch_id="b1", **base),
        "callback": Envelope(job="", extra={"for_batch": "b1"}, **base),
        "schedule": Envelope(
            job="",
            extra={"schedule": {"name": "shortcut-every-minute", "tick": 60_000}},
            **{**base, "id": run_id("shortcut-every-minute", 60_000)},
        ),
        "other extra": Envelope(job="", extra={"retried": True}, **base),
    }


def test_the_built_in_hooks_are_spared_only_where_asking_them_would_find_them_quiet() -> None:
    clock = FakeClock()
    # Its own registry: the process-wide one is every other test's too, and an every-minute schedule
    # left there is due in whichever scheduler test this worker runs next.
    schedules = Schedules()
    connection = MemoryConnection(visibility_timeout=30, clock=clock)
    app = App(connection=connection, clock=clock, store="memory", schedules=schedules)
    schedule(Quick(), every_minute(), name="shortcut-every-minute", registry=schedules)
    hooks = app.runner.hooks
    asking = Asking(hooks)
    message = ReceivedMessage("default", "m", "r", "{}", 1, 0.0)
    acted: dict[tuple[str, str, bool], bool] = {}
    # The job log switched in place between rounds: an answer kept from the first must not outlive it.
    for job_log, cls, (shape, envelope) in itertools.product(
        [False, True, False], [Quick, Keyed], _envelopes().items()
    ):
        app.settings.job_log = job_log
        envelope.job = cls.job_name
        for _ in range(2):  # the second answer is the kept one
            d = Delivery(message, app.connection, envelope=envelope, job_cls=cls)
            expected = any_acts(acting(hooks), d)
            assert asking.acts(d) is expected, (job_log, cls.job_name, shape)
            acted[(cls.job_name, shape, job_log)] = expected
    assert [key for key, acts in acted.items() if not acts and not key[2]] == [
        ("shortcut.quick", "plain", False),
        ("shortcut.quick", "other extra", False),
    ]
    assert all(acts for key, acts in acted.items() if key[2])


class Counting(Hook):
    """Acts whenever asked; counts how often `quiet_for` and `quiet` were asked."""

    def __init__(self, features_only: bool = False, for_class: bool | Exception = False) -> None:
        self.features_only, self.for_class = features_only, for_class
        self.asked: list[str] = []

    def quiet_for(self, cls: type[Job] | None) -> bool:
        self.asked.append("quiet_for")
        if isinstance(self.for_class, Exception):
            raise self.for_class
        return self.for_class

    def quiet(self, delivery: Delivery) -> bool:
        self.asked.append("quiet")
        return bool(self.features_only and delivery.envelope and not delivery.envelope.unique_key)

    def on_start(self, delivery: Delivery) -> Decision | None:
        self.asked.append("on_start")
        return None


def _deliver(app: App, runner: Runner, **envelope: Any) -> Decision:
    fields: dict[str, Any] = {"id": str(uuid.uuid4()), "job": "shortcut.quick", "payload": {}, "queue": "default"}
    body = Envelope(dispatched_at="2026-01-01T00:00:00.000Z", **{**fields, **envelope}).encode()
    return runner.process(ReceivedMessage("default", "m", "r", body, 1, 0.0))


def _runner(registry: Registry, hook: Hook) -> tuple[App, Runner]:
    clock = FakeClock()
    app = App(connection=MemoryConnection(visibility_timeout=30, clock=clock), clock=clock, registry=registry)
    return app, Runner(app, [hook])


def test_a_hook_that_acts_only_on_features_is_not_asked_about_a_plain_job(registry: Registry) -> None:
    hook = Counting(features_only=True)
    app, runner = _runner(registry, hook)
    assert _deliver(app, runner) == Ack()
    assert hook.asked == []  # neither `quiet` nor a point
    assert _deliver(app, runner, unique_key="u") == Ack()
    assert hook.asked == ["quiet_for", "quiet", "on_start"]  # another shape: asked, and it acts
    assert Short.runs == ["shortcut.quick", "shortcut.quick"]


def test_a_hook_quiet_for_a_class_is_asked_once_per_class(registry: Registry) -> None:
    hook = Counting(for_class=True)
    app, runner = _runner(registry, hook)
    for _ in range(3):
        assert _deliver(app, runner) == Ack()
    assert hook.asked == ["quiet_for"]
    registry.add(Keyed, "shortcut.keyed")
    assert _deliver(app, runner, job="shortcut.keyed") == Ack()
    assert hook.asked == ["quiet_for", "quiet_for"]
    assert Short.runs == ["shortcut.quick"] * 3 + ["shortcut.keyed"]


def test_a_hook_whose_quiet_for_raises_is_asked_about_every_delivery(registry: Registry) -> None:
    hook = Counting(for_class=RuntimeError("cannot tell"))
    app, runner = _runner(registry, hook)
    for _ in range(2):
        assert _deliver(app, runner) == Ack()
    assert hook.asked == ["quiet_for", "quiet", "on_start", "quiet", "on_start"]

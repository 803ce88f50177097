"""What a plain job's run skips, and what it must not: events nobody takes are not built, hooks are
called only at the points they implement — and every listener and hook still hears what it asked for."""

from __future__ import annotations

from typing import Any

import pytest

from sqsjobs import App, Job
from sqsjobs import logs as sqsjobs_logs
from sqsjobs.decisions import Decision
from sqsjobs.events import JOB_KINDS, Events, JobEvent
from sqsjobs.runner import Delivery, Hook, Runner
from sqsjobs.worker import Worker, WorkerOptions


class Plain(Job, name="fastpath.plain"):
    n: int = 0

    def handle(self) -> None:
        return None


class Failing(Job, name="fastpath.failing"):
    tries = 1

    def handle(self) -> None:
        raise RuntimeError("boom")


def drain(app: App) -> None:
    Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(False)


def test_a_listener_given_kinds_hears_only_those(memory_app: App) -> None:
    failures: list[str] = []
    everything: list[str] = []
    memory_app.events.listen(lambda event: failures.append(event.kind), kinds=["failed"])
    memory_app.events.listen(lambda event: everything.append(event.kind))
    Plain().dispatch()
    Failing().dispatch()
    drain(memory_app)
    assert failures == ["failed"]
    assert sorted(everything) == sorted(["queued", "queued", "processing", "processed", "processing", "failed"])


def test_listen_refuses_a_kind_that_is_no_job_event() -> None:
    events = Events()
    with pytest.raises(ValueError, match="unknown job event kind"):
        events.listen(print, kinds=["worker_starting"])
    with pytest.raises(ValueError, match="none given"):
        events.listen(print, kinds=[])


def test_wants_follows_listeners_as_they_come_and_go() -> None:
    events = Events()
    assert not any(events.wants(kind) for kind in JOB_KINDS)

    def note(event: Any) -> None:
        return None

    events.listen(note, kinds=["processed"])
    assert events.wants("processed") and not events.wants("processing")
    events.on("queue_busy")(note)
    assert events.wants("queue_busy")
    events.forget(note)
    assert not events.wants("processed") and not events.wants("queue_busy")


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kinds of the job events the runner builds, in order."""
    kinds: list[str] = []
    real = Delivery.event

    def counting(self: Delivery, kind: str, **fields: Any) -> JobEvent:
        kinds.append(kind)
        return real(self, kind, **fields)

    monkeypatch.setattr(Delivery, "event", counting)
    return kinds


def test_an_event_nobody_takes_is_never_built(memory_app: App, built: list[str]) -> None:
    for listener, *_ in list(memory_app.events._listeners):
        memory_app.events.forget(listener)
    Plain().dispatch()
    drain(memory_app)
    assert built == []
    heard: list[JobEvent] = []
    memory_app.events.listen(heard.append, kinds=["processed"])
    Plain(n=1).dispatch()
    drain(memory_app)
    assert built == ["processed"] and [e.kind for e in heard] == ["processed"]
    assert heard[0].job_name == "fastpath.plain" and heard[0].attempt == 1


class Counting(Hook):
    """Implements two points, one as a method and one as an attribute set on the instance."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.before_run = self._before_run  # type: ignore[method-assign]

    def _before_run(self, delivery: Delivery) -> Decision | None:
        self.calls.append("before_run")
        return None

    def on_decided(self, delivery: Delivery, decision: Decision, error: BaseException | None) -> Decision | None:
        self.calls.append("on_decided")
        return None


def test_a_hook_is_called_at_each_point_it_implements_and_no_other(memory_app: App) -> None:
    hook = Counting()
    runner = Runner(memory_app, [*memory_app.runner.hooks, hook])
    Plain().dispatch()
    (message,) = memory_app.connection.receive("default", 10, 30)
    runner.process(message)
    assert hook.calls == ["before_run", "on_decided"]
    assert runner._on_start == tuple(h for h in memory_app.runner.hooks if type(h).on_start is not Hook.on_start)


def test_a_listener_that_would_drop_an_event_does_not_make_it_built(memory_app: App, built: list[str]) -> None:
    """The job log lines take `processing` only at DEBUG: at INFO no `processing` event is built for them,
    at DEBUG it is, and another listener of the kind still gets it built at any level."""
    import logging

    for listener, *_ in list(memory_app.events._listeners):
        if listener is not sqsjobs_logs.log_event:
            memory_app.events.forget(listener)
    jobs = logging.getLogger("sqsjobs.jobs")
    before = jobs.level
    try:
        jobs.setLevel(logging.INFO)
        Plain().dispatch()
        drain(memory_app)
        assert built == ["processed"]
        built.clear()
        jobs.setLevel(logging.DEBUG)
        Plain(n=1).dispatch()
        drain(memory_app)
        assert built == ["processing", "processed"]
        built.clear()
        jobs.setLevel(logging.WARNING)
        starts: list[str] = []
        memory_app.events.listen(lambda event: starts.append(event.kind), kinds=["processing"])
        Plain(n=2).dispatch()
        drain(memory_app)
        assert built == ["processing"] and starts == ["processing"]  # `processed` is below WARNING: not built
    finally:
        jobs.setLevel(before)

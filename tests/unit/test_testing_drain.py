"""`sqsjobs.testing.run_until_empty`: what a test dispatched, and all that follows, run through the real core."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sqsjobs import App, ConfigurationError, Job, batch, chain
from sqsjobs.middleware import Limit, RateLimited, rate_limiter
from sqsjobs.testing import ManualClock, memory_app, pytest_plugin, run_until_empty
from sqsjobs.testing.drain import TrackedMemoryConnection

#: What the jobs did, in order: (job name, its argument, attempt).
LOG: list[tuple[str, Any, int]] = []


class Step(Job, name="drain.step"):
    """Fails its first `flaky` attempts, or every attempt when `broken`."""

    tries = 3
    backoff = [10, 60]
    n: int
    flaky: int = 0
    broken: bool = False

    def handle(self) -> None:
        LOG.append(("step", self.n, self.attempts))
        if self.broken or self.attempts <= self.flaky:
            raise RuntimeError(f"step {self.n} broke")


class Callback(Job, name="drain.callback"):
    what: str

    def handle(self) -> None:
        LOG.append(("callback", self.what, self.attempts))


class Fanout(Job, name="drain.fanout"):
    """Dispatches more work from inside a job, on another queue."""

    def handle(self) -> None:
        LOG.append(("fanout", None, self.attempts))
        Callback(what="from fanout").dispatch(queue="side")


class Forever(Job, name="drain.forever"):
    def handle(self) -> None:
        Forever().dispatch()


class Limited(Job, name="drain.limited"):
    n: int

    def middleware(self) -> list[Any]:
        return [RateLimited("drain-two-a-minute")]

    def handle(self) -> None:
        LOG.append(("limited", self.n, self.attempts))


rate_limiter("drain-two-a-minute", Limit.per_minute(2))


class Ordered(Job, name="drain.ordered"):
    queue = "orders.fifo"
    n: int

    def handle(self) -> None:
        LOG.append(("ordered", self.n, self.attempts))
        if self.n == 1 and self.attempts == 1:
            raise RuntimeError("first try of the first message")


@pytest.fixture
def app() -> Iterator[App]:
    LOG.clear()
    made = memory_app(clock=ManualClock(1_800_000_000.0))
    with made.activate():
        yield made
    LOG.clear()


def clock_of(app: App) -> ManualClock:
    assert isinstance(app.clock, ManualClock)
    return app.clock


def test_a_chain_runs_in_order_with_its_retries_fast_forwarded(app: App) -> None:
    chain([Step(n=1), Step(n=2, flaky=2), Step(n=3)]).catch(Callback(what="catch")).dispatch()
    drained = run_until_empty()
    assert LOG == [("step", 1, 1), ("step", 2, 1), ("step", 2, 2), ("step", 2, 3), ("step", 3, 1)]
    drained.assert_completed(Step, times=3)
    drained.assert_not_ran(Callback)
    drained.assert_nothing_failed()
    assert (drained.ran, drained.completed, drained.released, drained.failed) == (5, 3, 2, 0)
    assert drained.by_job == {"drain.step": {"completed": 3, "retried": 2}}
    # The clock moved by the two backoffs (10 s, then 60 s), and no further.
    assert 70 <= clock_of(app).now - 1_800_000_000.0 < 70.01
    assert drained.waiting == {} and drained.dead_letters == {}


def test_a_link_that_fails_for_good_runs_the_chains_catch_and_not_the_rest(app: App) -> None:
    chain([Step(n=1), Step(n=2, broken=True), Step(n=3)]).catch(Callback(what="catch")).dispatch()
    drained = run_until_empty()
    drained.assert_failed(Step, with_=RuntimeError)
    drained.assert_failed(Step, with_="step 2 broke")
    drained.assert_completed(Callback, lambda job: job.what == "catch", times=1)
    drained.assert_ran(Step, lambda job: job.n == 3, times=0)
    assert drained.dead_letters == {"default": 1}
    with pytest.raises(AssertionError) as caught:
        drained.assert_nothing_failed()
    text = str(caught.value)
    assert "expected nothing to fail; 1 delivery failed" in text
    assert (
        "drain.step on 'default' failed on attempt 3 of 3 (its tries are used up): RuntimeError: step 2 broke" in text
    )
    assert 'raise RuntimeError(f"step {self.n} broke")' in text  # the first error's traceback


def test_a_batch_that_succeeds_runs_then_and_finally(app: App) -> None:
    batch([Step(n=1), Step(n=2, flaky=1), [Step(n=3), Step(n=4)]]).then(Callback(what="then")).catch(
        Callback(what="catch")
    ).finally_(Callback(what="finally")).dispatch()
    drained = run_until_empty()
    assert sorted(n for kind, n, _ in LOG if kind == "step") == [1, 2, 2, 3, 4]
    assert [what for kind, what, _ in LOG if kind == "callback"] == ["then", "finally"]
    drained.assert_nothing_failed()
    drained.assert_completed(Callback, lambda job: job.what == "then", times=1)


def test_a_batch_with_a_failure_runs_catch_and_finally_but_not_then(app: App) -> None:
    batch([Step(n=1), Step(n=2, broken=True)]).then(Callback(what="then")).catch(Callback(what="catch")).finally_(
        Callback(what="finally")
    ).dispatch()
    drained = run_until_empty()
    assert sorted(what for kind, what, _ in LOG if kind == "callback") == ["catch", "finally"]
    drained.assert_failed(Step, with_=RuntimeError)
    assert drained.failed == 1


def test_jobs_dispatched_by_jobs_run_too_on_any_queue(app: App) -> None:
    Fanout().dispatch()
    drained = run_until_empty()
    assert [kind for kind, _, _ in LOG] == ["fanout", "callback"]
    assert [(r.job_name, r.queue) for r in drained.records] == [("drain.fanout", "default"), ("drain.callback", "side")]


def test_a_long_delay_is_fast_forwarded_to_the_second(app: App) -> None:
    Callback(what="tomorrow").dispatch(delay=86_400)
    drained = run_until_empty()
    drained.assert_completed(Callback, times=1)
    assert 86_400 <= drained.of(Callback)[-1].at - 1_800_000_000.0 < 86_400.01
    assert drained.count("deferred") == 1  # sent with 15 minutes, as on SQS; the rest in one hop


def test_a_delay_of_years_runs_on_its_second_after_one_hop(app: App) -> None:
    far = datetime.fromtimestamp(1_800_000_000.0, tz=UTC) + timedelta(days=3650, seconds=7)
    Callback(what="in ten years").dispatch(delay=far)
    Callback(what="in 400 days").dispatch(delay=timedelta(days=400))
    drained = run_until_empty(max_jobs=5)
    assert [what for _, what, _ in LOG] == ["in 400 days", "in ten years"]
    assert 0 <= drained.of(Callback)[-1].at - far.timestamp() < 0.01
    assert drained.count("deferred") == 2 and app.settings.max_delay_hop == 900  # as on SQS again after


def test_too_many_delay_hops_stop_with_a_clear_error(app: App) -> None:
    for what in ("a", "b", "c"):
        Callback(what=what).dispatch(delay=timedelta(days=2))
    with pytest.raises(AssertionError) as caught:
        run_until_empty(max_jobs=2)
    text = str(caught.value)
    assert text.startswith("run_until_empty stopped after 2 delay hops with messages still queued")
    assert "drain.callback 3 time(s)" in text and "Pass max_jobs=" in text


def test_delays_report_stops_at_what_is_not_due(app: App) -> None:
    Callback(what="now").dispatch()
    Callback(what="later").dispatch(delay=600)
    drained = run_until_empty(delays="report")
    assert LOG == [("callback", "now", 1)]
    assert drained.waiting == {"default": 1}
    assert clock_of(app).now == 1_800_000_000.0
    assert "still waiting: {'default': 1}" in drained.summary()


def test_a_rate_limited_job_is_held_back_until_its_window_opens(app: App) -> None:
    for n in range(3):
        Limited(n=n).dispatch()
    drained = run_until_empty()
    assert sorted(n for _, n, _ in LOG) == [0, 1, 2]
    assert drained.held_back >= 1 and drained.count("completed", Limited) == 3
    assert all(attempt == 1 for _, _, attempt in LOG)  # held back spends no try


def test_a_fifo_group_keeps_its_order_through_a_retry(app: App) -> None:
    for n in (1, 2, 3):
        Ordered(n=n).dispatch()
    run_until_empty()
    assert LOG == [("ordered", 1, 1), ("ordered", 1, 2), ("ordered", 2, 1), ("ordered", 3, 1)]


def test_a_job_that_dispatches_itself_forever_stops_with_a_clear_error(app: App) -> None:
    Forever().dispatch()
    with pytest.raises(AssertionError) as caught:
        run_until_empty(max_jobs=25)
    text = str(caught.value)
    assert text.startswith("run_until_empty stopped after 25 deliveries with messages still queued")
    assert "drain.forever 25 time(s)" in text and "Pass max_jobs=" in text


def test_failed_assertions_list_what_ran(app: App) -> None:
    Callback(what="x").dispatch()
    drained = run_until_empty()
    with pytest.raises(AssertionError) as caught:
        drained.assert_completed(Step)
    assert str(caught.value).splitlines() == [
        "expected drain.step to complete",
        "ran (1 delivery):",
        "  1. drain.callback on 'default' completed on attempt 1 of 3",
    ]
    with pytest.raises(AssertionError, match=r"expected drain.callback to run 2 time\(s\), it did 1 time\(s\)"):
        drained.assert_ran(Callback, times=2)


def test_queues_run_in_priority_order() -> None:
    LOG.clear()
    app = memory_app(queues="high,default")
    with app.activate():
        Callback(what="low").dispatch()
        Callback(what="high").dispatch(queue="high")
        run_until_empty()
    assert [what for _, what, _ in LOG] == ["high", "low"]


def test_a_plain_memory_app_drains_its_configured_queues_and_asks_for_a_clock_to_wait() -> None:
    LOG.clear()
    app = App(connection="memory", store="memory")
    assert not isinstance(app.connection, TrackedMemoryConnection)
    with app.activate():
        Fanout().dispatch()
        run_until_empty(queues=["default", "side"])
        assert [kind for kind, _, _ in LOG] == ["fanout", "callback"]
        Step(n=1, flaky=1).dispatch()
        with pytest.raises(ConfigurationError, match="delays='report'"):
            run_until_empty()
        assert run_until_empty(delays="report").waiting == {"default": 1}


def test_other_connections_are_refused_with_what_to_use() -> None:
    with pytest.raises(ConfigurationError, match="memory_app"):
        run_until_empty(App(connection="null"))


def test_the_fixture_makes_a_memory_app_current_for_the_test() -> None:
    LOG.clear()
    gen = pytest_plugin.sqsjobs_memory_app.__wrapped__()  # type: ignore[attr-defined]
    app = next(gen)
    Callback(what="fixture").dispatch()
    assert app.connection.size("default") == 1
    run_until_empty().assert_completed(Callback, times=1)
    with pytest.raises(StopIteration):
        next(gen)

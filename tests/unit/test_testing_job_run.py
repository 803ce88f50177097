"""`sqsjobs.testing.run_job`: one job's `handle()` through the real core, and assertions on what it asked for."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import Field, PrivateAttr, field_serializer

from sqsjobs import App, ConfigurationError, Job, PermanentError
from sqsjobs.errors import JobFailedError, MaxAttemptsExceededError
from sqsjobs.middleware import Limit, RateLimited, Skip, rate_limiter
from sqsjobs.testing import ManualClock, pytest_plugin, run_job
from sqsjobs.testing.drain import memory_app, run_until_empty
from sqsjobs.testing.job_run import JobRun

FAILED: list[tuple[int, str]] = []


class Notify(Job, name="jobrun.notify"):
    order_id: int

    def handle(self) -> None:
        pass


class Charge(Job, name="jobrun.charge"):
    """Does what its order id says, so each test picks a behaviour."""

    tries = 3
    backoff = [10, 60]
    fail_on = (KeyError,)
    order_id: int
    _seen: list[int] = PrivateAttr(default_factory=list)

    def handle(self) -> None:
        self._seen.append(self.attempts)
        if self.order_id == 1:
            raise ValueError(f"card declined, try {self.attempts}")
        if self.order_id == 2:
            self.release(30)
        elif self.order_id == 3:
            self.fail("no such order")
        elif self.order_id == 4:
            raise PermanentError("order cancelled")
        elif self.order_id == 5:
            raise KeyError("customer")
        else:
            Notify(order_id=self.order_id).dispatch()

    def failed(self, exc: BaseException) -> None:
        FAILED.append((self.order_id, str(exc)))


class Shaped(Job, name="jobrun.shaped"):
    """Fields a worker sees differently from the object the test built, and a private fake client."""

    tries = 1
    secret: str = Field(default="", exclude=True)
    label: str = ""
    data: Any = None
    _client: list[str] = PrivateAttr(default_factory=list)

    @field_serializer("label")
    def _upper(self, label: str) -> str:
        return label.upper()

    def handle(self) -> None:
        SAW.append((self.secret, self.label, self.data))
        self._client.append("handle")
        raise ValueError("gateway down")

    def failed(self, exc: BaseException) -> None:
        self._client.append("failed")


SAW: list[tuple[str, str, Any]] = []


class Limited(Job, name="jobrun.limited"):
    def middleware(self) -> list[Any]:
        return [RateLimited("jobrun-one-a-minute")]

    def handle(self) -> None:
        pass


rate_limiter("jobrun-one-a-minute", Limit.per_minute(1))


class Skipped(Job, name="jobrun.skipped"):
    def middleware(self) -> list[Any]:
        return [Skip.when(True)]

    def handle(self) -> None:
        pass


class Later(Job, name="jobrun.async"):
    async def handle(self) -> None:
        self.release(5)


@pytest.fixture
def app() -> Iterator[App]:
    """A real app with a queue, current during the test: nothing run_job does may reach it."""
    real = App(connection="memory", store="memory")
    with real.activate():
        yield real
    FAILED.clear()


def failure_of(result: JobRun, assertion: str, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(AssertionError) as caught:
        getattr(result, assertion)(*args, **kwargs)
    return str(caught.value)


def test_a_job_that_returns_completes_and_its_dispatches_are_recorded_not_sent(app: App) -> None:
    result = run_job(Charge(order_id=7))
    result.assert_completed()
    assert result.outcome == "completed" and result.ran and result.delay is None
    result.dispatched.assert_dispatched(Notify, lambda job: job.order_id == 7, times=1)
    assert app.connection.receive("default", 10, 0) == []


def test_a_release_is_asserted_with_its_delay(app: App) -> None:
    result = run_job(Charge(order_id=2))
    result.assert_released()
    result.assert_released(delay=30)
    text = failure_of(result, "assert_released", delay=10)
    assert text.splitlines()[:2] == [
        "expected Charge to be released with a delay of 10 s",
        "but it was released by the job on attempt 1 of 3; back in 30 s",
    ]


def test_an_exception_is_retried_with_the_backoff_of_its_attempt(app: App) -> None:
    first = run_job(Charge(order_id=1))
    first.assert_retried(with_=ValueError, delay=10)
    run_job(Charge(order_id=1), attempt=2).assert_retried(delay=60)
    assert FAILED == []


def test_a_crash_never_passes_for_a_release_and_the_failure_shows_its_traceback(app: App) -> None:
    text = failure_of(run_job(Charge(order_id=1)), "assert_released")
    assert "but it raised ValueError: card declined, try 1 on attempt 1 of 3; tried again in 10 s" in text
    assert 'raise ValueError(f"card declined, try {self.attempts}")' in text
    assert "sqsjobs/runner" not in text  # the traceback starts at the job's own code
    text = failure_of(run_job(Charge(order_id=1)), "assert_completed")
    assert text.startswith("expected Charge to complete\nbut it raised ValueError")


def test_the_last_try_fails_the_job_and_calls_failed_on_the_instance_that_ran(app: App) -> None:
    job = Charge(order_id=1)
    result = run_job(job, attempt=3)
    result.assert_failed()
    result.assert_failed(with_=ValueError)
    result.assert_failed(with_="card declined, try 3")
    result.assert_failed(with_=re.compile(r"declined"))
    result.assert_failed(with_=ValueError("card declined, try 3"))
    assert FAILED == [(1, "card declined, try 3")]
    assert job._seen == [3] and job.attempts == 3
    text = failure_of(result, "assert_failed", with_=KeyError)
    assert text.splitlines()[:2] == [
        "expected Charge to fail with KeyError",
        "but it failed on attempt 3 of 3 (its tries are used up): ValueError: card declined, try 3",
    ]
    assert "expected Charge to be retried" in failure_of(result, "assert_retried")


def test_fail_permanent_errors_and_fail_on_give_the_job_up_at_once(app: App) -> None:
    run_job(Charge(order_id=3)).assert_failed(with_=JobFailedError)
    run_job(Charge(order_id=3)).assert_failed(with_="no such order")
    run_job(Charge(order_id=4)).assert_failed(with_=PermanentError)
    run_job(Charge(order_id=5)).assert_failed(with_=KeyError)
    text = failure_of(run_job(Charge(order_id=3)), "assert_failed", with_="no order")
    assert "expected Charge to fail with the message 'no order'" in text
    assert "(the job called fail()): JobFailedError: no such order" in text


def test_an_attempt_past_the_tries_fails_without_running(app: App) -> None:
    job = Charge(order_id=7)
    result = run_job(job, attempt=4)
    result.assert_failed(with_=MaxAttemptsExceededError)
    assert not result.ran and job._seen == []
    result.dispatched.assert_nothing_dispatched()


def test_middleware_runs_and_a_shared_store_holds_the_second_run_back(app: App) -> None:
    # Mid-minute and standing still: a window of the real clock could turn over between the two runs.
    app.clock = ManualClock(1_800_000_030.0)
    runs = pytest_plugin.sqsjobs_run_job.__wrapped__()  # type: ignore[attr-defined]
    runs(Limited()).assert_completed()
    second = runs(Limited())
    second.assert_held_back()
    assert not second.ran and second.delay is not None and 0 < second.delay <= 60
    assert "was held back before it ran" in failure_of(second, "assert_completed")
    runs(Limited(), middleware=False).assert_completed()  # the job's own logic, without its limiter
    run_job(Limited()).assert_completed()  # a plain run_job starts from an empty store


def test_a_skip_acknowledges_without_running_unless_middleware_is_skipped(app: App) -> None:
    result = run_job(Skipped())
    result.assert_skipped()
    assert "was acknowledged without running" in failure_of(result, "assert_completed")
    run_job(Skipped(), middleware=False).assert_completed()


def test_an_async_handle_runs_on_a_loop_of_its_own(app: App) -> None:
    run_job(Later()).assert_released(delay=5)


def test_attempt_counts_from_one() -> None:
    with pytest.raises(ValueError, match="counts from 1"):
        run_job(Notify(order_id=1), attempt=0)


def test_an_async_job_inside_a_running_loop_is_refused_with_what_to_do(app: App) -> None:
    import asyncio

    async def inside() -> None:
        run_job(Charge(order_id=7)).assert_completed()  # a sync job runs inside a loop too
        with pytest.raises(ConfigurationError, match="from a synchronous test function"):
            run_job(Later())

    asyncio.run(inside())


def test_handle_sees_the_job_a_worker_would_build_with_the_tests_private_state(app: App) -> None:
    drain_app = memory_app()
    with drain_app.activate():
        Shaped(secret="abc", label="a", data=(1, 2)).dispatch()
        run_until_empty()
    worker_saw = SAW.pop()
    job = Shaped(secret="abc", label="a", data=(1, 2))
    client = job._client
    result = run_job(job)
    result.assert_failed(with_="gateway down")
    assert SAW.pop() == worker_saw == ("", "A", [1, 2])  # excluded, serialized, through JSON: as on a worker
    assert client == ["handle", "failed"]  # the private fake reached handle() and failed(), the same object
    assert result.job is not job and result.job.secret == "" and job.attempts == 1

"""The scheduler on SQS and DynamoDB (moto in-process, through the strict layer): the schedule Lambda's
handler dispatches a tick once however often it is invoked, the job runs through a poller, and the
schedule's record says so; a table error in one schedule leaves the others running."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import ClassVar

import pytest

from lambda_handlers.schedule import ScheduleHandler
from sqsjobs import App, ConfigurationError, Job, SqsJobsError, aws
from sqsjobs.cron import every_minute, hourly
from sqsjobs.provisioning import provision
from sqsjobs.schedules import Schedules, record_key, schedule
from sqsjobs.testing import faults
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import FakeClock


class Nightly(Job, name="sched-aws.nightly"):
    runs: ClassVar[list[str]] = []
    region: str

    def handle(self) -> None:
        Nightly.runs.append(self.region)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 6, 1, 2, 0, 20, tzinfo=UTC).timestamp())


@pytest.fixture
def app(moto: None, prefix: str, clock: FakeClock) -> Iterator[App]:
    Nightly.runs.clear()
    schedules = Schedules()
    schedule(Nightly(region="eu"), hourly(), name="nightly-eu", registry=schedules)
    schedule(Nightly(region="us"), every_minute(), name="minutely-us", queue="high", registry=schedules)
    app = App(
        connection="sqs",
        queue_prefix=prefix,
        queues=["default", "high"],
        table=f"{prefix}table",
        clock=clock,
        schedules=schedules,
    )
    provision(app, ["default", "high"], table=True, bucket=False)
    with app.activate():
        yield app


def drain(app: App) -> int:
    worker = Worker(app, WorkerOptions(queues=["default", "high"], prefetch=0))
    return sum(worker.poll_once() for _ in range(3))


def test_the_schedule_lambda_dispatches_each_tick_once_however_often_it_runs(app: App, clock: FakeClock) -> None:
    handler = ScheduleHandler(app)
    first = handler({}, None)
    assert first["dispatched"] == 2 and first["schedules"] == 2
    again = handler({}, None)  # EventBridge delivers an invocation twice, or two overlap
    assert "dispatched" not in again
    assert drain(app) == 2
    assert sorted(Nightly.runs) == ["eu", "us"]
    record = app.store.get(record_key("nightly-eu")) or {}
    assert record["outcome"] == "ok" and record["finished_job_id"] == record["last_job_id"]
    clock.now += 60
    assert handler({}, None)["dispatched"] == 1  # 02:01: only the every-minute one
    assert drain(app) == 1 and sorted(Nightly.runs) == ["eu", "us", "us"]


def test_a_table_error_in_one_schedule_leaves_the_others_running(
    app: App, faults: faults.FaultPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the injected error fails its call at once
    aws.reset_clients()
    faults.add("dynamodb", "GetItem", "500", times=1)  # the first schedule's record cannot be read
    handler = ScheduleHandler(app)
    with pytest.raises(SqsJobsError, match=r"minutely-us .*InternalServerError"):
        handler({}, None)  # an error for the function's Errors alarm ...
    assert drain(app) == 1 and Nightly.runs == ["eu"]  # ... after the other schedule's tick was sent
    assert handler({}, None)["dispatched"] == 1  # the next minute's pass sends the one that failed
    assert drain(app) == 1 and sorted(Nightly.runs) == ["eu", "us"]


def test_the_schedule_lambda_refuses_an_app_without_schedules(moto: None, prefix: str) -> None:
    empty = App(connection="sqs", queue_prefix=prefix, schedules=Schedules())
    with pytest.raises(ConfigurationError, match="no schedules are declared"):
        ScheduleHandler(empty)({}, None)

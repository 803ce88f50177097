"""`sqsjobs monitor`: depth, in flight, delayed, oldest-message age and DLQ depth per queue, thresholds
that exit 1 and announce `queue_busy` once, against in-process moto through the strict AWS layer."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from typer.testing import CliRunner, Result

from sqsjobs import App, Job, aws
from sqsjobs.cli import cli
from sqsjobs.cli.monitor import watch_loop
from sqsjobs.events import QueueEvent
from sqsjobs.provisioning import provision
from sqsjobs.queue_monitor import Monitor, Report, parse_limits
from tests.helpers import dlq_url, queue_url

runner = CliRunner()


class Ping(Job, name="monitor.ping"):
    n: int

    def handle(self) -> None:
        pass


class Urgent(Job, name="monitor.urgent"):
    queue = "high"
    n: int

    def handle(self) -> None:
        pass


@pytest.fixture
def app(moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """Provisioned `default` and `high` (each with a DLQ); the CLI reads the same settings from the
    environment. Not activated: the CLI builds and uses its own App, as it does for a user."""
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("SQSJOBS_QUEUES", "default,high")
    application = App(connection="sqs", visibility_timeout=30)
    provision(application, ["default", "high"], table=False, bucket=False)
    yield application


def dispatch(app: App, job: Job, times: int = 1, **options: Any) -> None:
    with app.activate():
        for _ in range(times):
            job.dispatch(**options)


def monitor(*args: str) -> Result:
    # Other test modules register jobs on other queues: always name the queues looked at.
    return runner.invoke(cli, ["monitor", *args], terminal_width=200)


def as_json(result: Result) -> dict[str, Any]:
    (line,) = result.stdout.splitlines()
    found: dict[str, Any] = json.loads(line)
    return found


def by_queue(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["queue"]: row for row in report["queues"]}


def busy_events(app: App) -> list[QueueEvent]:
    seen: list[QueueEvent] = []
    app.events.on("queue_busy")(seen.append)
    return seen


def publish_age(app: App, queue: str, seconds: float, ago: float = 90) -> None:
    """Stand in for SQS publishing its own metric: moto publishes none (and takes a put into `AWS/`, a
    namespace AWS keeps for its services)."""
    aws.client("cloudwatch").put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": app.settings.physical_queue_name(queue)}],
                "Timestamp": datetime.now(UTC) - timedelta(seconds=ago),
                "Value": seconds,
                "Unit": "Seconds",
            }
        ],
    )


# -- the numbers ---------------------------------------------------------------------------------


def test_json_reports_depth_in_flight_delayed_and_dlq_depth_per_queue(app: App) -> None:
    dispatch(app, Ping(n=1), times=4)
    dispatch(app, Ping(n=2), delay=120)
    aws.client("sqs").receive_message(QueueUrl=queue_url(app, "default"), MaxNumberOfMessages=1)
    aws.client("sqs").send_message(QueueUrl=dlq_url(app, "default"), MessageBody="{}")

    result = monitor("--json", "--queue", "default,high")

    assert result.exit_code == 0, result.output
    report = as_json(result)
    default, high = by_queue(report)["default"], by_queue(report)["high"]
    assert (default["depth"], default["in_flight"], default["delayed"], default["dlq_depth"]) == (3, 1, 1, 1)
    assert (high["depth"], high["in_flight"], high["delayed"], high["dlq_depth"]) == (0, 0, 0, 0)
    assert default["dlq"] == app.settings.dlq_name(app.settings.physical_queue_name("default"))
    assert report["busy"] == [] and report["missing"] == []
    assert [row["queue"] for row in report["queues"]] == ["default", "high"]


def test_the_table_shows_each_queue_once_and_an_unknown_age_as_unknown_never_0(app: App) -> None:
    dispatch(app, Ping(n=1), times=2)

    result = monitor("--queue", "default,high")

    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ ")}
    assert set(rows) == {"default", "high"}
    assert "unknown" in rows["default"] and "0s" not in rows["default"]
    assert "ok" in rows["default"]
    assert "no AWS/SQS ApproximateAgeOfOldestMessage datapoint" in result.stdout


def test_the_default_queues_are_those_of_the_settings_and_the_jobs(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQSJOBS_QUEUES", "high")
    result = monitor("--json")
    queues = [row["queue"] for row in as_json(result)["queues"]]
    assert queues[0] == "high" and "default" in queues  # Ping's queue, from the registry


# -- thresholds and the event ------------------------------------------------------------------------


def test_max_depth_breach_exits_1_names_queue_and_threshold(app: App) -> None:
    dispatch(app, Ping(n=1), times=3)

    result = monitor("--max-depth", "2", "--queue", "default,high")

    assert result.exit_code == 1, result.output
    assert "queue default: depth 3 is over --max-depth 2" in result.stdout
    assert "queue high" not in result.stdout
    report = as_json(monitor("--json", "--max-depth", "2", "--queue", "default,high"))
    assert report["busy"] == ["default"]
    assert by_queue(report)["default"]["over"] == ["depth"]


def test_a_breach_emits_exactly_one_queue_busy_event_with_its_detail(app: App) -> None:
    dispatch(app, Ping(n=1), times=3)
    seen = busy_events(app)

    report = Monitor(app, ["default", "high"], parse_limits(["2"], "--max-depth")).check()

    assert report.busy == ["default"]
    assert [(e.kind, e.queue, e.detail) for e in seen] == [
        ("queue_busy", "default", {"depth": 3, "max_depth": 2, "age_s": None, "max_age_s": None})
    ]


def test_depth_at_the_threshold_is_not_a_breach(app: App) -> None:
    dispatch(app, Ping(n=1), times=2)
    seen = busy_events(app)
    assert Monitor(app, ["default"], parse_limits(["2"], "--max-depth")).check().busy == []
    assert seen == []


@pytest.mark.parametrize(
    "options", [["--max-depth", "default=5", "--max-depth", "high=0"], ["--max-depth", "default=5,high=0"]]
)
def test_per_queue_max_depth_applies_to_its_queue_only(app: App, options: list[str]) -> None:
    dispatch(app, Ping(n=1), times=3)
    dispatch(app, Urgent(n=1))

    result = monitor("--json", *options, "--queue", "default,high")

    assert result.exit_code == 1, result.output
    report = as_json(result)
    assert report["busy"] == ["high"]
    assert by_queue(report)["default"]["max_depth"] == 5 and by_queue(report)["high"]["max_depth"] == 0
    assert "queue high: depth 1 is over --max-depth 0" in result.stderr


def test_a_per_queue_threshold_wins_over_the_one_for_every_queue(app: App) -> None:
    dispatch(app, Ping(n=1), times=3)
    report = as_json(monitor("--json", "--max-depth", "1,default=10", "--queue", "default,high"))
    assert (by_queue(report)["default"]["max_depth"], by_queue(report)["high"]["max_depth"]) == (10, 1)
    assert report["busy"] == []


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--max-depth", "nope=3"], "'nope'"),
        (["--max-depth", "lots"], "'lots'"),
        (["--max-depth", "1", "--max-depth", "2"], "two values"),
        (["--max-age", "-5"], "'-5'"),
        (["--watch", "--interval", "0"], "--interval"),
        (["--interval", "10"], "--watch"),
    ],
)
def test_a_bad_threshold_is_a_usage_error(app: App, options: list[str], said: str) -> None:
    result = monitor(*options, "--queue", "default")
    assert result.exit_code == 2, result.output
    assert said in result.output


def test_age_comes_from_cloudwatch_and_max_age_breach_exits_1_and_emits(app: App) -> None:
    dispatch(app, Ping(n=1))
    publish_age(app, "default", 412)
    seen = busy_events(app)

    report = Monitor(app, ["default", "high"], max_age=parse_limits(["300"], "--max-age")).check()

    default = report.rows[0]
    assert default.age_s == 412.0 and default.age_as_of is not None
    assert report.rows[1].age_s is None and app.settings.physical_queue_name("high") in report.age_note
    assert [(e.queue, e.detail) for e in seen] == [
        ("default", {"depth": 1, "max_depth": None, "age_s": 412.0, "max_age_s": 300})
    ]
    result = monitor("--max-age", "300", "--queue", "default")
    assert result.exit_code == 1, result.output
    assert "queue default: oldest message 6m52s is over --max-age 300s" in result.stdout
    as_of = by_queue(as_json(monitor("--json", "--queue", "default")))["default"]["age_as_of"]
    assert as_of.endswith("Z")


def test_an_unknown_age_never_breaches_max_age_and_says_it_was_not_checked(app: App) -> None:
    dispatch(app, Ping(n=1), times=2)

    result = monitor("--json", "--max-age", "0", "--queue", "default")

    assert result.exit_code == 0, result.output
    assert by_queue(as_json(result))["default"]["age_s"] is None
    assert "queue default: oldest message age unknown, --max-age not checked" in result.stderr


def test_cloudwatch_refusing_leaves_the_age_unknown_and_says_which_permission(app: App) -> None:
    publish_age(app, "default", 412)

    def refuse(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {"Code": "AccessDenied", "Message": "not authorized to perform: cloudwatch:GetMetricData"}
        return AWSResponse("https://refused.invalid/", 403, HTTPHeaders(), None), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 403},
        }

    aws.client("cloudwatch").meta.events.register("before-call.cloudwatch.GetMetricData", refuse)
    result = monitor("--json", "--queue", "default")

    assert result.exit_code == 0, result.output
    report = as_json(result)
    assert by_queue(report)["default"]["age_s"] is None
    assert "AccessDenied" in report["age_note"] and "cloudwatch:GetMetricData" in report["age_note"]


# -- missing queues and DLQs -----------------------------------------------------------------------


def test_a_missing_queue_is_named_with_what_to_do_and_the_others_still_shown(app: App) -> None:
    dispatch(app, Ping(n=1))

    result = monitor("--json", "--queue", "default,ghost")

    assert result.exit_code == 2, result.output
    report = as_json(result)
    assert report["missing"] == ["ghost"]
    assert by_queue(report)["default"]["depth"] == 1
    assert by_queue(report)["ghost"]["exists"] is False
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "'ghost'" in line and "sqsjobs provision" in line

    table = monitor("--queue", "ghost")
    assert table.exit_code == 2 and "missing" in table.stdout and "sqsjobs provision" in table.stderr


def test_a_dlq_that_does_not_exist_shows_no_dlq(app: App) -> None:
    aws.client("sqs").delete_queue(QueueUrl=dlq_url(app, "high"))
    bare = app.settings.physical_queue_name("bare")
    aws.client("sqs").create_queue(QueueName=bare)

    result = monitor("--queue", "default,high,bare")

    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ ")}
    assert "no DLQ" in rows["high"] and "no DLQ" in rows["bare"] and "no DLQ" not in rows["default"]
    report = by_queue(as_json(monitor("--json", "--queue", "default,high,bare")))
    assert report["high"]["dlq_depth"] is None and "does not exist" in report["high"]["dlq_note"]
    assert report["bare"]["dlq"] is None and "no redrive policy" in report["bare"]["dlq_note"]


def test_monitor_needs_the_sqs_connection(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQSJOBS_CONNECTION", "memory")
    result = monitor("--queue", "default")
    assert result.exit_code == 2
    assert "SQSJOBS_CONNECTION" in result.output


# -- watching ---------------------------------------------------------------------------------------


def test_watching_announces_a_queue_when_it_becomes_busy_not_on_every_refresh(app: App) -> None:
    seen = busy_events(app)
    checker = Monitor(app, ["default"], parse_limits(["2"], "--max-depth"), age_every=60)
    shown: list[Report] = []
    between = iter([lambda: dispatch(app, Ping(n=1), times=3), lambda: dispatch(app, Ping(n=2)), lambda: None])

    last = watch_loop(checker.check, shown.append, 5, refreshes=3, wait=lambda _: next(between)())

    assert [report.rows[0].depth for report in shown] == [0, 3, 4]
    assert [report.busy for report in shown] == [[], ["default"], ["default"]]
    assert [e.detail["depth"] for e in seen] == [3]
    assert last == 1


def test_watching_announces_again_after_the_queue_recovered(app: App) -> None:
    seen = busy_events(app)
    checker = Monitor(app, ["default"], parse_limits(["0"], "--max-depth"))
    dispatch(app, Ping(n=1))
    assert checker.check().busy == ["default"]
    aws.client("sqs").purge_queue(QueueUrl=queue_url(app, "default"))
    assert checker.check().busy == []
    dispatch(app, Ping(n=2))
    assert checker.check().busy == ["default"]
    assert len(seen) == 2


def test_ctrl_c_ends_a_watch_with_the_last_refreshs_status(app: App) -> None:
    dispatch(app, Ping(n=1), times=3)
    checker = Monitor(app, ["default"], parse_limits(["2"], "--max-depth"))

    def interrupted(_: float) -> None:
        raise KeyboardInterrupt

    shown: list[Report] = []
    assert watch_loop(checker.check, shown.append, 5, wait=interrupted) == 1
    assert len(shown) == 1


def test_the_watch_cli_renders_its_table_and_json_lines(app: App) -> None:
    dispatch(app, Ping(n=1), times=2)

    table = monitor("--watch", "--refreshes", "1", "--queue", "default,high")
    assert table.exit_code == 0, table.output
    assert "sqsjobs monitor" in table.stdout and "default" in table.stdout

    lines = monitor("--watch", "--json", "--refreshes", "2", "--queue", "default", "--max-depth", "1")
    assert lines.exit_code == 1, lines.output
    assert [json.loads(line)["queues"][0]["depth"] for line in lines.stdout.splitlines()] == [2, 2]


def test_the_cloudwatch_age_is_read_once_a_minute_while_watching(app: App) -> None:
    calls: list[str] = []
    aws.client("cloudwatch").meta.events.register(
        "before-call.cloudwatch.GetMetricData", lambda **_: calls.append("GetMetricData")
    )
    now = [time.time()]
    app.clock = lambda: now[0]
    checker = Monitor(app, ["default"], age_every=60)
    checker.check()
    now[0] += 30
    checker.check()
    now[0] += 31
    checker.check()
    assert calls == ["GetMetricData", "GetMetricData"]


# -- the user's listener, loaded by SQSJOBS_APP -------------------------------------------------------


def test_a_listener_set_up_by_the_app_module_hears_queue_busy_once(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "monitor_hooks.py").write_text(
        "heard = []\n\n\ndef sqsjobs_setup(app):\n    app.events.on('queue_busy')(heard.append)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    dispatch(app, Ping(n=1), times=3)

    try:
        result = monitor("-a", "monitor_hooks", "--max-depth", "2", "--queue", "default")
        heard = sys.modules["monitor_hooks"].heard
    finally:
        sys.modules.pop("monitor_hooks", None)

    assert result.exit_code == 1, result.output
    assert [(e.kind, e.queue, e.detail) for e in heard] == [
        ("queue_busy", "default", {"depth": 3, "max_depth": 2, "age_s": None, "max_age_s": None})
    ]

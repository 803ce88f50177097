"""`sqsjobs check` finds the Lambda functions that consume a queue (its event source mappings) and says
what cannot run there: a default timeout the handler refuses, a job handed back unstarted on every
delivery, a visibility timeout that lets a record run twice, a mapping that loses releases."""

from __future__ import annotations

import io
import json
import zipfile

from typer.testing import CliRunner

from sqsjobs import App, Job, Registry, aws
from sqsjobs.cli import cli
from sqsjobs.provisioning import Problem, check, provision
from tests.helpers import queue_url


class Nightly(Job, name="check-lambda.nightly"):
    timeout = 600

    def handle(self) -> None:
        pass


class Quick(Job, name="check-lambda.quick"):
    timeout = 60

    def handle(self) -> None:
        pass


def only(*jobs: type[Job]) -> Registry:
    registry = Registry()
    for job in jobs:
        registry.add(job, job.job_name)
    return registry


def consumer(
    app: App,
    queue: str,
    name: str,
    timeout: int,
    env: dict[str, str] | None = None,
    window: int = 0,
    report_failures: bool = True,
) -> None:
    """A function (as `infra/template.yaml` deploys it) and the event source mapping feeding it `queue`."""
    role = aws.client("iam").create_role(
        RoleName=f"{name}-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ],
            }
        ),
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("lambda_handlers/__init__.py", "")
    lam = aws.client("lambda")
    lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="lambda_handlers.sqs.handler",
        Code={"ZipFile": code.getvalue()},
        Timeout=timeout,
        Environment={"Variables": {"SQSJOBS_APP": "myapp.jobs", **(env or {})}},
    )
    arn = aws.client("sqs").get_queue_attributes(QueueUrl=queue_url(app, queue), AttributeNames=["QueueArn"])
    lam.create_event_source_mapping(
        EventSourceArn=arn["Attributes"]["QueueArn"],
        FunctionName=name,
        BatchSize=10,
        MaximumBatchingWindowInSeconds=window,
        FunctionResponseTypes=["ReportBatchItemFailures"] if report_failures else [],
    )


def set_visibility(app: App, queue: str, seconds: int) -> None:
    aws.client("sqs").set_queue_attributes(
        QueueUrl=queue_url(app, queue), Attributes={"VisibilityTimeout": str(seconds)}
    )


def lambda_problems(problems: list[Problem]) -> list[tuple[str, str, str, str]]:
    return [(p.queue, p.severity, p.problem, p.fix) for p in problems if p.problem.startswith("Lambda ")]


def test_check_names_what_cannot_run_in_the_function_that_consumes_the_queue(moto: None, prefix: str) -> None:
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=360, registry=only(Nightly))
    provision(app, ["default"], table=False, bucket=False)
    consumer(app, "default", f"{prefix}jobs", timeout=60, report_failures=False)
    set_visibility(app, "default", 45)  # what a later `provision` with a smaller SQSJOBS_VISIBILITY_TIMEOUT does

    found = lambda_problems(check(app, ["default"]))

    name = f"{prefix}jobs"
    errors = {problem: fix for queue, severity, problem, fix in found if severity == "error" and queue == "default"}
    assert errors == {
        f"Lambda {name}: SQSJOBS_TIMEOUT 60s (the default: not set on the function) + SQSJOBS_LAMBDA_DEADLINE_MARGIN "
        "2s does not fit in its timeout 60s: the handler refuses to run (every job without its own timeout would be "
        "handed back unstarted)": f"raise {name}'s Timeout above 62s, or set SQSJOBS_TIMEOUT on it below 58s",
        f"Lambda {name}: check-lambda.nightly.timeout 600s + SQSJOBS_LAMBDA_DEADLINE_MARGIN 2s does not fit in its "
        "timeout 60s: the job is handed back unstarted on every delivery": "lower check-lambda.nightly.timeout below "
        f"58s, raise {name}'s Timeout above 602s, or consume default with the poller",
        f"Lambda {name}: the queue's visibility timeout 45s is below the function's timeout 60s plus the batching "
        "window 0s: a record still running turns visible and runs twice": "raise VisibilityTimeout to 360s "
        "(SQSJOBS_VISIBILITY_TIMEOUT, then provision)",
        f"Lambda {name}: the event source mapping does not report batch item failures: Lambda ignores the handler's "
        "batchItemFailures and deletes released and handed-back records with their batch": "set "
        "FunctionResponseTypes to [ReportBatchItemFailures] on the mapping",
    }


def test_a_consumer_that_fits_passes_and_aws_visibility_advice_counts_the_batching_window(
    moto: None, prefix: str
) -> None:
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=720, registry=only(Quick))
    provision(app, ["default"], table=False, bucket=False)
    # The function's own SQSJOBS_TIMEOUT counts, not this shell's (which is the default, 60 s).
    consumer(app, "default", f"{prefix}jobs", timeout=120, env={"SQSJOBS_TIMEOUT": "30"})
    assert lambda_problems(check(app, ["default"])) == []

    app2 = App(
        connection="sqs", queue_prefix=f"{prefix}w-", queues=["default"], visibility_timeout=720, registry=only(Quick)
    )
    provision(app2, ["default"], table=False, bucket=False)
    consumer(app2, "default", f"{prefix}windowed", timeout=120, env={"SQSJOBS_TIMEOUT": "30"}, window=60)
    found = lambda_problems(check(app2, ["default"]))
    assert [(severity, fix) for _, severity, _, fix in found] == [
        ("warning", "raise VisibilityTimeout to 780s (SQSJOBS_VISIBILITY_TIMEOUT, then provision)")
    ]
    assert "below AWS's advice of 6 x the function's timeout plus the batching window (780s)" in found[0][2]


def test_the_check_verb_reports_the_consumer_and_fails_on_a_lambda_error(moto: None, prefix: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("SQSJOBS_QUEUES", "default")
    monkeypatch.setenv("SQSJOBS_VISIBILITY_TIMEOUT", "360")
    runner = CliRunner()
    assert runner.invoke(cli, ["provision", "--queue", "default"]).exit_code == 0
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"])
    consumer(app, "default", f"{prefix}jobs", timeout=60)

    result = runner.invoke(cli, ["check", "--queue", "default"], terminal_width=250)

    assert result.exit_code == 1, result.output
    assert f"queue default: consumed by Lambda {prefix}jobs (timeout 60s, batching window 0s" in result.output
    assert "SQSJOBS_LAMBDA_DEADLINE_MARGIN" in result.output

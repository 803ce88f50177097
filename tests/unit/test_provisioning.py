from __future__ import annotations

import json

from typer.testing import CliRunner

from sqsjobs import App, Job, Registry, aws
from sqsjobs.cli import cli
from sqsjobs.provisioning import check, provision
from tests.helpers import queue_url


class ManyTries(Job, name="provision.many-tries"):
    queue = "retries"
    tries = 25
    timeout = 300

    def handle(self) -> None:
        pass


def redrive(app: App, queue: str) -> dict[str, str]:
    attrs = aws.client("sqs").get_queue_attributes(QueueUrl=queue_url(app, queue), AttributeNames=["All"])
    return json.loads(attrs["Attributes"]["RedrivePolicy"])  # type: ignore[no-any-return]


def only(*jobs: type[Job]) -> Registry:
    """A registry with just these jobs, so other test modules' jobs do not change the numbers."""
    registry = Registry()
    for job in jobs:
        registry.add(job, job.job_name)
    return registry


def test_provision_creates_each_queue_with_a_dlq_and_max_receive_count_above_tries(moto: None, prefix: str) -> None:
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], registry=only(ManyTries))
    provision(app, ["default", "retries"])
    assert int(redrive(app, "default")["maxReceiveCount"]) == 10
    assert int(redrive(app, "retries")["maxReceiveCount"]) == 26
    assert redrive(app, "retries")["deadLetterTargetArn"].endswith(f"{prefix}retries-dlq")
    ttl = aws.client("dynamodb").describe_time_to_live(TableName="sqsjobs")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"
    provision(app, ["default"])  # idempotent


def test_check_names_each_problem_and_the_setting_to_change(moto: None, prefix: str) -> None:
    sqs = aws.client("sqs")
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], max_receive_count=5, registry=only(ManyTries))
    sqs.create_queue(QueueName=f"{prefix}default")
    provision(app, ["retries"], table=False, bucket=False)
    dlq_arn = json.loads(
        sqs.get_queue_attributes(QueueUrl=queue_url(app, "retries"), AttributeNames=["RedrivePolicy"])["Attributes"][
            "RedrivePolicy"
        ]
    )["deadLetterTargetArn"]
    sqs.set_queue_attributes(
        QueueUrl=queue_url(app, "retries"),
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
            "VisibilityTimeout": "30",
        },
    )
    found = [(p.queue, p.severity, p.problem, p.fix) for p in check(app, ["default", "retries", "ghost"])]

    def has(queue: str, severity: str, text: str) -> bool:
        return any(q == queue and s == severity and text in problem for q, s, problem, _ in found)

    assert has("default", "error", "no dead-letter queue")
    assert has("retries", "error", "maxReceiveCount 5 does not exceed the largest tries (25, provision.many-tries)")
    assert has("retries", "warning", "provision.many-tries.timeout 300s exceeds the visibility timeout 30s")
    assert has("ghost", "error", "does not exist")
    assert all(fix for *_, fix in found)


def test_check_and_provision_from_the_cli(moto: None, prefix: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", prefix)
    monkeypatch.setenv("SQSJOBS_QUEUES", "default")
    aws.client("sqs").create_queue(QueueName=f"{prefix}default")
    runner = CliRunner()
    failing = runner.invoke(cli, ["check", "--queue", "default"], terminal_width=200)
    assert failing.exit_code == 1 and "no dead-letter queue" in failing.output
    assert runner.invoke(cli, ["provision", "--queue", "default"]).exit_code == 0
    passing = runner.invoke(cli, ["check", "--queue", "default"], terminal_width=200)
    assert passing.exit_code == 0, passing.output


def test_the_payload_backstop_only_covers_our_prefix_and_keeps_a_shared_buckets_rules(moto: None) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="shared-bucket")
    theirs = {"ID": "their-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 7}}
    s3.put_bucket_lifecycle_configuration(Bucket="shared-bucket", LifecycleConfiguration={"Rules": [theirs]})
    app = App(connection="sqs", bucket="shared-bucket")
    provision(app, [], table=False)
    provision(app, [], table=False)  # running it again changes nothing
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket="shared-bucket")["Rules"]}
    assert set(rules) == {"their-logs", "sqsjobs-backstop"}
    assert rules["sqsjobs-backstop"]["Filter"] == {"Prefix": "sqsjobs/"}
    assert rules["sqsjobs-backstop"]["Expiration"] == {"Days": 30}

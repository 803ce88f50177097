"""Create what the settings name — queues with DLQs, the table, the bucket — and check it.

`provision` is idempotent: run it again after adding a queue or raising a job's
tries and it only changes what must change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError

from . import aws
from .app import App
from .errors import ConfigurationError
from .payloads import PAYLOAD_PREFIX
from .timing import MAX_VISIBILITY_SECONDS

_FOURTEEN_DAYS = 1_209_600


def known_queues(app: App, extra: list[str] | None = None) -> list[str]:
    """Logical queues from the settings, the registered jobs and `extra`, in that order."""
    names = list(app.settings.queues)
    for cls in app.registry:
        names.append(app.queue_for(cls, None))
    names.extend(extra or [])
    return list(dict.fromkeys(names))


def largest_tries(app: App, queue: str) -> tuple[int, str]:
    """The highest `tries` among jobs on `queue` (and which job), defaulting to the settings."""
    best, who = app.settings.tries, "SQSJOBS_TRIES"
    for cls in app.registry:
        tries = cls.tries or app.settings.tries
        if app.queue_for(cls, None) == queue and tries > best:
            best, who = tries, cls.job_name
    return best, who


def provision(
    app: App,
    queues: list[str] | None = None,
    *,
    report: Callable[[str], None] = lambda _: None,
    table: bool = True,
    bucket: bool = True,
) -> None:
    """Create (or update) every queue with its DLQ and redrive policy, the table and the bucket."""
    sqs = aws.client("sqs")
    for queue in queues or known_queues(app):
        physical = app.settings.physical_queue_name(queue)
        if physical.startswith(("https://", "http://")):
            report(f"queue {queue}: mapped to a URL, not created")
            continue
        fifo = physical.endswith(".fifo")
        base_attrs = {"FifoQueue": "true"} if fifo else {}
        dlq_url = sqs.create_queue(
            QueueName=app.settings.dlq_name(physical),
            Attributes={**base_attrs, "MessageRetentionPeriod": str(_FOURTEEN_DAYS)},
        )["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        tries, _ = largest_tries(app, queue)
        max_receive = max(app.settings.max_receive_count, tries + 1)
        url = sqs.create_queue(QueueName=physical, Attributes=base_attrs)["QueueUrl"]
        sqs.set_queue_attributes(
            QueueUrl=url,
            Attributes={
                "VisibilityTimeout": str(app.settings.visibility_timeout),
                "MessageRetentionPeriod": str(_FOURTEEN_DAYS),
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}),
            },
        )
        report(
            f"queue {queue}: {physical} (visibility {app.settings.visibility_timeout}s, "
            f"DLQ {app.settings.dlq_name(physical)}, maxReceiveCount {max_receive})"
        )
    if table:
        _provision_table(app, report)
    if bucket:
        _provision_bucket(app, report)


def _provision_table(app: App, report: Callable[[str], None]) -> None:
    ddb = aws.client("dynamodb")
    try:
        ddb.create_table(
            TableName=app.settings.table,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        ddb.get_waiter("table_exists").wait(TableName=app.settings.table, WaiterConfig={"Delay": 1})
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    if not _ttl_enabled(ddb, app.settings.table):
        ddb.update_time_to_live(
            TableName=app.settings.table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
        )
    report(f"table {app.settings.table}: pk/sk, TTL on expires_at")


def _ttl_enabled(ddb: object, table: str) -> bool:
    status = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]  # type: ignore[attr-defined]
    return bool(status.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"))


def _provision_bucket(app: App, report: Callable[[str], None]) -> None:
    s3 = aws.client("s3")
    bucket = app.settings.bucket
    region = aws.region()
    try:
        if region in (None, "us-east-1"):
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code == "BucketAlreadyExists":
            # Bucket names are global: this one belongs to another AWS account. Never write job
            # payloads into someone else's bucket.
            raise ConfigurationError(
                f"the S3 bucket name {bucket!r} is taken by another AWS account; set SQSJOBS_BUCKET to a "
                "name of your own (e.g. with your account id in it)"
            ) from None
        if code != "BucketAlreadyOwnedByYou":
            raise
    # Objects outlive their messages only when something went wrong. A job can spend up to
    # 14 days on its queue and, as a fresh DLQ copy, 14 more in the DLQ: 30 days covers both.
    # Only our prefix, and other rules of a shared bucket are kept (the call replaces them all).
    ours = {
        "ID": "sqsjobs-backstop",
        "Status": "Enabled",
        "Filter": {"Prefix": PAYLOAD_PREFIX},
        "Expiration": {"Days": 30},
    }
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    rules = [rule for rule in rules if rule.get("ID") != ours["ID"]] + [ours]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    report(f"bucket {bucket}: lifecycle backstop 30 days on {PAYLOAD_PREFIX}")


@dataclass(slots=True)
class Problem:
    """One mismatch between settings, jobs and a real queue, with what to change."""

    queue: str
    severity: str
    problem: str
    fix: str


def check(app: App, queues: list[str] | None = None) -> list[Problem]:
    """Compare the settings and job classes with the queues as they really are."""
    problems: list[Problem] = []
    connection = app.connection
    for queue in queues or known_queues(app):
        try:
            info = connection.queue_info(queue)
        except ConfigurationError as exc:
            problems.append(Problem(queue, "error", str(exc), "sqsjobs provision, or SQSJOBS_QUEUES"))
            continue
        if info.dlq_url is None:
            problems.append(
                Problem(
                    queue,
                    "error",
                    "no dead-letter queue: failed jobs would be lost",
                    "attach a RedrivePolicy (sqsjobs provision does)",
                )
            )
        tries, who = largest_tries(app, queue)
        if info.max_receive_count is not None and info.max_receive_count <= tries:
            problems.append(
                Problem(
                    queue,
                    "error",
                    f"maxReceiveCount {info.max_receive_count} does not exceed the largest tries ({tries}, {who}): "
                    "the redrive policy would move a job to the DLQ before sqsjobs records why",
                    f"raise RedrivePolicy.maxReceiveCount above {tries} (SQSJOBS_MAX_RECEIVE_COUNT, then provision)",
                )
            )
        for cls in app.registry:
            if app.queue_for(cls, None) != queue:
                continue
            timeout = cls.timeout or app.settings.timeout
            if timeout >= MAX_VISIBILITY_SECONDS:
                problems.append(
                    Problem(
                        queue,
                        "error",
                        f"{cls.job_name}.timeout {timeout:g}s reaches the 12-hour SQS visibility limit",
                        f"lower {cls.job_name}.timeout",
                    )
                )
            elif timeout > info.visibility_timeout:
                problems.append(
                    Problem(
                        queue,
                        "warning",
                        f"{cls.job_name}.timeout {timeout:g}s exceeds the visibility timeout "
                        f"{info.visibility_timeout}s: the poller's heartbeat covers it, a Lambda consumer does not",
                        "raise VisibilityTimeout (SQSJOBS_VISIBILITY_TIMEOUT) if Lambda consumes this queue",
                    )
                )
            if info.fifo and cls.delay:
                problems.append(
                    Problem(
                        queue,
                        "error",
                        f"{cls.job_name} has a delay but {queue} is FIFO, where SQS refuses per-message delays",
                        f"remove {cls.job_name}.delay",
                    )
                )
    if app.settings.max_delay_hop < 900:
        problems.append(
            Problem(
                "*",
                "warning",
                f"SQSJOBS_MAX_DELAY_HOP is {app.settings.max_delay_hop}s: long delays cost more hops than needed",
                "unset it outside tests",
            )
        )
    return problems

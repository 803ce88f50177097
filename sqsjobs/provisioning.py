"""Create what the settings name — queues with DLQs, the table, the bucket — and check it.

`provision` is idempotent: run it again after adding a queue or raising a job's
tries and it only changes what must change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import aws, policy
from .app import App
from .connections.base import QueueInfo
from .errors import ConfigurationError
from .settings import Settings
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
        "Filter": {"Prefix": app.settings.payload_prefix},
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
    report(f"bucket {bucket}: lifecycle backstop 30 days on {app.settings.payload_prefix or '(the whole bucket)'}")


@dataclass(slots=True)
class Problem:
    """One mismatch between settings, jobs and a real queue, with what to change."""

    queue: str
    severity: str
    problem: str
    fix: str


def check(
    app: App, queues: list[str] | None = None, *, report: Callable[[str], None] = lambda _: None
) -> list[Problem]:
    """Compare the settings and job classes with the queues as they really are, and with the Lambda
    functions that consume them (found through the queues' event source mappings)."""
    problems: list[Problem] = []
    connection = app.connection
    functions_seen: set[str] = set()
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
            timeout = policy.timeout(cls.timeout, None, app.settings.timeout)
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
        if connection.name == "sqs":
            problems.extend(_lambda_consumers(app, queue, info, functions_seen, report))
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


#: AWS: "set the source queue's visibility timeout to at least six times the configuration timeout on
#: your function", so a throttled batch can be retried before its records turn visible again (Lambda
#: developer guide, "Creating and configuring an Amazon SQS event source mapping").
_LAMBDA_VISIBILITY_FACTOR = 6


def _lambda_consumers(
    app: App, queue: str, info: QueueInfo, functions_seen: set[str], report: Callable[[str], None]
) -> list[Problem]:
    """The functions an event source mapping feeds `queue` to, and whether its jobs fit them."""
    try:
        arn = aws.client("sqs").get_queue_attributes(QueueUrl=info.url, AttributeNames=["QueueArn"])["Attributes"]
        lam = aws.client("lambda")
        mappings: list[dict[str, Any]] = []
        for page in lam.get_paginator("list_event_source_mappings").paginate(EventSourceArn=arn["QueueArn"]):
            mappings.extend(page.get("EventSourceMappings", []))
        functions = {m["FunctionArn"]: lam.get_function_configuration(FunctionName=m["FunctionArn"]) for m in mappings}
    except (ClientError, BotoCoreError) as exc:
        code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
        return [
            Problem(
                queue,
                "warning",
                f"could not read which Lambda functions consume this queue ({code}): their timeouts were not checked",
                "allow lambda:ListEventSourceMappings and lambda:GetFunctionConfiguration to whoever runs check",
            )
        ]
    problems: list[Problem] = []
    for mapping in mappings:
        function = functions[mapping["FunctionArn"]]
        problems.extend(lambda_fit(app, queue, info, mapping, function, mapping["FunctionArn"] not in functions_seen))
        functions_seen.add(mapping["FunctionArn"])
        report(
            f"queue {queue}: consumed by Lambda {function.get('FunctionName')} (timeout {function.get('Timeout')}s, "
            f"batching window {mapping.get('MaximumBatchingWindowInSeconds') or 0}s, mapping {mapping.get('State')})"
        )
    return problems


def lambda_fit(
    app: App, queue: str, info: QueueInfo, mapping: dict[str, Any], function: dict[str, Any], first: bool = True
) -> list[Problem]:
    """What the handler and the mapping would do with this queue's jobs: refuse to start, hand a job back
    unstarted on every delivery, run a record twice, or lose a release. `first`: the function's own
    settings are judged once, not once per queue it consumes."""
    name = function.get("FunctionName") or mapping["FunctionArn"]
    budget = float(function.get("Timeout") or 3)  # Lambda's default timeout is 3 s
    window = int(mapping.get("MaximumBatchingWindowInSeconds") or 0)
    env = (function.get("Environment") or {}).get("Variables") or {}
    problems: list[Problem] = []

    def add(severity: str, problem: str, fix: str) -> None:
        problems.append(Problem(queue, severity, f"Lambda {name}: {problem}", fix))

    try:
        default, where = _function_setting(env, "SQSJOBS_TIMEOUT", "timeout")
        margin, _ = _function_setting(env, "SQSJOBS_LAMBDA_DEADLINE_MARGIN", "lambda_deadline_margin")
    except ValueError as exc:
        add("error", f"{exc}: the handler fails at start-up", "set it to a number of seconds on the function")
        return problems
    if first and default + margin > budget:
        add(
            "error",
            f"SQSJOBS_TIMEOUT {default:g}s ({where}) + SQSJOBS_LAMBDA_DEADLINE_MARGIN {margin:g}s does not fit in its "
            f"timeout {budget:g}s: the handler refuses to run (every job without its own timeout would be handed "
            "back unstarted)",
            f"raise {name}'s Timeout above {default + margin:g}s, or set SQSJOBS_TIMEOUT on it below "
            f"{max(0.0, budget - margin):g}s",
        )
    for cls in app.registry:
        own = policy.timeout(cls.timeout, None, default)
        if cls.timeout and app.queue_for(cls, None) == queue and own + margin > budget:
            add(
                "error",
                f"{cls.job_name}.timeout {own:g}s + SQSJOBS_LAMBDA_DEADLINE_MARGIN {margin:g}s does not fit in its "
                f"timeout {budget:g}s: the job is handed back unstarted on every delivery",
                f"lower {cls.job_name}.timeout below {max(0.0, budget - margin):g}s, raise {name}'s Timeout above "
                f"{own + margin:g}s, or consume {queue} with the poller",
            )
    advised = _LAMBDA_VISIBILITY_FACTOR * budget + window
    if info.visibility_timeout < budget + window:
        add(
            "error",
            f"the queue's visibility timeout {info.visibility_timeout}s is below the function's timeout {budget:g}s "
            f"plus the batching window {window}s: a record still running turns visible and runs twice",
            f"raise VisibilityTimeout to {advised:g}s (SQSJOBS_VISIBILITY_TIMEOUT, then provision)",
        )
    elif info.visibility_timeout < advised:
        add(
            "warning",
            f"the queue's visibility timeout {info.visibility_timeout}s is below AWS's advice of 6 x the function's "
            f"timeout plus the batching window ({advised:g}s): records of a throttled batch turn visible again and "
            "their extra receives count as crashed attempts",
            f"raise VisibilityTimeout to {advised:g}s (SQSJOBS_VISIBILITY_TIMEOUT, then provision)",
        )
    if "ReportBatchItemFailures" not in (mapping.get("FunctionResponseTypes") or []):
        add(
            "error",
            "the event source mapping does not report batch item failures: Lambda ignores the handler's "
            "batchItemFailures and deletes released and handed-back records with their batch",
            "set FunctionResponseTypes to [ReportBatchItemFailures] on the mapping",
        )
    return problems


def _function_setting(env: dict[str, str], variable: str, field: str) -> tuple[float, str]:
    """A setting as the function sees it: its own environment, else sqsjobs' default (not this shell's)."""
    raw = env.get(variable)
    if raw is None:
        return float(Settings.model_fields[field].default), "the default: not set on the function"
    try:
        return float(raw), "set on the function"
    except ValueError:
        raise ValueError(f"{variable}={raw!r} on the function is not a number") from None

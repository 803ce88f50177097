"""The Lambda adapter against queues in moto, with real-shaped SQS events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import ClassVar

import pytest

from lambda_handlers.sqs import SqsHandler
from sqsjobs import App, Job, PermanentError, aws
from sqsjobs.provisioning import provision
from tests.helpers import counts, dead_letters, queue_url, wait_for
from tests.lambda_events import FakeContext, deliver, failed_ids, receive_event, template


class Seen(Job, abstract=True):
    runs: ClassVar[list[tuple[str, int]]] = []

    def handle(self) -> None:
        Seen.runs.append((type(self).job_name, self.attempts))


class Fine(Seen, name="lambda.fine"):
    timeout = 5
    n: int = 0


class Flaky(Seen, name="lambda.flaky"):
    backoff = 2

    def handle(self) -> None:
        super().handle()
        raise ConnectionError("try later")


class Refused(Seen, name="lambda.refused"):
    def handle(self) -> None:
        super().handle()
        raise PermanentError("not allowed")


class Long(Seen, name="lambda.long"):
    timeout = 60


class Ordered(Seen, name="lambda.ordered"):
    queue = "orders.fifo"
    stage: str
    broken: bool = False

    def handle(self) -> None:
        super().handle()
        if self.broken:
            raise RuntimeError(f"step {self.step} failed")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Seen.runs.clear()


@pytest.fixture
def handler(sqs_app: App) -> SqsHandler:
    return SqsHandler(sqs_app)


def test_ack_release_and_fail_map_to_partial_batch_responses(sqs_app: App, handler: SqsHandler) -> None:
    ok = Fine().dispatch()
    flaky = Flaky().dispatch()
    Refused().dispatch()
    event = receive_event(sqs_app, "default")
    ids = {json.loads(r["body"])["id"]: r["messageId"] for r in event["Records"]}
    response = deliver(handler, sqs_app, "default", event)
    assert failed_ids(response) == [ids[flaky.job_id]]
    assert sorted(Seen.runs) == [("lambda.fine", 1), ("lambda.flaky", 1), ("lambda.refused", 1)]
    (letter,) = dead_letters(sqs_app)
    assert letter["attrs"]["sqsjobs.reason"] == "permanent" and letter["attrs"]["sqsjobs.job"] == "lambda.refused"
    # The mapping deleted the successes; only the released record is left, hidden for its backoff.
    assert ok.job_id in ids
    assert counts(sqs_app, "default") == {
        "ApproximateNumberOfMessages": 0,
        "ApproximateNumberOfMessagesNotVisible": 1,
        "ApproximateNumberOfMessagesDelayed": 0,
    }
    # The released record comes back after its backoff (2 s), not after the 30 s visibility timeout.
    again = wait_for(lambda: receive_event(sqs_app, "default")["Records"], timeout=6, what="the released record")
    assert (
        json.loads(again[0]["body"])["id"] == flaky.job_id and again[0]["attributes"]["ApproximateReceiveCount"] == "2"
    )


def test_a_body_that_is_not_a_job_goes_to_the_dlq_and_is_not_retried(sqs_app: App, handler: SqsHandler) -> None:
    shape = template("sqs_bad_body.json")["Records"][0]
    aws.client("sqs").send_message(
        QueueUrl=queue_url(sqs_app, "default"),
        MessageBody=shape["body"],
        MessageAttributes={"source": {"DataType": "String", "StringValue": "legacy-system"}},
    )
    event = receive_event(sqs_app, "default", "sqs_bad_body.json")
    assert handler(event, FakeContext()) == {"batchItemFailures": []}
    (letter,) = dead_letters(sqs_app)
    assert letter["Body"] == shape["body"] and letter["attrs"]["sqsjobs.reason"] == "malformed"


def test_attempts_come_from_the_records_receive_count(sqs_app: App, handler: SqsHandler) -> None:
    Fine().dispatch()
    event = receive_event(sqs_app, "default")
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = "4"
    assert handler(event, FakeContext()) == {"batchItemFailures": []}
    assert Seen.runs == []
    assert dead_letters(sqs_app)[0]["attrs"]["sqsjobs.reason"] == "tries_exhausted"


def test_records_that_would_outlive_the_invocation_are_handed_back_unrun(moto: None, prefix: str) -> None:
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, timeout=20)
    provision(app, ["default"], table=False, bucket=False)
    with app.activate():
        Long().dispatch()
        Fine().dispatch()
    event = receive_event(app, "default")
    response = deliver(SqsHandler(app), app, "default", event, FakeContext(remaining_s=30, started_s=300))
    # The long job's copy (carrying its runs so far) is on the queue, so its record may be deleted.
    assert failed_ids(response) == []
    assert Seen.runs == [("lambda.fine", 1)]
    # Handed back visible at once, not after the 30 s visibility timeout.
    assert counts(app, "default")["ApproximateNumberOfMessages"] == 1
    (again,) = receive_event(app, "default")["Records"]
    assert json.loads(again["body"])["job"] == "lambda.long"


@pytest.mark.parametrize("skip_group", [False, True])
def test_fifo_failure_holds_back_the_batch_or_only_its_group(moto: None, prefix: str, skip_group: bool) -> None:
    app = App(connection="sqs", queue_prefix=prefix, lambda_fifo_skip_group=skip_group)
    provision(app, ["orders.fifo"], table=False, bucket=False)
    with app.activate():
        Ordered(stage="a1", broken=True).dispatch(group="a")
        Ordered(stage="b1").dispatch(group="b")
        Ordered(stage="a2").dispatch(group="a")
    event = receive_event(app, "orders.fifo", "sqs_fifo.json")
    order = [json.loads(r["body"])["payload"]["stage"] for r in event["Records"]]
    assert order[0] == "a1"
    response = SqsHandler(app)(event, FakeContext())
    steps = {r["messageId"]: json.loads(r["body"])["payload"]["stage"] for r in event["Records"]}
    failed_steps = sorted(steps[i] for i in failed_ids(response))
    ran = list(Seen.runs)
    if skip_group:
        assert failed_steps == sorted(s for s in order if s.startswith("a"))
        assert len(ran) == 2  # a1 (failed) and b1
    else:
        assert failed_steps == sorted(order)
        assert len(ran) == 1  # only a1 ran; everything after it waits, in order


def test_the_handler_module_imports_nothing_it_does_not_use() -> None:
    """Cold starts pay for every import: not the CLI, not the poller, not moto, not `check`'s code."""
    heavy = ("typer", "rich", "click", "moto", "aiobotocore", "aiohttp", "sqsjobs.cli", "sqsjobs.local")
    heavy += ("sqsjobs.worker", "sqsjobs.provisioning")
    # boto3 and cryptography load in the init phase or on the first event that needs them, not with the
    # module: outside Lambda (tests, scripts) an import runs nothing. (make bench's lambda_import_ratio imports
    # boto3 on both sides, so this is not what keeps that ratio down.)
    heavy += ("boto3", "cryptography", "sqsjobs.executors")
    code = (
        "import sys, lambda_handlers.sqs; "
        f"heavy = {heavy!r}; "
        "print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


_INVOKE_ONCE = """
import sys
import boto3
from moto import mock_aws

with mock_aws():
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="default")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    from lambda_handlers.sqs import SqsHandler
    from sqsjobs import App, Job

    class Hello(Job, name="cold.hello"):
        def handle(self) -> None:
            pass

    app = App(connection="sqs", queues=["default"])
    with app.activate():
        Hello().dispatch()
    m = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["All"])["Messages"][0]
    record = {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
              "attributes": m["Attributes"], "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": arn}
    assert SqsHandler(app)({"Records": [record]}, None) == {"batchItemFailures": []}
    heavy = HEAVY
    print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy)))
"""


def test_running_a_record_imports_nothing_the_handler_does_not_use() -> None:
    """What a first record pulls in counts too: the runner must not reach for the poller or the CLI."""
    heavy = ("typer", "rich", "click", "aiobotocore", "sqsjobs.cli", "sqsjobs.local", "sqsjobs.worker")
    heavy += ("sqsjobs.provisioning",)
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    code = _INVOKE_ONCE.replace("HEAVY", repr(heavy))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_metrics_are_emf_per_job_when_a_namespace_is_set(
    sqs_app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "sqsjobs-test")
    from lambda_handlers import observability

    observability.install(sqs_app)
    Fine().dispatch()
    Refused().dispatch()
    SqsHandler(sqs_app)(receive_event(sqs_app, "default"), FakeContext())
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    # One document per queue and job per invocation, every count in it (zeros too, so rates have no gaps).
    counted = sorted((d["job"], d["processed"], d["failed"], d["released"]) for d in documents)
    assert counted == [("lambda.fine", 1, 0, 0), ("lambda.refused", 0, 1, 0)]
    assert all(d["queue"] == "default" and d["runtime"] >= 0 for d in documents)  # one run each: one value
    directives = [d["_aws"]["CloudWatchMetrics"][0] for d in documents]
    assert all(m["Namespace"] == "sqsjobs-test" for m in directives)
    assert all(m["Dimensions"] == [["queue"], ["queue", "job"]] for m in directives)


def test_powertools_logger_carries_the_job_keys_when_a_service_is_set(
    sqs_app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "billing")
    from lambda_handlers import observability

    observability.install(sqs_app)
    job_id = Fine().dispatch().job_id
    SqsHandler(sqs_app)(receive_event(sqs_app, "default"), FakeContext())
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("job_id") == job_id]
    assert [line["message"] for line in mine] == ["job processed"]
    assert all(line["service"] == "billing" and line["correlation_id"] == job_id for line in mine)
    assert mine[0]["outcome"] == "processed" and mine[0]["job"] == "lambda.fine" and mine[0]["attempt"] == 1
    assert mine[0]["dispatched_at"].endswith("Z") and "wait_ms" in mine[0]

"""`sqsjobs failed redrive`: a DLQ moved back to its queue in bulk -- by SQS's message move task where the
endpoint has one, by sqsjobs' own batched move where it has not (moto) -- and `--status` / `--cancel`.

In-process moto through the strict-rules layer. moto has no message move tasks, so the real-AWS path is
tested by answering StartMessageMoveTask / ListMessageMoveTasks / CancelMessageMoveTask from botocore's
`before-call` event, as AWS would answer them, and reading the parameters we sent.
"""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any, ClassVar

import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from sqsjobs import App, Job, aws
from sqsjobs.cli import cli
from sqsjobs.cli import failed_redrive as redrive_cli
from sqsjobs.dispatch_plan import build_message
from sqsjobs.failed_jobs import FailedJobs
from sqsjobs.failures import PREFIX
from sqsjobs.provisioning import provision
from sqsjobs.redrive import NO_MOVE_TASKS, move, redrivable
from sqsjobs.testing import sqs_move_rules
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import dlq_url, drain, queue_url, sqs_requests

KEY = "failed-redrive-" + "k" * 40
HANDLE = "AQEB-task-handle-of-the-test"


class Fragile(Job, name="redrive.fragile"):
    tries = 1
    fixed: ClassVar[bool] = False
    runs: ClassVar[list[str]] = []
    n: int = 0
    data: str = ""

    def handle(self) -> None:
        Fragile.runs.append(self.job_id or "")
        if not Fragile.fixed:
            raise RuntimeError(f"fragile {self.n}")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Fragile.fixed = False
    Fragile.runs = []


def invoke(*args: str, **kwargs: Any) -> Any:
    """The CLI, with the `sqsjobs` logger put back afterwards (a worker run later in the test logs again)."""
    logger = logging.getLogger("sqsjobs")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    try:
        return CliRunner().invoke(cli, list(args), terminal_width=250, **kwargs)
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


def point_cli(monkeypatch: pytest.MonkeyPatch, app: App, queues: str = "default,high") -> None:
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", app.settings.queue_prefix)
    monkeypatch.setenv("SQSJOBS_QUEUES", queues)
    monkeypatch.setenv("SQSJOBS_APP", __name__)


@pytest.fixture
def app(sqs_app: App, monkeypatch: pytest.MonkeyPatch) -> App:
    point_cli(monkeypatch, sqs_app)
    return sqs_app


def work(app: App, queue: str = "default") -> None:
    options = WorkerOptions(queues=[queue], sleep=1, stop_when_empty=True)
    assert Worker(app, options).run(install_signals=False) == 0


def fail(app: App, count: int, queue: str | None = None) -> list[str]:
    ids = [str(Fragile(n=i).dispatch(queue=queue).job_id) for i in range(count)]
    work(app, queue or "default")
    return ids


def depth(url: str) -> int:
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def peek(url: str) -> list[dict[str, Any]]:
    """Every message of a (shallow) queue, left visible."""
    out = drain(url)
    for message in out:
        aws.client("sqs").change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    return out


def arn(url: str) -> str:
    attrs = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


def answer(operation: str, parsed: dict[str, Any], status: int = 200) -> list[dict[str, Any]]:
    """Answer `operation` as AWS would, from botocore's before-call event; the parameters of each call."""
    seen = sqs_requests(operation)

    def respond(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        meta = {"HTTPStatusCode": status, "RequestId": "test", "HTTPHeaders": {}, "RetryAttempts": 0}
        return AWSResponse("https://sqs.invalid/", status, HTTPHeaders(), None), {**parsed, "ResponseMetadata": meta}

    aws.client("sqs").meta.events.register(f"before-call.sqs.{operation}", respond)
    return seen


# -- sqsjobs' own move, where the endpoint has no message move tasks (moto) ---------------------------


def test_redrive_on_moto_says_so_moves_every_dlq_message_back_and_the_worker_runs_them(app: App) -> None:
    ids = fail(app, 3)
    assert depth(dlq_url(app, "default")) == 3

    result = invoke("failed", "redrive", "--yes")

    assert result.exit_code == 0, result.output
    assert NO_MOVE_TASKS in result.stderr
    assert "default: moved 3 message(s) back from its DLQ." in result.stdout
    assert depth(dlq_url(app, "default")) == 0
    assert depth(queue_url(app, "default")) == 3
    Fragile.fixed = True
    Fragile.runs = []
    work(app)
    assert sorted(Fragile.runs) == sorted(ids)
    assert depth(dlq_url(app, "default")) == 0 and depth(queue_url(app, "default")) == 0


def test_redrive_moves_messages_as_they_are_attributes_kept_as_a_real_redrive_does(app: App) -> None:
    fail(app, 2)
    before = {m["Body"]: m for m in peek(dlq_url(app, "default"))}
    assert all(PREFIX + "reason" in m["MessageAttributes"] for m in before.values())

    assert invoke("failed", "redrive", "--yes").exit_code == 0

    after = drain(queue_url(app, "default"))
    assert sorted(m["Body"] for m in after) == sorted(before)
    for message in after:
        original = before[message["Body"]]
        assert message["MessageAttributes"] == original["MessageAttributes"]
        assert message["MessageId"] != original["MessageId"], "a new message, as a redriven one is"
        assert message["Attributes"]["ApproximateReceiveCount"] == "1"


def test_a_job_that_fails_again_after_a_redrive_gets_a_fresh_reason_not_the_old_one(app: App) -> None:
    [job_id] = fail(app, 1)
    assert invoke("failed", "redrive", "--yes").exit_code == 0
    work(app)  # still broken: it fails again, and the worker writes the DLQ copy anew
    [job] = FailedJobs(app).list()
    assert job.id == job_id and job.reason == "tries_exhausted" and job.copies == 1
    assert not job.unverified


def test_without_yes_on_a_stdin_that_is_no_terminal_it_refuses_and_moves_nothing(app: App) -> None:
    fail(app, 2)
    result = invoke("failed", "redrive")
    assert result.exit_code == 2, result.output
    assert "add --yes" in result.stderr and "2 DLQ message(s) (default: 2)" in result.stderr
    assert depth(dlq_url(app, "default")) == 2 and depth(queue_url(app, "default")) == 0


def test_it_asks_with_the_depths_and_a_no_moves_nothing(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    fail(app, 2)
    fail(app, 1, queue="high")
    monkeypatch.setattr(redrive_cli, "_interactive", lambda: True)
    declined = invoke("failed", "redrive", input="n\n")
    assert declined.exit_code == 1, declined.output
    assert "Move 3 DLQ message(s) (default: 2, high: 1) back to their queues, as they are?" in declined.output
    assert "Nothing moved." in declined.output
    assert depth(dlq_url(app, "default")) == 2 and depth(dlq_url(app, "high")) == 1

    accepted = invoke("failed", "redrive", "--queue", "high", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "(high: 1)" in accepted.output
    assert depth(dlq_url(app, "high")) == 0 and depth(dlq_url(app, "default")) == 2, "only --queue high"


def test_empty_dlqs_are_nothing_to_redrive_and_nothing_is_asked(app: App) -> None:
    result = invoke("failed", "redrive")
    assert result.exit_code == 0, result.output
    assert "Nothing to redrive: the DLQs are empty." in result.stdout


def test_a_dlq_two_queues_share_is_not_redriven(app: App) -> None:
    fail(app, 1)
    policy = json.dumps({"deadLetterTargetArn": arn(dlq_url(app, "default")), "maxReceiveCount": "5"})
    aws.client("sqs").set_queue_attributes(QueueUrl=queue_url(app, "high"), Attributes={"RedrivePolicy": policy})
    result = invoke("failed", "redrive", "--yes")
    assert result.exit_code == 1, result.output
    assert "Not redriven: default: its DLQ is also the DLQ of high" in result.stderr
    assert "`sqsjobs failed retry --queue default`" in result.stderr
    assert depth(dlq_url(app, "default")) == 1


def test_a_dlq_another_apps_queue_shares_is_not_redriven(app: App, prefix: str) -> None:
    """A queue this app does not know (another app's) also redrives into the DLQ: SQS says so, and its jobs
    must not be sent into this queue."""
    fail(app, 1)
    sqs = aws.client("sqs")
    foreign = sqs.create_queue(QueueName=f"{prefix}billing")["QueueUrl"]
    policy = json.dumps({"deadLetterTargetArn": arn(dlq_url(app, "default")), "maxReceiveCount": "5"})
    sqs.set_queue_attributes(QueueUrl=foreign, Attributes={"RedrivePolicy": policy})
    result = invoke("failed", "redrive", "--yes")
    assert result.exit_code == 1, result.output
    assert f"its DLQ is also the DLQ of {prefix}billing" in result.stderr
    assert depth(dlq_url(app, "default")) == 1


@pytest.mark.parametrize("rate", ["0", "501"])
def test_a_rate_outside_sqs_1_to_500_is_a_usage_error(app: App, rate: str) -> None:
    fail(app, 1)
    result = invoke("failed", "redrive", "--rate", rate, "--yes")
    assert result.exit_code == 2, result.output
    assert depth(dlq_url(app, "default")) == 1


def test_options_that_do_not_go_together_are_usage_errors(app: App) -> None:
    for args in (("--status", "--cancel"), ("--status", "--rate", "5"), ("--json",), ("--cancel", "--json")):
        assert invoke("failed", "redrive", *args).exit_code == 2, args


def test_a_named_queue_that_does_not_exist_is_a_configuration_error(app: App) -> None:
    result = invoke("failed", "redrive", "--queue", "ghost", "--yes")
    assert result.exit_code == 2, result.output
    assert "'ghost'" in result.output and "sqsjobs provision" in result.output


def test_the_own_move_keeps_to_the_rate(app: App) -> None:
    fail(app, 5)
    [target], _ = redrivable(app, ["default"])
    now = [0.0]
    slept: list[float] = []
    sizes: list[int] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    result = move(target, rate=2, clock=lambda: now[0], sleep=sleep, on_moved=sizes.append)

    assert result.moved == 5 and not result.refused and not result.stopped
    assert sizes == [2, 2, 1], "batches no larger than a second's worth"
    assert slept == [1.0, 1.0], "2 a second: the second and third batch wait"
    assert depth(dlq_url(app, "default")) == 0


def test_a_message_sqs_does_not_take_stays_in_the_dlq(app: App) -> None:
    fail(app, 2)
    entries: list[dict[str, Any]] = []

    def keep(params: dict[str, Any], **_: Any) -> None:
        entries[:] = params["Entries"]

    def refuse_each(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        failed = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "try again"} for e in entries
        ]
        meta = {"HTTPStatusCode": 200, "RequestId": "test", "HTTPHeaders": {}, "RetryAttempts": 0}
        parsed = {"Successful": [], "Failed": failed, "ResponseMetadata": meta}
        return AWSResponse("https://sqs.invalid/", 200, HTTPHeaders(), None), parsed

    aws.client("sqs").meta.events.register("provide-client-params.sqs.SendMessageBatch", keep)
    aws.client("sqs").meta.events.register("before-call.sqs.SendMessageBatch", refuse_each)
    result = invoke("failed", "redrive", "--yes")
    assert result.exit_code == 1, result.output
    assert result.stderr.count("Not moved: default: message") == 2 and "InternalError: try again" in result.stderr
    assert depth(dlq_url(app, "default")) == 2 and depth(queue_url(app, "default")) == 0


def test_a_delete_that_fails_after_the_send_leaves_a_duplicate_never_a_loss(app: App) -> None:
    fail(app, 2)
    answer("DeleteMessageBatch", {"Error": {"Code": "InternalError", "Message": "boom"}}, status=500)
    result = invoke("failed", "redrive", "--yes")
    assert result.exit_code == 1, result.output
    assert "2 message(s) were sent back but are still in the DLQ too" in result.stderr
    assert "Stopped: default:" in result.stderr
    assert depth(queue_url(app, "default")) == 2 and depth(dlq_url(app, "default")) == 2


def test_an_offloaded_body_moves_as_its_pointer_keeps_its_object_and_runs(
    s3_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_cli(monkeypatch, s3_app, queues="default")
    [job_id] = fail(s3_app, 1)
    [copy] = peek(dlq_url(s3_app, "default"))
    assert copy["Body"].startswith('["software.amazon.payloadoffloading.PayloadS3Pointer"')
    s3 = aws.client("s3")
    objects = s3.list_objects_v2(Bucket=s3_app.settings.bucket).get("Contents", [])
    assert len(objects) == 1

    result = invoke("failed", "redrive", "--yes")

    assert result.exit_code == 0, result.output
    # (a receive would count as a run: the pointer's move as it is is checked by the attributes test above)
    assert depth(dlq_url(s3_app, "default")) == 0 and depth(queue_url(s3_app, "default")) == 1
    assert s3.list_objects_v2(Bucket=s3_app.settings.bucket)["Contents"] == objects, "the object is not touched"
    Fragile.fixed = True
    Fragile.runs = []
    work(s3_app)
    assert Fragile.runs == [job_id]


def test_a_fifo_queue_gets_its_messages_back_in_their_group(
    moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fifo_app = App(connection="sqs", queue_prefix=prefix, queues=["orders.fifo"], visibility_timeout=30)
    provision(fifo_app, ["orders.fifo"], table=False, bucket=False)
    point_cli(monkeypatch, fifo_app, queues="orders.fifo")
    sqs = aws.client("sqs")
    for n in range(3):
        sqs.send_message(
            QueueUrl=dlq_url(fifo_app, "orders.fifo"),
            MessageBody=f"body {n}",
            MessageGroupId="failed",
            MessageDeduplicationId=f"d{n}",
        )
    result = invoke("failed", "redrive", "--yes")
    assert result.exit_code == 0, result.output
    moved = drain(queue_url(fifo_app, "orders.fifo"))
    assert [m["Body"] for m in moved] == ["body 0", "body 1", "body 2"], "in order, in their group"
    assert {m["Attributes"]["MessageGroupId"] for m in moved} == {"failed"}


def test_a_redriven_old_signed_job_is_refused_as_expired_signature(
    moto: None, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed = App(
        connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, signing_key=KEY,
        signing_max_age=300,
    )  # fmt: skip
    provision(signed, ["default"], table=False, bucket=False)
    point_cli(monkeypatch, signed, queues="default")
    monkeypatch.setenv("SQSJOBS_SIGNING_KEY", KEY)
    an_hour_ago = App(signed.settings, connection="sqs", clock=lambda: time.time() - 3600)
    _, old, message = build_message(an_hour_ago, Fragile(n=7))
    aws.client("sqs").send_message(QueueUrl=dlq_url(signed, "default"), MessageBody=message.body)
    Fragile.fixed = True

    assert invoke("failed", "redrive", "--yes").exit_code == 0
    with signed.activate():
        work(signed)

    assert Fragile.runs == []
    [job] = FailedJobs(signed).list()
    assert job.reason == "expired_signature" and old.id in job.body


# -- SQS's message move tasks (answered as AWS answers them) -----------------------------------------


def test_redrive_starts_an_sqs_move_task_from_the_dlq_to_its_queue_at_the_rate(app: App) -> None:
    fail(app, 2)
    sent = answer("StartMessageMoveTask", {"TaskHandle": HANDLE})

    result = invoke("failed", "redrive", "--queue", "default", "--rate", "50", "--yes")

    assert result.exit_code == 0, result.output
    assert sent == [
        {
            "SourceArn": arn(dlq_url(app, "default")),
            "DestinationArn": arn(queue_url(app, "default")),
            "MaxNumberOfMessagesPerSecond": 50,
        }
    ]
    assert f"default: SQS is moving about 2 message(s) back (task {HANDLE})" in result.stdout
    assert NO_MOVE_TASKS not in result.stderr
    assert depth(dlq_url(app, "default")) == 2, "SQS moves them, not sqsjobs"


def test_without_a_rate_sqs_chooses_its_pace(app: App) -> None:
    fail(app, 1)
    sent = answer("StartMessageMoveTask", {"TaskHandle": HANDLE})
    assert invoke("failed", "redrive", "--yes").exit_code == 0
    assert [set(p) for p in sent] == [{"SourceArn", "DestinationArn"}], "only the DLQ with messages"


def test_an_sqs_refusal_is_printed_and_nothing_is_moved_by_sqsjobs(app: App) -> None:
    fail(app, 1)
    running = "There is already a task running. Only one active task is allowed for a source queue arn at a given time."
    answer("StartMessageMoveTask", {"Error": {"Code": "InvalidParameterValue", "Message": running}}, status=400)
    result = invoke("failed", "redrive", "--yes")
    assert result.exit_code == 1, result.output
    assert f"Not redriven: default: SQS refused: InvalidParameterValue: {running}" in result.stderr
    assert NO_MOVE_TASKS not in result.stderr and depth(dlq_url(app, "default")) == 1


class _HtmlResponse(AWSResponse):
    """What moto's server sends for an operation it lacks: an HTML 500 page."""

    @property
    def content(self) -> bytes:
        return bytes(self.raw.getvalue())


def test_an_html_500_for_the_move_task_is_taken_as_no_move_tasks_at_once_not_retried(app: App) -> None:
    fail(app, 2)
    attempts: list[int] = []

    def html_500(**_: Any) -> AWSResponse:
        attempts.append(1)
        headers = HTTPHeaders()
        headers["Content-Type"] = "text/html; charset=utf-8"
        page = b"<!doctype html>\n<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>\n"
        return _HtmlResponse("https://sqs.invalid/", 500, headers, io.BytesIO(page))

    aws.client("sqs").meta.events.register_first("before-send.sqs.StartMessageMoveTask", html_500)
    started = time.monotonic()
    result = invoke("failed", "redrive", "--yes")
    assert result.exit_code == 0, result.output
    assert attempts == [1], "not retried with backoff"
    assert time.monotonic() - started < 5
    assert NO_MOVE_TASKS in result.stderr and depth(dlq_url(app, "default")) == 0


def test_status_prints_each_dlqs_task_as_sqs_answered(app: App) -> None:
    fail(app, 1)
    started_ms = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    task = {
        "TaskHandle": HANDLE,
        "Status": "RUNNING",
        "SourceArn": arn(dlq_url(app, "default")),
        "DestinationArn": arn(queue_url(app, "default")),
        "ApproximateNumberOfMessagesMoved": 3,
        "ApproximateNumberOfMessagesToMove": 10,
        "MaxNumberOfMessagesPerSecond": 5,
        "StartedTimestamp": started_ms,
    }
    sent = answer("ListMessageMoveTasks", {"Results": [task]})

    table = invoke("failed", "redrive", "--status", "--queue", "default")
    assert table.exit_code == 0, table.output
    assert "RUNNING" in table.stdout and "3 / 10" in table.stdout and "2026-01-01T00:00:00.000Z" in table.stdout
    assert sent == [{"SourceArn": arn(dlq_url(app, "default")), "MaxResults": 1}]

    document = invoke("failed", "redrive", "--status", "--queue", "default", "--json")
    assert document.exit_code == 0, document.output
    [row] = json.loads(document.stdout)["queues"]
    assert row["queue"] == "default" and row["dlq_depth"] == 1
    assert row["task"] == {
        "status": "RUNNING",
        "moved": 3,
        "to_move": 10,
        "rate": 5,
        "started_at": "2026-01-01T00:00:00.000Z",
        "failure_reason": None,
        "task_handle": HANDLE,
        "destination_arn": arn(queue_url(app, "default")),
    }


def test_status_shows_why_a_task_failed(app: App) -> None:
    answer(
        "ListMessageMoveTasks", {"Results": [{"Status": "FAILED", "FailureReason": "CouldNotDetermineMessageSource"}]}
    )
    result = invoke("failed", "redrive", "--status", "--queue", "high")
    assert result.exit_code == 0, result.output
    assert "FAILED" in result.stdout and "CouldNotDetermineMessageSource" in result.stdout


def test_cancel_cancels_the_running_task_and_says_how_many_had_moved(app: App) -> None:
    answer("ListMessageMoveTasks", {"Results": [{"Status": "RUNNING", "TaskHandle": HANDLE}]})
    cancelled = answer("CancelMessageMoveTask", {"ApproximateNumberOfMessagesMoved": 4})
    result = invoke("failed", "redrive", "--cancel", "--queue", "default")
    assert result.exit_code == 0, result.output
    assert cancelled == [{"TaskHandle": HANDLE}]
    assert "default: redrive cancelled; about 4 message(s) had moved, the rest stay in the DLQ." in result.stdout


def test_cancel_leaves_a_finished_task_alone(app: App) -> None:
    answer("ListMessageMoveTasks", {"Results": [{"Status": "COMPLETED"}]})
    cancelled = answer("CancelMessageMoveTask", {"ApproximateNumberOfMessagesMoved": 0})
    result = invoke("failed", "redrive", "--cancel", "--queue", "default")
    assert result.exit_code == 0 and cancelled == []
    assert "default: no redrive running (last: COMPLETED)." in result.stdout


def test_status_and_cancel_on_moto_say_there_are_no_move_tasks(app: App) -> None:
    fail(app, 1)
    status = invoke("failed", "redrive", "--status", "--json")
    assert status.exit_code == 0, status.output
    document = json.loads(status.stdout)
    assert document["move_tasks"] is False
    assert {row["queue"]: row["dlq_depth"] for row in document["queues"]} == {"default": 1, "high": 0}
    assert "no ListMessageMoveTasks" in status.stderr
    cancel = invoke("failed", "redrive", "--cancel")
    assert cancel.exit_code == 0 and "nothing to cancel" in cancel.stderr


# -- the strict rules for move tasks (sqsjobs.testing.sqs_move_rules) ---------------------------------


@pytest.fixture
def move_rules(app: App) -> App:
    """The move-task rules on the shared client, with the queues' redrive policies read once so they know the DLQs."""
    for event, handler in sqs_move_rules.HANDLERS:
        aws.client("sqs").meta.events.register(event, handler)
    for queue in ("default", "high"):
        aws.client("sqs").get_queue_attributes(QueueUrl=queue_url(app, queue), AttributeNames=["RedrivePolicy"])
    return app


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        ({"MaxNumberOfMessagesPerSecond": 501}, "MaxNumberOfMessagesPerSecond is invalid"),
        ({"MaxNumberOfMessagesPerSecond": 0}, "MaxNumberOfMessagesPerSecond is invalid"),
        ({"SourceArn": "queue"}, "Source queue must be configured as a Dead Letter Queue."),
        ({"DestinationArn": "dlq"}, "for parameter DestinationArn is invalid"),
    ],
)
def test_the_rules_refuse_what_aws_refuses_and_moto_would_not(
    move_rules: App, change: dict[str, Any], refused: str
) -> None:
    dlq, queue = arn(dlq_url(move_rules, "default")), arn(queue_url(move_rules, "default"))
    named = {"queue": queue, "dlq": dlq}
    params = {"SourceArn": dlq, "DestinationArn": queue, **{k: named.get(v, v) for k, v in change.items()}}
    with pytest.raises(ClientError) as caught:
        aws.client("sqs").start_message_move_task(**params)
    assert caught.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert refused in caught.value.response["Error"]["Message"]


def test_what_sqsjobs_sends_passes_the_rules(move_rules: App) -> None:
    fail(move_rules, 1)
    result = invoke("failed", "redrive", "--rate", "500", "--yes")
    assert result.exit_code == 0, result.output
    assert NO_MOVE_TASKS in result.stderr, "moto was reached, and has no move tasks"
    assert depth(dlq_url(move_rules, "default")) == 0

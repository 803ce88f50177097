"""Small helpers tests share: polling with a deadline, reading queues and DLQs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore import handlers as botocore_handlers

from sqsjobs import App, aws


def payload_app(prefix: str, **settings: Any) -> App:
    """An App on fresh queues with its own S3 bucket, provisioned (queues, DLQs, bucket)."""
    from sqsjobs.provisioning import provision

    app = App(
        connection="sqs",
        queue_prefix=prefix,
        queues=["default"],
        visibility_timeout=30,
        bucket=f"{prefix}payloads",
        **settings,
    )
    provision(app, ["default"], table=False, bucket=True)
    return app


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def queue_url(app: App, queue: str) -> str:
    return str(aws.client("sqs").get_queue_url(QueueName=app.settings.physical_queue_name(queue))["QueueUrl"])


def dlq_url(app: App, queue: str) -> str:
    name = app.settings.dlq_name(app.settings.physical_queue_name(queue))
    return str(aws.client("sqs").get_queue_url(QueueName=name)["QueueUrl"])


def drain(url: str, visibility: int = 30) -> list[dict[str, Any]]:
    """Receive every message on a (shallow) queue, hiding them for `visibility` seconds."""
    sqs = aws.client("sqs")
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=visibility,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            return out
        out.extend(got)


def dead_letters(app: App, queue: str = "default") -> list[dict[str, Any]]:
    """The DLQ's messages with attributes flattened to {name: value} under 'attrs'."""
    out = drain(dlq_url(app, queue))
    for message in out:
        message["attrs"] = {k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()}
    return out


def counts(app: App, queue: str) -> dict[str, int]:
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=queue_url(app, queue),
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return {k: int(v) for k, v in attrs.items()}


def work_for(seconds: float, step: float = 0.05) -> None:
    """Simulate a job's work: small steps, so a timeout interrupt lands within `step`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(step)


class FakeClock:
    """Seconds since the epoch that only move when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sqs_requests(action: str) -> list[dict[str, Any]]:
    """The parameters of every SQS `action` request the shared client sends from now on (read, never changed)."""
    seen: list[dict[str, Any]] = []
    aws.client("sqs").meta.events.register(
        f"provide-client-params.sqs.{action}", lambda params, **_: seen.append(dict(params))
    )
    return seen


@contextlib.contextmanager
def visibility_changes() -> Iterator[list[tuple[str, int]]]:
    """(receipt handle, seconds) of every visibility change SQS applied, in the order they landed,
    from every SQS client (clients made from now on, and the shared one)."""
    landed: list[tuple[str, int]] = []
    key = "test.visibility-entries"

    def sent(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context.setdefault(key, [(e["ReceiptHandle"], int(e["VisibilityTimeout"])) for e in params["Entries"]])

    def answered(http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        entries = context.pop(key, [])
        if http_response.status_code < 300:
            failed = {int(f["Id"]) for f in parsed.get("Failed", [])}
            landed.extend(entry for index, entry in enumerate(entries) if index not in failed)

    specs = [
        ("provide-client-params.sqs.ChangeMessageVisibilityBatch", sent),
        ("after-call.sqs.ChangeMessageVisibilityBatch", answered),
    ]
    botocore_handlers.BUILTIN_HANDLERS.extend(specs)
    shared = aws.client("sqs")
    for event, handler in specs:
        shared.meta.events.register(event, handler)
    try:
        yield landed
    finally:
        for spec in specs:
            botocore_handlers.BUILTIN_HANDLERS.remove(spec)
        for event, handler in specs:
            shared.meta.events.unregister(event, handler)

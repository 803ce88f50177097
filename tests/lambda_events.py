"""Real-shaped Lambda SQS events built from real messages received from moto.

The templates in tests/events/ are the event shapes AWS documents; the records are
filled with messages actually received from a queue, so receipt handles work and
the handler's visibility changes and the mapping's deletes can be checked on moto.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from sqsjobs import App, aws
from tests.helpers import queue_url

EVENTS = Path(__file__).parent / "events"


def template(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())  # type: ignore[no-any-return]


def receive_event(
    app: App, queue: str, shape: str = "sqs_standard.json", max_messages: int = 10, wait: int = 0
) -> dict[str, Any]:
    """Receive up to `max_messages` real messages and wrap them as the event source mapping would."""
    sqs = aws.client("sqs")
    url = queue_url(app, queue)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    messages = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=max_messages,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    base = template(shape)["Records"][0]
    records = []
    for message in messages:
        record = copy.deepcopy(base)
        record.update(
            messageId=message["MessageId"],
            receiptHandle=message["ReceiptHandle"],
            body=message["Body"],
            md5OfBody=message["MD5OfBody"],
            eventSourceARN=arn,
        )
        attributes = message.get("Attributes", {})
        for key in (
            "ApproximateReceiveCount",
            "SentTimestamp",
            "MessageGroupId",
            "MessageDeduplicationId",
            "SequenceNumber",
            "ApproximateFirstReceiveTimestamp",
        ):
            if key in attributes:
                record["attributes"][key] = attributes[key]
        record["messageAttributes"] = {
            k: {
                "stringValue": v.get("StringValue"),
                "dataType": v["DataType"],
                "stringListValues": [],
                "binaryListValues": [],
            }
            for k, v in message.get("MessageAttributes", {}).items()
        }
        records.append(record)
    return {"Records": records}


class FakeContext:
    """The one part of the Lambda context the handler reads."""

    def __init__(self, remaining_s: float = 300.0, *, started_s: float | None = None) -> None:
        """`started_s`: what the first look answers (the invocation's start, when a handler reads the
        function's whole time); every later look answers `remaining_s` (time spent on earlier records)."""
        self.remaining_s = remaining_s
        self._started_s = started_s
        self.function_name = "sqsjobs-test"
        self.aws_request_id = "test-request"

    def get_remaining_time_in_millis(self) -> int:
        if self._started_s is not None:
            started, self._started_s = self._started_s, None
            return int(started * 1000)
        return int(self.remaining_s * 1000)


def failed_ids(response: dict[str, Any]) -> list[str]:
    return sorted(item["itemIdentifier"] for item in response["batchItemFailures"])


def deliver(handler: Any, app: App, queue: str, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Invoke the handler and then do what the event source mapping does: delete the successes."""
    response: dict[str, Any] = handler(event, context or FakeContext())
    failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    done = [r for r in event["Records"] if r["messageId"] not in failed]
    if done:
        aws.client("sqs").delete_message_batch(
            QueueUrl=queue_url(app, queue),
            Entries=[{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(done)],
        )
    return response

"""The production connection: Amazon SQS through boto3.

Queue URLs and attributes are resolved once per queue and cached, so the hot
path is only ReceiveMessage, DeleteMessageBatch and (when needed)
ChangeMessageVisibilityBatch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ..errors import ConfigurationError
from ..settings import Settings
from ..timing import MAX_VISIBILITY_SECONDS
from ..tracing import xray_header
from .base import BatchFailure, OutgoingMessage, QueueInfo, ReceivedMessage, Undeleted

if TYPE_CHECKING:
    from ..payloads import PayloadStore

log = logging.getLogger("sqsjobs.sqs")

_SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"]


class SqsConnection:
    """Speaks SQS directly; logical queue names are mapped through the settings."""

    name = "sqs"

    def __init__(self, settings: Settings, client_factory: Callable[[], Any] | None = None) -> None:
        from .. import aws

        self._settings = settings
        self._client_factory = client_factory or (lambda: aws.client("sqs"))
        self._client: Any = None
        self._urls: dict[str, str] = {}
        self._info: dict[str, QueueInfo] = {}
        self._lock = threading.Lock()
        self._payloads: PayloadStore | None = None

    @property
    def payloads(self) -> PayloadStore:
        """Offloaded bodies in S3 (sqsjobs.payloads); the S3 client is made only when one is met."""
        if self._payloads is None:
            from ..payloads import PayloadStore

            self._payloads = PayloadStore(self._settings)
        return self._payloads

    @property
    def client(self) -> Any:
        # Resolved once: looking the client up per call would redo region resolution on the hot path.
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    # -- queues -------------------------------------------------------------------------
    def url(self, queue: str) -> str:
        found = self._urls.get(queue)
        if found is not None:
            return found
        physical = self._settings.physical_queue_name(queue)
        if physical.startswith(("https://", "http://")):
            url = physical
        else:
            try:
                url = self.client.get_queue_url(QueueName=physical)["QueueUrl"]
            except ClientError as exc:
                if _code(exc) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                    raise ConfigurationError(
                        f"queue {queue!r} (SQS name {physical!r}) does not exist; run `sqsjobs provision` "
                        "or map it in SQSJOBS_QUEUES"
                    ) from None
                raise
        with self._lock:
            self._urls[queue] = url
        return url

    def queue_info(self, queue: str) -> QueueInfo:
        found = self._info.get(queue)
        if found is not None:
            return found
        url = self.url(queue)
        attrs = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get("Attributes", {})
        dlq_url = None
        max_receive = None
        if "RedrivePolicy" in attrs:
            policy = json.loads(attrs["RedrivePolicy"])
            max_receive = int(policy.get("maxReceiveCount", 0)) or None
            arn = policy.get("deadLetterTargetArn", "")
            parts = arn.split(":")
            if len(parts) == 6:
                dlq_url = self.client.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]
        info = QueueInfo(
            name=queue,
            url=url,
            visibility_timeout=int(attrs.get("VisibilityTimeout", 30)),
            fifo=attrs.get("FifoQueue") == "true" or url.endswith(".fifo"),
            dlq_url=dlq_url,
            max_receive_count=max_receive,
            content_based_dedup=attrs.get("ContentBasedDeduplication") == "true",
        )
        with self._lock:
            self._info[queue] = info
        return info

    def is_fifo(self, queue: str) -> bool:
        return self._settings.physical_queue_name(queue).endswith(".fifo")

    # -- sending ------------------------------------------------------------------------
    def send(self, queue: str, message: OutgoingMessage) -> str:
        params = entry_params(message)
        params.pop("Id")
        response = self.client.send_message(QueueUrl=self.url(queue), **params)
        return str(response["MessageId"])

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[BatchFailure]:
        response = self.client.send_message_batch(QueueUrl=self.url(queue), Entries=[entry_params(m) for m in messages])
        return [
            BatchFailure(f["Id"], f.get("Code", ""), f.get("Message", ""), bool(f.get("SenderFault")))
            for f in response.get("Failed", [])
        ]

    def send_to_dlq(self, queue: str, message: OutgoingMessage) -> None:
        info = self.queue_info(queue)
        if info.dlq_url is None:
            raise ConfigurationError(
                f"queue {queue!r} has no dead-letter queue (RedrivePolicy); failed jobs have nowhere to go. "
                "Run `sqsjobs provision` or attach a DLQ"
            )
        params = entry_params(message)
        params.pop("Id")
        params.pop("DelaySeconds", None)
        # SQS refuses group and deduplication ids on a standard queue, and requires them on FIFO.
        if info.dlq_url.endswith(".fifo"):
            params.setdefault("MessageGroupId", "failed")
            params.setdefault("MessageDeduplicationId", message.deduplication_id or message.entry_id)
        else:
            params.pop("MessageGroupId", None)
            params.pop("MessageDeduplicationId", None)
        self.client.send_message(QueueUrl=info.dlq_url, **params)

    # -- receiving ----------------------------------------------------------------------
    def receive(
        self, queue: str, max_messages: int, wait_seconds: int, visibility_timeout: int | None = None
    ) -> list[ReceivedMessage]:
        params: dict[str, Any] = {
            "QueueUrl": self.url(queue),
            "MaxNumberOfMessages": max(1, min(10, max_messages)),
            "WaitTimeSeconds": max(0, min(20, wait_seconds)),
            "MessageSystemAttributeNames": _SYSTEM_ATTRIBUTES,
            "MessageAttributeNames": ["All"],
        }
        if visibility_timeout is not None:
            # ReceiveMessage: VisibilityTimeout 0 to 43,200 seconds.
            params["VisibilityTimeout"] = max(0, min(MAX_VISIBILITY_SECONDS, int(visibility_timeout)))
        response = self.client.receive_message(**params)
        now = time.time()
        messages = [received(queue, raw, now) for raw in response.get("Messages", [])]
        for message in messages:
            self.payloads.resolve(message)  # never raises: a bad pointer is that message's problem only
        return messages

    def delete(self, queue: str, messages: Sequence[ReceivedMessage]) -> list[Undeleted]:
        url = self.url(queue)
        kept: list[Undeleted] = []
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            response = self.client.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)],
            )
            _log_failed("delete", queue, chunk, response)
            # SenderFault false: SQS's own failure for that entry, not the message's (DeleteMessageBatch)
            for failure in response.get("Failed", []):
                kept.append(Undeleted(chunk[int(failure["Id"])], not failure.get("SenderFault", True)))
        return kept

    def change_visibility(self, queue: str, items: Sequence[tuple[ReceivedMessage, int]]) -> list[ReceivedMessage]:
        url = self.url(queue)
        retry: list[ReceivedMessage] = []
        for start in range(0, len(items), 10):
            chunk = items[start : start + 10]
            response = self.client.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": int(vt)}
                    for i, (m, vt) in enumerate(chunk)
                ],
            )
            _log_failed("change visibility of", queue, [m for m, _ in chunk], response)
            # SenderFault false: SQS's own failure for that entry, not the message's (ChangeMessageVisibilityBatch)
            retry.extend(chunk[int(f["Id"])][0] for f in response.get("Failed", []) if not f.get("SenderFault", True))
        return retry

    def counts(self, queue: str) -> dict[str, int]:
        """Approximate visible / in-flight / delayed counts (used by --stop-when-empty and monitor)."""
        attrs = self.client.get_queue_attributes(
            QueueUrl=self.url(queue),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return {k: int(v) for k, v in attrs.items()}


def received(queue: str, raw: dict[str, Any], now: float = 0.0) -> ReceivedMessage:
    """A ReceiveMessage result entry as a ReceivedMessage (message attributes as plain strings)."""
    attributes = raw.get("Attributes", {})
    return ReceivedMessage(
        queue=queue,
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw["Body"],
        receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
        sent_at=int(attributes.get("SentTimestamp", 0)) / 1000,
        attributes={k: v.get("StringValue", "") for k, v in raw.get("MessageAttributes", {}).items()},
        received_at=now,
        group_id=attributes.get("MessageGroupId") or None,
    )


def entry_params(message: OutgoingMessage) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": message.entry_id or "0", "MessageBody": message.body}
    if message.delay_seconds:
        entry["DelaySeconds"] = message.delay_seconds
    if message.group_id is not None:
        entry["MessageGroupId"] = message.group_id
    if message.deduplication_id is not None:
        entry["MessageDeduplicationId"] = message.deduplication_id
    header = xray_header()
    if header is not None:  # inside Lambda: X-Ray follows the job from this invocation into its consumer
        entry["MessageSystemAttributes"] = {"AWSTraceHeader": {"DataType": "String", "StringValue": header}}
    if message.attributes:
        entry["MessageAttributes"] = {
            k: {"DataType": "String", "StringValue": v}
            if isinstance(v, str)
            else {"DataType": "Number", "StringValue": str(v)}
            for k, v in message.attributes.items()
        }
    return entry


def _log_failed(action: str, queue: str, chunk: Sequence[ReceivedMessage], response: dict[str, Any]) -> None:
    """A batch call can succeed while entries fail (an expired receipt handle, usually): say which."""
    for failure in response.get("Failed", []):
        message = chunk[int(failure["Id"])]
        log.warning(
            "could not %s message %s on %s: %s %s (%s)",
            action,
            message.message_id,
            queue,
            failure.get("Code", ""),
            failure.get("Message", ""),
            "its visibility timeout had probably expired; another receive may run it again"
            if failure.get("SenderFault", True)
            else "a failure on SQS's side",
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))

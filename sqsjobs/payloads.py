"""Bodies too large for SQS live in S3; the message carries a pointer.

The pointer is the one the Amazon SQS Extended Client libraries (Java, Python)
write: the body is `["software.amazon.payloadoffloading.PayloadS3Pointer",
{"s3BucketName": ..., "s3Key": ...}]` and the `ExtendedPayloadSize` message
attribute (a Number) holds the real size. So their consumers can read what we
send and we run what they send (the legacy `SQSLargePayloadSize` attribute and
`MessageS3Pointer` class are read too).

Who owns the object: the message that points at it. A DLQ copy or a delay hop
re-sends the same pointer, so the object moves with the job; it is deleted only
when the job is done (after its message is deleted) or forgotten from the DLQ.
The bucket's lifecycle rule (`sqsjobs provision`) is the backstop for anything
a crash leaves behind.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from .connections.base import OutgoingMessage, PayloadPointer, ReceivedMessage
from .settings import Settings

log = logging.getLogger("sqsjobs.payloads")

POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
LEGACY_POINTER_CLASS = "com.amazon.sqs.javamessaging.MessageS3Pointer"
SIZE_ATTRIBUTE = "ExtendedPayloadSize"
LEGACY_SIZE_ATTRIBUTE = "SQSLargePayloadSize"
SIZE_ATTRIBUTES = (SIZE_ATTRIBUTE, LEGACY_SIZE_ATTRIBUTE)
#: What SQS accepts in one message (body plus attributes).
SQS_MAX_BYTES = 1_048_576
#: Room kept for attributes: a DLQ copy adds the failure reason and a traceback head (~4 KB).
ATTRIBUTE_HEADROOM = 16_384
DEFAULT_THRESHOLD = SQS_MAX_BYTES - ATTRIBUTE_HEADROOM
#: Our objects' keys start with this, so the bucket's lifecycle rule touches nothing else in it.
PAYLOAD_PREFIX = "sqsjobs/"


class PayloadStore:
    """Puts, gets and deletes offloaded bodies in the configured bucket (S3 client made on first use)."""

    def __init__(self, settings: Settings, client_factory: Callable[[], Any] | None = None) -> None:
        self._settings = settings
        self._client_factory = client_factory
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            if self._client_factory is None:
                from . import aws

                self._client = aws.client("s3")
            else:
                self._client = self._client_factory()
        return self._client

    @property
    def threshold(self) -> int:
        """Bodies larger than this many bytes go to S3 (0 with `always`)."""
        value = self._settings.payload_threshold
        return 0 if value == "always" else int(value)

    def offload(self, message: OutgoingMessage, job_id: str = "") -> PayloadPointer | None:
        """Move `message`'s body to S3 when it is over the threshold; rewrite it into a pointer."""
        size = message.size or len(message.body.encode())
        if size <= self.threshold:
            return None
        key = f"{PAYLOAD_PREFIX}{job_id or uuid.uuid4()}-{uuid.uuid4().hex[:8]}"
        bucket = self._settings.bucket
        self.client.put_object(Bucket=bucket, Key=key, Body=message.body.encode())
        pointer = PayloadPointer(bucket, key, size, json.dumps([POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}]))
        message.body = pointer.body
        message.size = len(pointer.body)
        message.attributes = {**message.attributes, SIZE_ATTRIBUTE: size}
        message.pointer = pointer
        return pointer

    def resolve(self, message: ReceivedMessage) -> None:
        """Replace a pointer body with the stored one; what goes wrong is set on the message.

        Never raises, so one bad message cannot keep the others of its receive batch from
        running. A pointer that cannot be read for good (malformed, no such object, access
        denied) sets `payload_error`, which the runner fails to the DLQ; a passing fault (S3
        throttling, a 5xx, a timeout) also sets `payload_retry`, and the runner tries it later.
        """
        attribute = next((name for name in SIZE_ATTRIBUTES if name in message.attributes), None)
        if attribute is None:
            return
        try:
            bucket, key = parse_pointer(message.body)
        except ValueError as exc:
            message.payload_error = str(exc)
            return
        if bucket != self._settings.bucket:
            # Anyone who can send to the queue writes the pointer: reading (and, once the job is
            # done, deleting) whatever it names would lend them this role's S3 rights.
            message.payload_error = (
                f"the message points at s3://{bucket}/{key[:200]}, outside the payload bucket "
                f"{self._settings.bucket!r} (SQSJOBS_BUCKET); it was neither read nor deleted"
            )
            message.payload_reason = "foreign_pointer"
            return
        message.pointer = PayloadPointer(bucket, key, _size(message.attributes.get(attribute)), message.body, attribute)
        try:
            obj = self.client.get_object(Bucket=bucket, Key=key)
            message.body = obj["Body"].read().decode()
        except UnicodeDecodeError:
            message.payload_error = f"the message's payload s3://{bucket}/{key} is not UTF-8 text"
        except Exception as exc:
            code = _error_code(exc)
            if code in _GONE:
                message.payload_error = (
                    f"the message's payload s3://{bucket}/{key} could not be read ({code}); it was deleted, "
                    "expired by the bucket's lifecycle rule, or this role may not read it"
                )
            else:
                message.payload_error = f"the message's payload s3://{bucket}/{key} could not be read now ({code})"
                message.payload_retry = True

    def delete(self, pointer: PayloadPointer) -> None:
        """Delete an object whose job is over; failures are logged (the lifecycle rule is the backstop)."""
        try:
            self.client.delete_object(Bucket=pointer.bucket, Key=pointer.key)
        except Exception:
            log.exception(
                "could not delete payload s3://%s/%s; the bucket lifecycle rule will", pointer.bucket, pointer.key
            )


#: S3 answers that no retry can change: the object (or bucket) is gone, or is not ours to read.
_GONE = frozenset(
    {
        "NoSuchKey",
        "NoSuchBucket",
        "404",
        "NotFound",
        "AccessDenied",
        "403",
        "InvalidObjectState",
        "ParamValidationError",
    }
)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def _size(value: str | None) -> int:
    """The size attribute is informational (the object says how big it is); junk reads as 0."""
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


def parse_pointer(body: str) -> tuple[str, str]:
    """(bucket, key) of an Extended Client pointer body; ValueError naming what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if (
        not isinstance(data, list)
        or len(data) != 2
        or data[0] not in (POINTER_CLASS, LEGACY_POINTER_CLASS)
        or not isinstance(data[1], dict)
        or not isinstance(data[1].get("s3BucketName"), str)
        or not isinstance(data[1].get("s3Key"), str)
    ):
        raise ValueError(
            "the message says its payload is in S3 (it has an ExtendedPayloadSize attribute) but its body "
            "is not an S3 pointer"
        )
    bucket, key = data[1]["s3BucketName"], data[1]["s3Key"]
    if not _BUCKET_NAME.fullmatch(bucket) or not _valid_key(key):
        raise ValueError("the message's S3 pointer names no valid bucket and key")
    return bucket, key


#: What S3 has ever allowed as a bucket name (legacy us-east-1 names included: capitals, underscores,
#: up to 255), so a crafted name fails here, for good, rather than inside botocore on every delivery.
_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")


def _valid_key(key: str) -> bool:
    try:
        return 0 < len(key.encode()) <= 1024
    except UnicodeEncodeError:
        return False


def carried(message: ReceivedMessage, body: str | None = None) -> OutgoingMessage:
    """An outgoing copy of a received message that keeps its S3 pointer rather than re-uploading."""
    if message.pointer is None or body is not None:
        return OutgoingMessage(body=body if body is not None else message.body)
    return OutgoingMessage(
        body=message.pointer.body,
        attributes={message.pointer.attribute: message.pointer.size},
        size=len(message.pointer.body),
    )

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

A pointer is text anyone with send rights on a queue can write, so it is read
(and later deleted) only when it names an object under the configured bucket and
key prefix (`owns`), and it is read as a stream that stops at
`SQSJOBS_PAYLOAD_MAX_BYTES`: neither the size attribute nor the object's own
length is needed to keep memory bounded.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from . import object_keys
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
#: The default of SQSJOBS_PAYLOAD_PREFIX (`Settings.payload_prefix`): our objects' keys start with it,
#: so the bucket's lifecycle rule touches nothing else in it. Code reads the setting, not this.
PAYLOAD_PREFIX = "sqsjobs/"
#: Bytes asked of the S3 response stream at a time while reading a body.
READ_CHUNK = 256 * 1024


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
        key = object_keys.new_key(self._settings.payload_prefix, job_id)
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
        attributes = message.attributes
        if not attributes:  # most messages: no attributes, no pointer
            return
        attribute = next((name for name in SIZE_ATTRIBUTES if name in attributes), None)
        if attribute is None:
            return
        try:
            bucket, key = parse_pointer(message.body)
        except ValueError as exc:
            message.payload_error = str(exc)
            return
        if not self.owns(bucket, key):
            # Anyone who can send to the queue writes the pointer: reading (and, once the job is
            # done, deleting) whatever it names would lend them this role's S3 rights.
            message.payload_error = (
                f"the message points at s3://{bucket}/{_shown(key)}, outside the payload bucket and prefix "
                f"s3://{self._settings.bucket}/{self._settings.payload_prefix} (SQSJOBS_BUCKET, "
                "SQSJOBS_PAYLOAD_PREFIX); it was neither read nor deleted"
            )
            message.payload_reason = "foreign_pointer"
            return
        message.pointer = PayloadPointer(bucket, key, _size(message.attributes.get(attribute)), message.body, attribute)
        try:
            data = self._read(bucket, key)
        except _TooLarge as exc:
            message.payload_error = (
                f"the message's payload s3://{bucket}/{_shown(key)} is {exc}, over SQSJOBS_PAYLOAD_MAX_BYTES "
                f"({self.max_bytes} bytes); it was not read"
            )
            message.payload_reason = "payload_too_large"
            return
        except Exception as exc:
            code = _error_code(exc)
            if code in _GONE:
                message.payload_error = (
                    f"the message's payload s3://{bucket}/{_shown(key)} could not be read ({code}); it was deleted, "
                    "expired by the bucket's lifecycle rule, or this role may not read it"
                )
            else:
                message.payload_error = (
                    f"the message's payload s3://{bucket}/{_shown(key)} could not be read now ({code})"
                )
                message.payload_retry = True
            return
        try:
            message.body = data.decode()
        except UnicodeDecodeError:
            message.payload_error = f"the message's payload s3://{bucket}/{_shown(key)} is not UTF-8 text"

    @property
    def max_bytes(self) -> int:
        """The largest body read from S3 (SQSJOBS_PAYLOAD_MAX_BYTES)."""
        return int(self._settings.payload_max_bytes)

    def owns(self, bucket: str, key: str) -> bool:
        """Whether sqsjobs may read and delete s3://bucket/key: the payload bucket, under the payload prefix.

        Keys with `.` or `..` path segments are refused too: S3 keeps them literally, but a proxy
        or SDK that normalises paths on the way would reach a key outside the prefix.
        """
        prefix = self._settings.payload_prefix
        return (
            bucket == self._settings.bucket
            and key.startswith(prefix)
            and len(key) > len(prefix)
            and not any(part in (".", "..") for part in key.split("/"))
        )

    def _read(self, bucket: str, key: str) -> bytearray:
        """The object's bytes, read as a stream that stops at `max_bytes` (raises _TooLarge past it).

        ContentLength (S3's own length of the object, not the message's size attribute) refuses a
        large object before any byte is read; the count of bytes read enforces the cap without it.
        """
        cap = self.max_bytes
        obj = self.client.get_object(Bucket=bucket, Key=key)
        stream = obj["Body"]
        try:
            length = obj.get("ContentLength")
            if isinstance(length, int) and length > cap:
                raise _TooLarge(f"{length} bytes")
            data = bytearray()
            while True:
                chunk = stream.read(min(READ_CHUNK, cap + 1 - len(data)))
                if not chunk:
                    return data
                data += chunk
                if len(data) > cap:
                    raise _TooLarge("larger than that")
        finally:
            stream.close()

    def delete(self, pointer: PayloadPointer) -> None:
        """Delete an object whose job is over; failures are logged (the lifecycle rule is the backstop).

        Only an object `owns` allows: a pointer from a message never makes sqsjobs delete anything else.
        """
        if not self.owns(pointer.bucket, pointer.key):
            log.warning(
                "not deleting s3://%s/%s: it is outside the payload bucket and prefix",
                pointer.bucket,
                _shown(pointer.key),
            )
            return
        try:
            self.client.delete_object(Bucket=pointer.bucket, Key=pointer.key)
        except Exception:
            log.exception(
                "could not delete payload s3://%s/%s; the bucket lifecycle rule will",
                pointer.bucket,
                _shown(pointer.key),
            )


class _TooLarge(Exception):
    """An object over SQSJOBS_PAYLOAD_MAX_BYTES; its text says how large, as far as is known."""


def _shown(key: str) -> str:
    """A key as an error message quotes it: cut, with characters that cannot be printed made visible."""
    return ascii(key[:200])[1:-1]


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
    """An outgoing copy of a received message that keeps its S3 pointer rather than re-uploading.

    A pointer that was not read (outside the bucket and prefix, malformed) keeps its size attribute
    too, so its DLQ copy is the message as it came and can be judged again (with other settings).
    """
    if body is not None:
        return OutgoingMessage(body=body)
    if message.pointer is None:
        attribute = next((name for name in SIZE_ATTRIBUTES if name in message.attributes), None)
        if attribute is None or not message.payload_error:
            return OutgoingMessage(body=message.body)
        size = _size(message.attributes.get(attribute))
        return OutgoingMessage(
            body=message.body, attributes={attribute: size}, size=len(message.body.encode("utf-8", "surrogatepass"))
        )
    return OutgoingMessage(
        body=message.pointer.body,
        attributes={message.pointer.attribute: message.pointer.size},
        size=len(message.pointer.body),
    )

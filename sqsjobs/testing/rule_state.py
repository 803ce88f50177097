"""What the strict-AWS-rules layer remembers and how it answers: limits, shared state, AWS-shaped replies.

Split from `aws_rules` (installation, S3) and `sqs_rules` (the SQS checks), which both use it.
"""

from __future__ import annotations

import hashlib
import re
import struct
import threading
import time
import uuid
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

_CONTEXT_KEY = "sqsjobs.testing.aws_rules"
_MAX_MESSAGE_BYTES = 1_048_576  # SendMessage / SendMessageBatch: "1 MiB or 1,048,576 bytes"
_MAX_VISIBILITY = 43_200  # ChangeMessageVisibility: "maximum of 12 hours" from receipt
_DEDUP_WINDOW = 300.0  # MessageDeduplicationId: "the 5-minute deduplication interval"
_MAX_ATTRIBUTES = 10  # Developer Guide, "Amazon SQS message attributes": "up to 10 attributes"
_MAX_BATCH = 10
_MAX_S3_KEY = 1024  # S3 User Guide, "Naming objects": "key name ... up to 1,024 bytes long" (UTF-8)
_MAX_RECEIPTS = 200_000

# SendMessage MessageBody: "#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to
# #x10FFFF ... If a message contains characters outside the allowed set, Amazon SQS rejects the
# message and returns an InvalidMessageContents error." That includes lone surrogates (U+D800-U+DFFF):
# botocore's JSON serialiser escapes them (`"\ud800"`) and sends them, and moto stores the message before
# failing on it, so without this rule such a message is both an error and enqueued.
_INVALID_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Message attribute names: "alphanumeric characters, hyphens (-), underscores (_), and periods (.)",
# "must not start with AWS-reserved prefixes such as AWS. or Amazon. (or any casing variants)",
# "must not start or end with a period (.), and it should not have periods in succession (..)",
# "up to 256 characters long" (SQS Developer Guide, "Message attribute components").
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,256}")
_BATCH_ENTRY_ID = re.compile(r"[A-Za-z0-9_\-]{1,80}")  # "up to 80 characters ... alphanumeric, -, _"

# SQS is query-compatible: modeled errors reach boto3 as `AWS.SimpleQueueService.<Name>` with the
# shape name in QueryErrorCode (botocore's `_handle_sqs_compatible_error` maps it to the class).
_SQS_PREFIXED = {
    "BatchEntryIdsNotDistinct",
    "BatchRequestTooLong",
    "EmptyBatchRequest",
    "InvalidBatchEntryId",
    "TooManyEntriesInBatchRequest",
}
_SQS_MODELED = {*_SQS_PREFIXED, "InvalidMessageContents"}


class _Refusal(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class _State:
    """Everything the rules remember, shared by all clients and threads of the process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.offset = 0.0
        self.receipts: dict[str, float] = {}
        self.dedup: dict[tuple[str, str, str], float] = {}
        self.group_scoped: set[str] = set()  # FIFO queues with DeduplicationScope=messageGroup
        self.sequence = 0

    def now(self) -> float:
        return time.monotonic() + self.offset


_state = _State()


def advance_clock(seconds: float) -> None:
    """Move the layer's clock (receipt ages, deduplication windows) forward, for tests of those rules."""
    with _state.lock:
        _state.offset += seconds


def reset() -> None:
    """Forget receipts, deduplication ids and the clock offset (between tests)."""
    with _state.lock:
        _state.offset = 0.0
        _state.receipts.clear()
        _state.dedup.clear()
        _state.group_scoped.clear()


# -- responses ---------------------------------------------------------------------------------


def _metadata(status: int) -> dict[str, Any]:
    request_id = str(uuid.uuid4())
    return {
        "RequestId": request_id,
        "HTTPStatusCode": status,
        "HTTPHeaders": {"x-amzn-requestid": request_id},
        "RetryAttempts": 0,
    }


def _http(status: int) -> AWSResponse:
    return AWSResponse("https://strict-rules.sqsjobs.invalid/", status, HTTPHeaders(), None)


def _error_response(service: str, refusal: _Refusal) -> tuple[AWSResponse, dict[str, Any]]:
    error: dict[str, Any] = {"Code": refusal.code, "Message": refusal.message, "Type": "Sender"}
    if service == "sqs" and refusal.code in _SQS_MODELED:
        error["QueryErrorCode"] = refusal.code
        if refusal.code in _SQS_PREFIXED:
            error["Code"] = f"AWS.SimpleQueueService.{refusal.code}"
    return _http(refusal.status), {"Error": error, "ResponseMetadata": _metadata(refusal.status)}


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # SQS's own checksum, not security


def _attributes_md5(attributes: dict[str, Any]) -> str:
    """MD5OfMessageAttributes as SQS computes it (Developer Guide, "Calculating the MD5 message digest")."""
    out = bytearray()
    for name in sorted(attributes):
        value = attributes[name]
        data_type = str(value.get("DataType", ""))
        for part in (name.encode(), data_type.encode()):
            out += struct.pack(">I", len(part)) + part
        if "BinaryValue" in value:
            raw = value["BinaryValue"]
            raw = raw if isinstance(raw, bytes) else str(raw).encode()
            out += b"\x02" + struct.pack(">I", len(raw)) + raw
        else:
            raw = str(value.get("StringValue", "")).encode()
            out += b"\x01" + struct.pack(">I", len(raw)) + raw
    return _md5(bytes(out))


def _accepted_send(entry: dict[str, Any]) -> dict[str, Any]:
    """What SQS answers for a FIFO send it deduplicates: success, a message id, checksums."""
    with _state.lock:
        _state.sequence += 1
        sequence = _state.sequence
    answer = {
        "MessageId": str(uuid.uuid4()),
        "MD5OfMessageBody": _md5(str(entry.get("MessageBody", "")).encode("utf-8", "surrogatepass")),
        "SequenceNumber": f"{sequence:020d}",
    }
    if entry.get("MessageAttributes"):
        answer["MD5OfMessageAttributes"] = _attributes_md5(entry["MessageAttributes"])
    return answer

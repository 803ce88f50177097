"""The SQS rules of the strict-AWS-rules layer (see `sqsjobs.testing.aws_rules` for how they are installed)."""

from __future__ import annotations

import hashlib
from typing import Any

from botocore.awsrequest import AWSResponse

from .rule_state import (
    _ATTRIBUTE_NAME,
    _BATCH_ENTRY_ID,
    _CONTEXT_KEY,
    _DEDUP_WINDOW,
    _INVALID_CHARS,
    _MAX_ATTRIBUTES,
    _MAX_BATCH,
    _MAX_MESSAGE_BYTES,
    _MAX_RECEIPTS,
    _MAX_VISIBILITY,
    _accepted_send,
    _error_response,
    _http,
    _metadata,
    _Refusal,
    _state,
)

# -- SQS rules ---------------------------------------------------------------------------------


def _utf8_len(text: Any) -> int:
    return len(str(text).encode("utf-8", "surrogatepass"))


def _message_size(entry: dict[str, Any]) -> int:
    """Body plus every attribute's name, type and value: all count toward the 1 MiB limit."""
    size = _utf8_len(entry.get("MessageBody", ""))
    for name, value in (entry.get("MessageAttributes") or {}).items():
        size += _utf8_len(name) + _utf8_len(value.get("DataType", ""))
        if "BinaryValue" in value:
            raw = value["BinaryValue"]
            size += len(raw) if isinstance(raw, bytes | bytearray) else _utf8_len(raw)
        else:
            size += _utf8_len(value.get("StringValue", ""))
    return size


def _check_message(entry: dict[str, Any], fifo: bool) -> None:
    """The per-message rules of SendMessage and of each SendMessageBatch entry."""
    if not fifo and "MessageDeduplicationId" in entry:
        # SendMessage: MessageDeduplicationId "applies only to FIFO (first-in-first-out) queues";
        # AWS answers 400 InvalidParameterValue (moto accepts and ignores it).
        raise _Refusal(
            "InvalidParameterValue",
            f"Value {entry['MessageDeduplicationId']} for parameter MessageDeduplicationId is invalid. "
            "Reason: The request includes a parameter that is not valid for this queue type.",
        )
    body = str(entry.get("MessageBody", ""))
    bad = _INVALID_CHARS.search(body)
    if bad:
        raise _Refusal(
            "InvalidMessageContents",
            f"Invalid binary character '#x{ord(bad.group()):X}' was found in the message body, the set of "
            "allowed characters is #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF",
        )
    attributes = entry.get("MessageAttributes") or {}
    if len(attributes) > _MAX_ATTRIBUTES:
        raise _Refusal(
            "InvalidParameterValue",
            f"Number of message attributes [{len(attributes)}] exceeds the allowed maximum [{_MAX_ATTRIBUTES}].",
        )
    for name, value in attributes.items():
        lowered = name.lower()
        if (
            not _ATTRIBUTE_NAME.fullmatch(name)
            or lowered.startswith(("aws.", "amazon."))
            or name.startswith(".")
            or name.endswith(".")
            or ".." in name
        ):
            raise _Refusal(
                "InvalidParameterValue",
                f"The message attribute name '{name}' is invalid. Attribute name can contain A-Z, a-z, 0-9, "
                "underscore (_), hyphen (-), and period (.) characters; must not start or end with a period, "
                "have two periods in a row, start with AWS. or Amazon., or be longer than 256 characters.",
            )
        # MessageAttributeValue: "Name, type, value and the message body must not be empty or null."
        if "BinaryValue" not in value and not str(value.get("StringValue", "")):
            raise _Refusal(
                "InvalidParameterValue",
                f"Message attribute '{name}' must contain a non-empty message attribute value for message "
                f"attribute type '{value.get('DataType', '')}'.",
            )
        # "For string data types, the Value attribute has the same restrictions on the content as the
        # message body."
        bad = _INVALID_CHARS.search(str(value.get("StringValue", "")))
        if bad:
            raise _Refusal(
                "InvalidMessageContents",
                f"Invalid binary character '#x{ord(bad.group()):X}' was found in the value of message "
                f"attribute '{name}'",
            )
    if _message_size(entry) > _MAX_MESSAGE_BYTES:
        raise _Refusal(
            "InvalidParameterValue",
            "One or more parameters are invalid. Reason: Message must be shorter than 1048576 bytes.",
        )


def _check_batch(given: Any, operation: str) -> list[dict[str, Any]]:
    """The whole-call rules of every *Batch API (AWS rejects the call, not single entries)."""
    entries: list[dict[str, Any]] = list(given or [])
    if not entries:
        raise _Refusal("EmptyBatchRequest", f"There should be at least one {operation}RequestEntry in the request.")
    if len(entries) > _MAX_BATCH:
        raise _Refusal(
            "TooManyEntriesInBatchRequest",
            f"Maximum number of entries per request are {_MAX_BATCH}. You have sent {len(entries)}.",
        )
    seen: set[str] = set()
    for entry in entries:
        entry_id = str(entry.get("Id", ""))
        if not _BATCH_ENTRY_ID.fullmatch(entry_id):
            raise _Refusal(
                "InvalidBatchEntryId",
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. "
                "It can be at most 80 letters long.",
            )
        if entry_id in seen:
            raise _Refusal("BatchEntryIdsNotDistinct", f"Id {entry_id} repeated.")
        seen.add(entry_id)
    return entries


def _dedup_key(url: str, entry: dict[str, Any]) -> tuple[str, str, str]:
    dedup_id = entry.get("MessageDeduplicationId")
    if dedup_id is None:
        # ContentBasedDeduplication: "a SHA-256 hash ... using the body of the message (but not the
        # attributes of the message)". (Without it, and without an id, the call is refused, by moto too.)
        dedup_id = "sha256:" + hashlib.sha256(str(entry.get("MessageBody", "")).encode()).hexdigest()
    group = str(entry.get("MessageGroupId", "")) if url in _state.group_scoped else ""
    return (url, group, str(dedup_id))


def _is_duplicate(url: str, entry: dict[str, Any]) -> bool:
    """SendMessage MessageDeduplicationId: "If a message with a particular MessageDeduplicationId is
    sent successfully, any messages sent with the same MessageDeduplicationId are accepted successfully
    but aren't delivered during the 5-minute deduplication interval" -- even if the first one has
    been received and deleted meanwhile (moto only deduplicates against messages still queued)."""
    key = _dedup_key(url, entry)
    with _state.lock:
        expires = _state.dedup.get(key)
        return expires is not None and expires > _state.now()


def _remember_sent(url: str, entries: list[dict[str, Any]]) -> None:
    with _state.lock:
        now = _state.now()
        if len(_state.dedup) > _MAX_RECEIPTS:
            _state.dedup = {k: v for k, v in _state.dedup.items() if v > now}
        for entry in entries:
            key = _dedup_key(url, entry)
            if _state.dedup.get(key, 0.0) <= now:  # the interval runs from the first accepted send
                _state.dedup[key] = now + _DEDUP_WINDOW


def _visibility_refusal(handle: str, seconds: int) -> _Refusal | None:
    """ChangeMessageVisibility: "You can continue to call ChangeMessageVisibility to extend the visibility
    timeout to the maximum allowed time [12 hours]. If you try to extend the visibility timeout beyond
    the maximum, your request is rejected." The 12 hours count from the receipt."""
    with _state.lock:
        received = _state.receipts.get(handle)
        elapsed = int(_state.now() - received) if received is not None else 0
    if elapsed + seconds > _MAX_VISIBILITY:
        return _Refusal(
            "InvalidParameterValue",
            f"Value {seconds} for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for "
            f"the message is beyond the limit [{_MAX_VISIBILITY} seconds].",
        )
    return None


def _sqs_params(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    operation = model.name
    url = str(params.get("QueueUrl", ""))
    fifo = url.endswith(".fifo")  # "The name of a FIFO queue must end with the .fifo suffix."
    verdict: dict[str, Any] = {}
    context[_CONTEXT_KEY] = verdict
    try:
        if operation == "SendMessage":
            _check_message(params, fifo)
            if fifo and _is_duplicate(url, params):
                verdict["answer"] = _accepted_send(params)
            else:
                verdict["sent"] = [dict(params)]
        elif operation == "SendMessageBatch":
            entries = _check_batch(params.get("Entries"), operation)
            for entry in entries:
                _check_message(entry, fifo)
            # SendMessageBatch: "the maximum total payload size (the sum of the individual lengths of
            # all of the batched messages) [is] 1 MiB" -- attributes included.
            total = sum(_message_size(entry) for entry in entries)
            if total > _MAX_MESSAGE_BYTES:
                raise _Refusal(
                    "BatchRequestTooLong",
                    f"Batch requests cannot be longer than {_MAX_MESSAGE_BYTES} bytes. You have sent {total} bytes.",
                )
            kept = [entry for entry in entries if not (fifo and _is_duplicate(url, entry))]
            if len(kept) != len(entries):
                verdict["successful"] = [
                    {"Id": entry["Id"], **_accepted_send(entry)} for entry in entries if entry not in kept
                ]
                params["Entries"] = kept
                if not kept:
                    verdict["answer"] = {"Successful": verdict.pop("successful"), "Failed": []}
            verdict["sent"] = [dict(entry) for entry in kept]
        elif operation == "DeleteMessageBatch":
            _check_batch(params.get("Entries"), operation)
        elif operation == "ChangeMessageVisibilityBatch":
            entries = _check_batch(params.get("Entries"), operation)
            failed = []
            kept = []
            for entry in entries:
                refusal = _visibility_refusal(
                    str(entry.get("ReceiptHandle", "")), int(entry.get("VisibilityTimeout", 0))
                )
                if refusal is None:
                    kept.append(entry)
                else:  # reported per entry, as SQS reports each entry of a batch individually
                    failed.append(
                        {"Id": entry["Id"], "SenderFault": True, "Code": refusal.code, "Message": refusal.message}
                    )
            if failed:
                params["Entries"] = kept
                verdict["failed"] = failed
                if not kept:
                    verdict["answer"] = {"Successful": [], "Failed": verdict.pop("failed")}
        elif operation == "ChangeMessageVisibility":
            refusal = _visibility_refusal(str(params.get("ReceiptHandle", "")), int(params.get("VisibilityTimeout", 0)))
            if refusal is not None:
                raise refusal
    except _Refusal as refusal:
        verdict.clear()
        verdict["refusal"] = refusal


def _sqs_before_call(context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
    verdict = context.get(_CONTEXT_KEY) or {}
    refusal = verdict.get("refusal")
    if refusal is not None:
        return _error_response("sqs", refusal)
    if "answer" in verdict:  # every message (or entry) was answered here, as AWS would have answered it
        return _http(200), {**verdict["answer"], "ResponseMetadata": _metadata(200)}
    return None


def _sqs_after_call(
    http_response: AWSResponse, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
) -> None:
    verdict = context.get(_CONTEXT_KEY) or {}
    if http_response.status_code >= 300 or "refusal" in verdict or "answer" in verdict:
        return
    operation = model.name
    if verdict.get("successful"):
        parsed.setdefault("Successful", []).extend(verdict.pop("successful"))
    if verdict.get("failed"):
        parsed.setdefault("Failed", []).extend(verdict.pop("failed"))
    request_params = context.get(_CONTEXT_KEY + ".params") or {}
    url = str(request_params.get("QueueUrl", ""))
    if operation == "ReceiveMessage":
        with _state.lock:
            now = _state.now()
            if len(_state.receipts) > _MAX_RECEIPTS:
                _state.receipts = {h: t for h, t in _state.receipts.items() if now - t < _MAX_VISIBILITY}
                if len(_state.receipts) > _MAX_RECEIPTS:
                    _state.receipts.clear()
            for message in parsed.get("Messages") or []:
                _state.receipts[str(message.get("ReceiptHandle"))] = now
    elif operation == "DeleteMessage":
        with _state.lock:
            _state.receipts.pop(str(request_params.get("ReceiptHandle")), None)
    elif operation == "DeleteMessageBatch":
        with _state.lock:
            for entry in request_params.get("Entries") or []:
                _state.receipts.pop(str(entry.get("ReceiptHandle")), None)
    elif operation in ("SendMessage", "SendMessageBatch") and url.endswith(".fifo"):
        sent = verdict.get("sent") or []
        if operation == "SendMessageBatch":
            ok = {str(item.get("Id")) for item in parsed.get("Successful") or []}
            sent = [entry for entry in sent if str(entry.get("Id")) in ok]
        _remember_sent(url, sent)
    elif operation in ("CreateQueue", "SetQueueAttributes", "GetQueueAttributes"):
        attributes = (
            parsed.get("Attributes") if operation == "GetQueueAttributes" else request_params.get("Attributes")
        ) or {}
        queue = str(parsed.get("QueueUrl") or url)
        if "DeduplicationScope" in attributes:
            with _state.lock:
                if attributes["DeduplicationScope"] == "messageGroup":
                    _state.group_scoped.add(queue)
                else:
                    _state.group_scoped.discard(queue)
    elif operation in ("DeleteQueue", "PurgeQueue"):
        with _state.lock:
            _state.dedup = {k: v for k, v in _state.dedup.items() if k[0] != url}


def _sqs_stash(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """Keep the caller's parameters for after-call (registered before the checks, so unmodified)."""
    context[_CONTEXT_KEY + ".params"] = {
        "QueueUrl": params.get("QueueUrl"),
        "ReceiptHandle": params.get("ReceiptHandle"),
        "Entries": [dict(e) for e in params.get("Entries") or []] if isinstance(params.get("Entries"), list) else [],
        "Attributes": params.get("Attributes"),
    }

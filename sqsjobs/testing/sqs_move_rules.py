"""Strict rules for SQS's message move tasks (DLQ redrive), which moto (5.2) does not implement at all.

moto answers StartMessageMoveTask with "not implemented" whatever its parameters, so a call AWS would
refuse looks the same as a good one there. These rules refuse, as AWS does, what the StartMessageMoveTask
reference rules out, before moto is reached:

  - MaxNumberOfMessagesPerSecond outside 1..500 ("The maximum value for messages per second is 500");
  - a SourceArn that is no queue's dead-letter queue ("only ARNs of dead-letter queues (DLQs) whose sources
    are other Amazon SQS queues are accepted"), answered `InvalidParameterValue`, "Source queue must be
    configured as a Dead Letter Queue.";
  - a DestinationArn equal to the SourceArn.

The DLQs are learnt from the RedrivePolicy of CreateQueue / SetQueueAttributes calls and GetQueueAttributes
answers seen by clients that carry the rules. To install them with the rest of the layer, add `HANDLERS`
to `sqsjobs.testing.aws_rules._HANDLERS` (before its parameter validator) and call `reset()` from
`aws_rules.reset()`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from botocore.awsrequest import AWSResponse

from .rule_state import _error_response, _Refusal

MAX_RATE = 500
_KEY = "sqsjobs.testing.sqs_move_rules"
_lock = threading.Lock()
_dlq_arns: set[str] = set()


def reset() -> None:
    """Forget the DLQs seen (queues are new in every test anyway: their names carry a fresh prefix)."""
    with _lock:
        _dlq_arns.clear()


def _params(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    operation = getattr(model, "name", "")
    if operation in ("CreateQueue", "SetQueueAttributes"):
        context[_KEY] = {"attributes": params.get("Attributes") or {}}
    elif operation == "StartMessageMoveTask":
        refusal = _check_start(params)
        if refusal is not None:
            context[_KEY] = {"refusal": refusal}


def _check_start(params: dict[str, Any]) -> _Refusal | None:
    rate = params.get("MaxNumberOfMessagesPerSecond")
    if rate is not None and not (isinstance(rate, int) and 1 <= rate <= MAX_RATE):
        return _Refusal(
            "InvalidParameterValue",
            f"Value {rate} for parameter MaxNumberOfMessagesPerSecond is invalid. "
            f"Reason: it must be between 1 and {MAX_RATE}.",
        )
    source = str(params.get("SourceArn", ""))
    with _lock:
        is_dlq = source in _dlq_arns
    if not is_dlq:
        return _Refusal("InvalidParameterValue", "Source queue must be configured as a Dead Letter Queue.")
    if params.get("DestinationArn") == source:
        return _Refusal(
            "InvalidParameterValue",
            f"Value {source} for parameter DestinationArn is invalid. Reason: it is the SourceArn.",
        )
    return None


def _before_call(context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
    refusal = (context.get(_KEY) or {}).get("refusal")
    return _error_response("sqs", refusal) if refusal is not None else None


def _after_call(
    http_response: AWSResponse, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
) -> None:
    if http_response.status_code >= 300:
        return
    operation = getattr(model, "name", "")
    if operation in ("CreateQueue", "SetQueueAttributes"):
        _learn((context.get(_KEY) or {}).get("attributes") or {})
    elif operation == "GetQueueAttributes":
        _learn(parsed.get("Attributes") or {})


def _learn(attributes: dict[str, Any]) -> None:
    raw = attributes.get("RedrivePolicy")
    if not raw:
        return
    try:
        target = json.loads(raw).get("deadLetterTargetArn")
    except (TypeError, ValueError, AttributeError):
        return
    if isinstance(target, str) and target:
        with _lock:
            _dlq_arns.add(target)


HANDLERS: list[tuple[str, Callable[..., Any]]] = [
    ("before-parameter-build.sqs", _params),
    ("before-call.sqs", _before_call),
    ("after-call.sqs", _after_call),
]

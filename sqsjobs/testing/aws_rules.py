"""A strict-AWS-rules layer: refuse, in tests, what real AWS refuses and moto lets through.

`install()` adds handlers to `botocore.handlers.BUILTIN_HANDLERS`, the list every new botocore
Session (boto3's and aiobotocore's `AioSession` alike) registers on its event emitter. So every
client created after `install()`, from any session, carries the rules; a client created *before*
it does not (its emitter is a copy taken at creation), except clients of boto3's default session
created later, which `install()` also reaches. sqsjobs builds its clients lazily (`sqsjobs.aws`), and
the test fixtures call `aws.reset_clients()`, so in practice every client is covered.

How it works, per call:
  - `before-parameter-build.<service>` sees the API parameters before botocore serialises them,
    checks them, and leaves its verdict in the call's `context` (it may also drop batch entries
    that AWS would accept but not act on, e.g. FIFO duplicates);
  - `before-call.<service>` short-circuits a refused call with `(http_response, parsed)`, so botocore
    raises its ordinary `ClientError` (or the modeled subclass, e.g. `BatchEntryIdsNotDistinct`) with
    AWS's error code and HTTP status. Short-circuited calls are not retried (AWS's 400s are not);
  - `after-call.<service>` records what later rules need (receipt times, FIFO deduplication ids).

Only rules moto (5.2) does not enforce itself are here; docs/testing.md lists both sets. Sources:
the Amazon SQS API Reference (as shipped in botocore's service model, `botocore/data/sqs/*/service-2.json`)
and the SQS Developer Guide pages cited at each rule.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from botocore import handlers as _botocore_handlers
from botocore.awsrequest import AWSResponse

from . import rule_state, sqs_move_rules
from .cloudwatch_rules import _cloudwatch_before_call, _cloudwatch_params
from .rule_state import _CONTEXT_KEY, _MAX_S3_KEY, _error_response, _Refusal, advance_clock
from .sqs_rules import _sqs_after_call, _sqs_before_call, _sqs_params, _sqs_stash

__all__ = ["advance_clock", "install", "installed", "reset", "uninstall"]

_install_lock = threading.Lock()


# -- S3 rules ----------------------------------------------------------------------------------


def _s3_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    key = params.get("Key")
    if isinstance(key, str) and len(key.encode("utf-8", "surrogatepass")) > _MAX_S3_KEY:
        # S3 User Guide, "Naming Amazon S3 objects": "The name for a key is a sequence of Unicode
        # characters with a maximum length of 1,024 bytes" (UTF-8); longer -> 400 KeyTooLongError
        # ("Your key is too long", S3 API Reference, "List of error codes"). moto accepts any length.
        context[_CONTEXT_KEY] = {"refusal": _Refusal("KeyTooLongError", "Your key is too long")}


def _s3_before_call(context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
    refusal = (context.get(_CONTEXT_KEY) or {}).get("refusal")
    return _error_response("s3", refusal) if refusal is not None else None


# DynamoDB: moto 5.2 already refuses every rule we need (item > 400 KB on PutItem, UpdateItem and
# TransactWriteItems; > 100 transaction items; two operations on one item in a transaction), with
# AWS's ValidationException -- so no handler here. See tests/unit/test_aws_rules.py.

# -- botocore's own parameter validation -----------------------------------------------------------


def _validate_parameters(params: dict[str, Any], model: Any, **_: Any) -> None:
    """What botocore checks before every call (types, required members, ranges in the service model).
    sqsjobs' clients skip it in production (`sqsjobs.aws.PARAMETER_VALIDATION`: our parameters are typed
    and checked); tests keep it, so a wrong parameter fails here as it would have failed there."""
    from botocore.validate import validate_parameters

    validate_parameters(params, model.input_shape)


_Handler = Callable[..., Any]

_HANDLERS: list[tuple[str, _Handler]] = [
    ("before-parameter-build.sqs", _sqs_stash),
    ("before-parameter-build.sqs", _sqs_params),
    ("before-call.sqs", _sqs_before_call),
    ("after-call.sqs", _sqs_after_call),
    ("before-parameter-build.s3", _s3_params),
    ("before-call.s3", _s3_before_call),
    *sqs_move_rules.HANDLERS,
    ("before-parameter-build.cloudwatch", _cloudwatch_params),
    ("before-call.cloudwatch", _cloudwatch_before_call),
    ("before-parameter-build", _validate_parameters),
]


def reset() -> None:
    """Forget what the rules remember (receipts, deduplication ids, the clock offset, DLQs seen)."""
    rule_state.reset()
    sqs_move_rules.reset()


def installed() -> bool:
    return all(spec in _botocore_handlers.BUILTIN_HANDLERS for spec in _HANDLERS)


def install() -> None:
    """Reach every botocore/aiobotocore client created from now on (idempotent)."""
    with _install_lock:
        for spec in _HANDLERS:
            if spec not in _botocore_handlers.BUILTIN_HANDLERS:
                _botocore_handlers.BUILTIN_HANDLERS.append(spec)
        default = _default_session()
        if default is not None:
            for event, handler in _HANDLERS:
                default.events.register(event, handler, unique_id=f"sqsjobs-rules-{event}-{handler.__name__}")


def uninstall() -> None:
    """Stop reaching new clients (clients already created keep the rules)."""
    with _install_lock:
        for spec in _HANDLERS:
            while spec in _botocore_handlers.BUILTIN_HANDLERS:
                _botocore_handlers.BUILTIN_HANDLERS.remove(spec)
        default = _default_session()
        if default is not None:
            for event, handler in _HANDLERS:
                default.events.unregister(event, handler, unique_id=f"sqsjobs-rules-{event}-{handler.__name__}")


def _default_session() -> Any:
    import boto3

    return boto3.DEFAULT_SESSION

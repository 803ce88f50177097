"""Fault injection for SQS, DynamoDB and S3 calls, through botocore's own events.

    plan = faults.install()
    plan.add(service="sqs", operation="DeleteMessageBatch", kind="after", times=1)
    plan.add(service="*", kind="throttle", rate=0.1)
    ...
    assert plan.count(operation="DeleteMessageBatch", kind="after") == 1
    plan.clear()

Kinds:
  - `throttle`: the service's real throttling answer (SQS 400 `RequestThrottled` or `ThrottlingException`,
    DynamoDB 400 `ProvisionedThroughputExceededException` or `ThrottlingException`, S3 503 `SlowDown`);
  - `500`: a server error (SQS 500 `InternalFailure`, DynamoDB 500 `InternalServerError`, S3 500
    `InternalError`), or 503 `ServiceUnavailable`;
  - `reset`: the connection drops before the request is answered (botocore's `ConnectionClosedError`,
    or `EndpointConnectionError` when it could not connect); the request did not take effect;
  - `after`: the request reaches the service and takes effect, then the answer is lost (the caller sees
    a 500 `InternalError`/`InternalFailure`); botocore may retry it, producing a real duplicate;
  - `slow`: the call waits `delay` seconds (default 0.2), then proceeds;
  - `entries`: an SQS batch call (`...Batch`) is answered 200 with every entry in `Failed`, SenderFault
    false, code `InternalError`: the service's own failure per entry, and nothing took effect. Other
    calls go through untouched.

All but `after` are answered from a `before-send` handler registered first (before moto's own
stubber), so botocore's normal retry logic sees them exactly as it would see the real ones. `after`
is applied in `needs-retry.<service>`, ahead of botocore's retry handler, by turning the real answer
into a 500. Only calls to the `sqs`, `dynamodb` and `s3` APIs are touched: never moto's control
endpoints (`/moto-api/`), never anything that is not a botocore API call.

Environment (read by `install_from_env()`, which `sqsjobs.testing.boot` calls):
    SQSJOBS_TEST_FAULTS="rate=0.1;services=sqs,dynamodb,s3;kinds=throttle,500,reset,after,slow;seed=7"
optionally with `operations=SendMessage,Delete*`, `times=N` (instead of rate) and `delay=0.2`.
"""

from __future__ import annotations

import contextvars
import fnmatch
import io
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore import handlers as _botocore_handlers
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

__all__ = ["KINDS", "SERVICES", "FaultPlan", "FaultRule", "install", "install_from_env", "plan", "uninstall"]

KINDS = ("throttle", "500", "reset", "after", "slow", "entries")
SERVICES = ("sqs", "dynamodb", "s3")
ENV_VAR = "SQSJOBS_TEST_FAULTS"
_NEUTRAL_URL = "http://fault-injected.sqsjobs.invalid/"


@dataclass
class FaultRule:
    """Which calls fail and how: services/operations are globs; `times` or `rate` decides how often."""

    services: tuple[str, ...] = ("*",)
    operations: tuple[str, ...] = ("*",)
    kinds: tuple[str, ...] = ("throttle",)
    rate: float | None = None
    times: int | None = None
    delay: float = 0.2

    def matches(self, service: str, operation: str) -> bool:
        return any(fnmatch.fnmatchcase(service, s) for s in self.services) and any(
            fnmatch.fnmatchcase(operation, o) for o in self.operations
        )


class _AwaitableBytes(bytes):
    """Response content that both botocore (`.content`) and aiobotocore (`await .content`) can read."""

    def __await__(self) -> Any:
        return self
        yield  # pragma: no cover -- makes this a generator


class _FaultResponse(AWSResponse):
    @property
    def content(self) -> bytes:
        return _AwaitableBytes(self.raw.getvalue())

    @property
    def text(self) -> str:
        return bytes(self.raw.getvalue()).decode()


def _respond(url: str, status: int, headers: dict[str, str], body: bytes) -> AWSResponse:
    http_headers = HTTPHeaders()
    for name, value in headers.items():
        http_headers[name] = value
    return _FaultResponse(url, status, http_headers, io.BytesIO(body))


def _error_answer(service: str, kind: str, rng: random.Random, url: str) -> AWSResponse:
    """The error answer the real service sends, in its own wire protocol, for botocore to parse."""
    if service == "s3":
        if kind == "throttle":
            status, code, message = 503, "SlowDown", "Please reduce your request rate."
        elif rng.random() < 0.5:
            status, code, message = 500, "InternalError", "We encountered an internal error. Please try again."
        else:
            status, code, message = 503, "ServiceUnavailable", "Service is unable to handle request."
        xml = f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault</RequestId></Error>"
        return _respond(url, status, {"Content-Type": "application/xml"}, xml.encode())
    if service == "dynamodb":
        namespace = "com.amazonaws.dynamodb.v20120810"
        if kind == "throttle":
            status, code, message = (
                400,
                rng.choice(["ProvisionedThroughputExceededException", "ThrottlingException"]),
                "Rate of requests exceeds the allowed throughput.",
            )
        else:
            status, code, message = 500, "InternalServerError", "Internal server error"
        body = json.dumps({"__type": f"{namespace}#{code}", "message": message})
        return _respond(url, status, {"Content-Type": "application/x-amz-json-1.0"}, body.encode())
    # SQS speaks JSON 1.0 and is query-compatible: the legacy code travels in x-amzn-query-error.
    if kind == "throttle":
        status, code, fault = 400, rng.choice(["RequestThrottled", "ThrottlingException"]), "Sender"
        message = "Rate exceeded"
    elif rng.random() < 0.5:
        status, code, fault, message = 500, "InternalFailure", "Receiver", "The request processing has failed."
    else:
        status, code, fault, message = 503, "ServiceUnavailable", "Receiver", "Service is unavailable."
    body = json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message})
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-query-error": f"{code};{fault}"}
    return _respond(url, status, headers, body.encode())


def _entries_failed(request: AWSPreparedRequest, service: str, operation: str) -> AWSResponse | None:
    """An SQS batch call's 200 answer with every entry failed on the service's side; None for other calls."""
    if service != "sqs" or not operation.endswith("Batch"):
        return None
    body = request.body
    if not isinstance(body, str | bytes | bytearray):  # a streamed body: no batch call sends one
        return None
    try:
        entries = json.loads(body or b"{}").get("Entries", [])
    except (ValueError, AttributeError):
        return None
    failed = [
        {"Id": entry["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected fault: entries"}
        for entry in entries
    ]
    answer = json.dumps({"Successful": [], "Failed": failed})
    return _respond(str(request.url), 200, {"Content-Type": "application/x-amz-json-1.0"}, answer.encode())


_pending_after: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "sqsjobs_fault_after", default=None
)


@dataclass
class FaultPlan:
    """The process's fault controller: rules, a seeded random source, and what it injected."""

    rules: list[FaultRule] = field(default_factory=list)
    injected: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    seed: int | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)

    # -- configuring -----------------------------------------------------------------------
    def add(
        self,
        service: str | Iterable[str] = "*",
        operation: str | Iterable[str] = "*",
        kind: str | Iterable[str] = "throttle",
        *,
        rate: float | None = None,
        times: int | None = None,
        delay: float = 0.2,
    ) -> FaultRule:
        """Make matching calls fail: the next `times` of them, or each with probability `rate`.

        Without either, every matching call fails (`rate=1`)."""
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; use {', '.join(KINDS)}")
        if rate is not None and not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        rule = FaultRule(
            services=(service,) if isinstance(service, str) else tuple(service),
            operations=(operation,) if isinstance(operation, str) else tuple(operation),
            kinds=kinds,
            rate=rate if rate is not None or times is not None else 1.0,
            times=times,
            delay=delay,
        )
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule and forget the counts."""
        with self._lock:
            self.rules.clear()
            self.injected.clear()

    def reseed(self, seed: int | None) -> None:
        with self._lock:
            self.seed = seed
            self._rng = random.Random(seed)

    def count(self, service: str | None = None, operation: str | None = None, kind: str | None = None) -> int:
        """How many faults were injected, optionally only for one service / operation / kind."""
        with self._lock:
            return sum(
                n
                for (s, o, k), n in self.injected.items()
                if service in (None, s) and operation in (None, o) and kind in (None, k)
            )

    # -- deciding --------------------------------------------------------------------------
    def _choose(self, service: str, operation: str) -> tuple[str, FaultRule] | None:
        with self._lock:
            for rule in self.rules:
                if not rule.matches(service, operation):
                    continue
                if rule.times is not None:
                    if rule.times <= 0:
                        continue
                    rule.times -= 1
                elif rule.rate is None or self._rng.random() >= rule.rate:
                    continue
                return self._rng.choice(rule.kinds), rule
        return None

    def _record(self, service: str, operation: str, kind: str) -> None:
        with self._lock:
            self.injected[(service, operation, kind)] += 1

    # -- botocore handlers -----------------------------------------------------------------
    def before_send(self, request: AWSPreparedRequest, event_name: str, **_: Any) -> AWSResponse | None:
        _pending_after.set(None)
        parts = event_name.split(".")
        if len(parts) < 3 or parts[1] not in SERVICES or "/moto-api" in str(request.url):
            return None
        service, operation = parts[1], parts[2]
        chosen = self._choose(service, operation)
        if chosen is None:
            return None
        kind, rule = chosen
        if kind == "slow":
            self._record(service, operation, kind)
            time.sleep(max(0.0, min(rule.delay, 30.0)))
            return None
        if kind == "after":
            _pending_after.set((service, operation))
            return None
        if kind == "entries":
            answer = _entries_failed(request, service, operation)
            if answer is not None:
                self._record(service, operation, kind)
                _neutralise_in_process_moto(request)
            return answer
        self._record(service, operation, kind)
        url = str(request.url)
        _neutralise_in_process_moto(request)
        if kind == "reset":
            if self._rng.random() < 0.8:
                raise ConnectionClosedError(endpoint_url=url)
            raise EndpointConnectionError(endpoint_url=url)
        return _error_answer(service, kind, self._rng, url)

    def needs_retry(self, response: Any, caught_exception: Any, **_: Any) -> None:
        pending = _pending_after.get()
        if pending is None:
            return None
        _pending_after.set(None)
        if caught_exception is not None or response is None:
            return None  # the request failed anyway: nothing was lost
        http_response, parsed = response
        if http_response.status_code >= 300:
            return None
        service, operation = pending
        self._record(service, operation, "after")
        code = {"s3": "InternalError", "dynamodb": "InternalServerError"}.get(service, "InternalFailure")
        http_response.status_code = 500
        parsed.clear()
        parsed.update(
            {
                "Error": {"Code": code, "Message": "The answer was lost (injected fault: after)."},
                "ResponseMetadata": {"HTTPStatusCode": 500, "HTTPHeaders": {}, "RetryAttempts": 0},
            }
        )
        return None  # botocore's own retry handler, next in line, decides on the 500


def _neutralise_in_process_moto(request: AWSPreparedRequest) -> None:
    """moto's in-process stubber is another `before-send` handler and botocore calls them all: point this
    request somewhere moto does not serve, so the injected failure has no effect on moto's state."""
    models = sys.modules.get("moto.core.models")
    stubber = getattr(models, "botocore_stubber", None)
    if stubber is not None and getattr(stubber, "enabled", False):
        request.url = _NEUTRAL_URL


_plan = FaultPlan()
_install_lock = threading.Lock()


def _specs() -> list[tuple[Any, ...]]:
    first = _botocore_handlers.REGISTER_FIRST
    specs: list[tuple[Any, ...]] = [("before-send", _plan.before_send, first)]
    # botocore's retry handler sits on `needs-retry.<service>`; ours must run before it there.
    specs += [(f"needs-retry.{service}", _plan.needs_retry, first) for service in SERVICES]
    return specs


def plan() -> FaultPlan:
    """The process's fault controller (install() also returns it)."""
    return _plan


def install() -> FaultPlan:
    """Reach every botocore/aiobotocore client created from now on (idempotent); returns the controller."""
    with _install_lock:
        for spec in _specs():
            if spec not in _botocore_handlers.BUILTIN_HANDLERS:
                _botocore_handlers.BUILTIN_HANDLERS.append(spec)
    return _plan


def uninstall() -> None:
    with _install_lock:
        for spec in _specs():
            while spec in _botocore_handlers.BUILTIN_HANDLERS:
                _botocore_handlers.BUILTIN_HANDLERS.remove(spec)
    _plan.clear()


def parse_spec(spec: str) -> tuple[FaultRule, int | None]:
    """`rate=0.1;services=sqs,s3;operations=Send*;kinds=throttle,500;times=3;delay=0.2;seed=7`."""
    values: dict[str, str] = {}
    for part in spec.split(";"):
        if part.strip():
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"{ENV_VAR}: {part!r} is not key=value")
            values[key.strip().lower()] = value.strip()
    known = {"rate", "services", "operations", "kinds", "times", "delay", "seed"}
    if set(values) - known:
        raise ValueError(f"{ENV_VAR}: unknown key(s) {sorted(set(values) - known)}; use {sorted(known)}")

    def items(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = values.get(name)
        return tuple(x.strip() for x in raw.split(",") if x.strip()) if raw else default

    kinds = items("kinds", ("throttle",))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"{ENV_VAR}: unknown kind(s) {unknown}; use {', '.join(KINDS)}")
    times = int(values["times"]) if "times" in values else None
    rate = float(values["rate"]) if "rate" in values else (None if times is not None else 1.0)
    rule = FaultRule(
        services=items("services", ("*",)),
        operations=items("operations", ("*",)),
        kinds=kinds,
        rate=rate,
        times=times,
        delay=float(values.get("delay", "0.2")),
    )
    return rule, int(values["seed"]) if "seed" in values else None


def install_from_env(environ: dict[str, str] | None = None) -> FaultPlan | None:
    """Install faults described by `SQSJOBS_TEST_FAULTS`; None when it is unset or empty."""
    spec = (environ if environ is not None else os.environ).get(ENV_VAR, "").strip()
    if not spec:
        return None
    rule, seed = parse_spec(spec)
    controller = install()
    controller.reseed(seed)
    with controller._lock:
        controller.rules.append(rule)
    return controller

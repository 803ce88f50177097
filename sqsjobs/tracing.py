"""Tracing: a job's run is a span of the trace that dispatched it (OpenTelemetry), and a job sent from
a Lambda function carries the invocation's X-Ray trace header.

- OpenTelemetry, when `opentelemetry-api` is installed (`pip install sqsjobs[opentelemetry]`): the
  dispatching context travels in the envelope's `trace` field as a W3C `traceparent`; each run is a
  CONSUMER span `<job> process`, a child of it, current while `handle()` (and its middleware) runs, so
  the job's own spans nest under it. Without an SDK configured (no tracer provider set) nothing is
  done at all, not even OpenTelemetry's no-op spans (a provider set later counts within a second);
  without the package nothing here is imported.
- X-Ray: inside Lambda (`_X_AMZN_TRACE_ID`), every message sent carries it as the `AWSTraceHeader`
  system attribute, which X-Ray follows from SQS into the consuming function.

A `trace` comes from a message like everything else: the propagator parses it (a malformed one is
ignored: the span starts a new trace) and the envelope bounds its length.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

_api: Any = None  # None: not looked for yet; False: not installed; else the modules


def _otel() -> Any:
    global _api
    if _api is None:
        try:
            import opentelemetry.propagate
            import opentelemetry.trace
        except ImportError:
            _api = False
        except Exception:
            # OpenTelemetry's own set-up failed (OTEL_PROPAGATORS naming one that is not installed raises
            # at import): jobs run untraced rather than not at all, and it is said once.
            logging.getLogger("sqsjobs").warning(
                "OpenTelemetry could not be loaded; jobs run without spans until it is fixed", exc_info=True
            )
            _api = False
        else:
            _api = (opentelemetry.propagate, opentelemetry.trace)
    return _api or None


_sdk_checked = -1.0
#: OpenTelemetry loads the provider this names on first use, without the application importing it.
_PROVIDER_VARIABLE = "OTEL_PYTHON_TRACER_PROVIDER"


_named_read_at = -2.0
_named = False


def _provider_named() -> bool:
    """Whether OTEL_PYTHON_TRACER_PROVIDER is set, read at most once a second (a read of the
    environment costs about a microsecond, which every untraced job would pay)."""
    global _named_read_at, _named
    now = time.monotonic()
    if now - _named_read_at > 1.0:
        _named, _named_read_at = bool(os.environ.get(_PROVIDER_VARIABLE)), now
    return _named


def _tracing() -> Any:
    """The API when an SDK is configured (a tracer provider set), else None. Without one every span is a
    no-op that still costs several microseconds a job (the API is often installed by another library),
    so its absence is looked for again at most once a second, not per job."""
    global _sdk_checked
    if _api is None and "opentelemetry.trace" not in sys.modules and not _provider_named():
        # Nobody has imported OpenTelemetry or named a provider for it to load, so there is no tracer
        # provider: not worth an import (milliseconds of a Lambda cold start). The variable is read again
        # at most a second later.
        return None
    api = _otel()
    if api is None:
        return None
    if _sdk_checked < 0 or time.monotonic() - _sdk_checked > 1.0:
        if not isinstance(api[1].get_tracer_provider(), api[1].ProxyTracerProvider):
            _sdk_checked = 0.0  # set for good: OpenTelemetry never unsets a provider
            return api
        _sdk_checked = time.monotonic()
        return None
    return api if _sdk_checked == 0.0 else None


def outgoing() -> str | None:
    """The current trace context as a `traceparent`, to travel with a job being dispatched."""
    api = _tracing()
    if api is None:
        return None
    carrier: dict[str, str] = {}
    api[0].inject(carrier)
    parent = carrier.get("traceparent")
    return parent if parent and len(parent) <= 128 else None


#: The one null context every untraced run gets (a caller may test for it and skip the `with`).
UNTRACED = contextlib.nullcontext()


def run_span(
    job_name: str, queue: str, job_id: str, attempt: int, parent: str | None
) -> contextlib.AbstractContextManager[None]:
    """The span of one run, current inside; a no-op without OpenTelemetry and a configured SDK (one
    shared null context: an untraced run builds nothing, not even a generator)."""
    api = _tracing()
    if api is None:
        return UNTRACED
    return _span(api, job_name, queue, job_id, attempt, parent)


@contextlib.contextmanager
def _span(api: Any, job_name: str, queue: str, job_id: str, attempt: int, parent: str | None) -> Iterator[None]:
    propagate, trace = api
    context = propagate.extract({"traceparent": parent}) if parent else None
    tracer = trace.get_tracer("sqsjobs")
    attributes = {
        "messaging.system": "aws_sqs",
        "messaging.operation.type": "process",
        "messaging.destination.name": queue,
        "messaging.message.id": job_id,
        "sqsjobs.job": job_name,
        "sqsjobs.attempt": attempt,
    }
    with tracer.start_as_current_span(
        f"{job_name} process", context=context, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ):
        yield


def xray_header() -> str | None:
    """The X-Ray trace header of this Lambda invocation (None outside Lambda)."""
    header = os.environ.get("_X_AMZN_TRACE_ID")
    return header if header and len(header) <= 1024 else None

"""CloudWatch PutMetricData limits moto (5.2) does not enforce, refused as AWS refuses them.

From the CloudWatch API Reference, PutMetricData: "Each request is also limited to no more than
1000 different metrics", "up to 150 values per metric" (Values/Counts), "up to 30 dimensions per
metric", values within -2^360..2^360 and never NaN or infinite, "Each PutMetricData request is
limited to 1 MB in size". The size is estimated from the parameters as JSON, which is larger than
the CBOR botocore sends, so a request refused here would not be at risk of passing there.
"""

from __future__ import annotations

import json
import math
from typing import Any

from botocore.awsrequest import AWSResponse

from .rule_state import _CONTEXT_KEY, _error_response, _Refusal

MAX_METRICS = 1000
MAX_VALUES = 150
MAX_DIMENSIONS = 30
MAX_REQUEST_BYTES = 1_048_576
_LIMIT = 2.0**360


def _cloudwatch_params(params: dict[str, Any], context: dict[str, Any], model: Any, **_: Any) -> None:
    if getattr(model, "name", "") != "PutMetricData":
        return
    refusal = _check(params)
    if refusal is not None:
        context[_CONTEXT_KEY] = {"refusal": refusal}


def _check(params: dict[str, Any]) -> _Refusal | None:
    data = params.get("MetricData") or []
    if len(data) > MAX_METRICS:
        return _Refusal(
            "InvalidParameterValue", f"The collection MetricData must not have a size greater than {MAX_METRICS}."
        )
    for index, datum in enumerate(data, 1):
        values = datum.get("Values") or []
        if len(values) > MAX_VALUES:
            return _Refusal(
                "InvalidParameterValue",
                f"The collection MetricData.member.{index}.Values must not have a size greater than {MAX_VALUES}.",
            )
        if len(datum.get("Dimensions") or []) > MAX_DIMENSIONS:
            return _Refusal(
                "InvalidParameterValue",
                f"The collection MetricData.member.{index}.Dimensions must not have a size greater than "
                f"{MAX_DIMENSIONS}.",
            )
        for value in [*values, *([datum["Value"]] if "Value" in datum else [])]:
            if not math.isfinite(value) or abs(value) > _LIMIT:
                return _Refusal(
                    "InvalidParameterValue", f"The value {value} for parameter MetricData.member.{index} is invalid."
                )
    size = len(json.dumps(params, default=str))
    if size > MAX_REQUEST_BYTES:
        return _Refusal("RequestEntityTooLarge", f"Request size {size} exceeded {MAX_REQUEST_BYTES} bytes", 413)
    return None


def _cloudwatch_before_call(context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
    refusal = (context.get(_CONTEXT_KEY) or {}).get("refusal")
    return _error_response("cloudwatch", refusal) if refusal is not None else None

"""JSON objects in a sample's S3 bucket: what the samples keep (orders, reports, invoices) and read back."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from sqsjobs import aws


def read_json(bucket: str, key: str) -> dict[str, Any] | None:
    """The object at `key`, or None when there is none yet."""
    try:
        body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    found = json.loads(body)
    assert isinstance(found, dict)
    return found


def write_json(bucket: str, key: str, value: dict[str, Any]) -> None:
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(value).encode())

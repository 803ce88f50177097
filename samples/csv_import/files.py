"""The import's files in S3: the upload, the rows imported, the rows rejected, the summary.

Chunks write under keys named by their first line, so a chunk that runs again (a retry, a redelivery)
overwrites its own output instead of adding to it: the counts stay right without any bookkeeping here.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from sqsjobs import aws

BUCKET = "sample-csv-import"


def create_bucket() -> None:
    aws.client("s3").create_bucket(Bucket=BUCKET)


def put_text(key: str, text: str) -> None:
    aws.client("s3").put_object(Bucket=BUCKET, Key=key, Body=text.encode())


def get_bytes(key: str, start: int = 0, end: int | None = None) -> bytes:
    """Bytes [start, end) of an object (a ranged GET: a chunk reads only its own rows)."""
    options: dict[str, Any] = (
        {} if end is None and start == 0 else {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
    )
    return bytes(aws.client("s3").get_object(Bucket=BUCKET, Key=key, **options)["Body"].read())


def put_json(key: str, value: Any) -> None:
    aws.client("s3").put_object(Bucket=BUCKET, Key=key, Body=json.dumps(value).encode())


def get_json(key: str) -> Any:
    try:
        return json.loads(get_bytes(key))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def keys(prefix: str) -> list[str]:
    pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

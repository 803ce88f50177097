"""Where a job's offloaded body lives in S3: `<prefix><job id>-<8 hex>`, one rule for the writer
(sqsjobs.payloads) and for the signature check that a body came from its own job's object
(sqsjobs.signing)."""

from __future__ import annotations

import re
import uuid

#: Characters a job id may bring into an object key as they are; anything else becomes `_`.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def stem(prefix: str, job_id: str) -> str:
    """The part of every object key of this job before its random suffix."""
    return prefix + (_UNSAFE.sub("_", job_id[:128]) if job_id else str(uuid.uuid4()))


def new_key(prefix: str, job_id: str) -> str:
    """A fresh object key for this job's body (the suffix keeps two sends of one job apart)."""
    return f"{stem(prefix, job_id)}-{uuid.uuid4().hex[:8]}"


def is_own(prefix: str, job_id: str, key: str) -> bool:
    """Whether `key` is one `new_key` could have made for this job."""
    return bool(job_id) and re.fullmatch(re.escape(stem(prefix, job_id)) + "-[0-9a-f]{8}", key) is not None

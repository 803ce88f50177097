"""What a retry sends: a failed job's body with its clock restarted, re-signed, and when that is allowed.

A retry re-signs a signed body with a fresh `dispatched_at`: that undoes the max age
(SQSJOBS_SIGNING_MAX_AGE), so it is done only for a body a worker of this deployment vouched for
(its DLQ copy's tag), one SQS's redrive moved while it was still fresh, or one the operator vouched for.
A body that is no signed envelope is never signed: it is sent as it is and judged again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .envelope import decode, involved
from .errors import BadMessageError
from .failures import PREFIX, FailedJob
from .timing import parse_iso, utc_iso

if TYPE_CHECKING:
    from .signing import SigningKeys


def may_resign(keys: SigningKeys | None, job: FailedJob, body: str, *, accepted: bool) -> bool:
    """Whether a retry may send this job's body re-signed (with a fresh time).

    Yes when signing is off, a worker's tag vouches for the copy, or the operator vouched for it
    (`accepted`); yes for a body that is no signed envelope (nothing is re-signed). Otherwise only a
    redrive copy SQS moved (no sqsjobs.* attributes) whose envelope checks out in full (`verified`:
    its id, its S3 object) and whose send passes the max age (a standard queue's redrive keeps
    SentTimestamp; a late send is a replay). Without a max age that last check passes everything,
    as a replay sent straight to the queue would run anyway.
    """
    if keys is None or job.vouched or accepted:
        return True
    try:
        envelope = decode(body, keys)
    except BadMessageError:
        return True
    if not job.verified or job.reason != "redrive":
        return False
    if any(name.startswith(PREFIX) for name in job.message.attributes):
        return False
    try:
        keys.check_age(envelope.dispatched_at, envelope.available_at, job.message.sent_at)
    except BadMessageError:
        return False
    return True


def fresh_body(body: str, keys: SigningKeys | None, now: float) -> str:
    """Restart the job's clock: dispatched_at is now and retry_until moves with it."""
    try:
        envelope = decode(body, keys)
    except BadMessageError:
        return body  # unreadable or unsigned: resend as it was, it will be judged again
    shift = now - parse_iso(envelope.dispatched_at)
    if envelope.retry_until:
        envelope.retry_until = utc_iso(parse_iso(envelope.retry_until) + shift)
    envelope.available_at = None
    envelope.dispatched_at = utc_iso(now)
    if involved(envelope):
        envelope.extra["retried"] = True
    return envelope.encode(keys)


def in_workflow(body: str, keys: SigningKeys | None) -> bool:
    """Whether a body is a chain/batch job or a callback (it then has an "ended" mark to clear)."""
    try:
        return involved(decode(body, keys))
    except BadMessageError:
        return False

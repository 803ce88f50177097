"""The JSON envelope every job travels in, and its optional HMAC signature.

JSON only, never pickle: a message can only name a registered job and carry
data that the job's pydantic model validates. The format is versioned (`v`) so
a later layout can be read next to this one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import BadMessageError

VERSION = 1
_OPTIONAL = ("available_at", "retry_until", "chain", "batch_id", "unique_key", "trace")


@dataclass(slots=True)
class Envelope:
    """One job on the wire. Times are ISO-8601 UTC strings so a DLQ body reads well."""

    id: str
    job: str
    payload: dict[str, Any]
    queue: str
    dispatched_at: str
    available_at: str | None = None
    retry_until: str | None = None
    #: The chain this job is a link of: {"id", "pos", "next": [links], "catch": link | None}.
    chain: dict[str, Any] | None = None
    batch_id: str | None = None
    unique_key: str | None = None
    trace: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": VERSION,
            "id": self.id,
            "job": self.job,
            "payload": self.payload,
            "queue": self.queue,
            "dispatched_at": self.dispatched_at,
        }
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        data.update(self.extra)
        return data

    def encode(self, signing_key: bytes | None = None) -> str:
        data = self.to_dict()
        if signing_key is not None:
            data["sig"] = _signature(data, signing_key)
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def decode(body: str, signing_key: bytes | None = None) -> Envelope:
    """Parse and (when a key is configured) verify a message body; raise BadMessageError otherwise."""
    try:
        data = json.loads(body)
    except (ValueError, TypeError) as exc:
        raise BadMessageError("malformed", f"message body is not JSON ({exc}); it was not sent by sqsjobs") from None
    if not isinstance(data, dict):
        raise BadMessageError("malformed", "message body is JSON but not an sqsjobs envelope object")
    if signing_key is not None:
        sig = data.pop("sig", None)
        if not isinstance(sig, str):
            raise BadMessageError("signature", "message is not signed but SQSJOBS_SIGNING_KEY is set; it was not run")
        if not hmac.compare_digest(sig, _signature(data, signing_key)):
            raise BadMessageError(
                "signature", "message signature does not match SQSJOBS_SIGNING_KEY (tampered, or another key)"
            )
    else:
        data.pop("sig", None)
    version = data.pop("v", None)
    if version != VERSION:
        raise BadMessageError("malformed", f"unsupported envelope version {version!r}; expected {VERSION}")
    try:
        env = Envelope(
            id=_str(data.pop("id")),
            job=_str(data.pop("job")),
            payload=data.pop("payload"),
            queue=_str(data.pop("queue")),
            dispatched_at=_str(data.pop("dispatched_at")),
        )
    except KeyError as exc:
        raise BadMessageError("malformed", f"envelope lacks the field {exc.args[0]!r}") from None
    if not isinstance(env.payload, dict):
        raise BadMessageError("malformed", "envelope field 'payload' must be a JSON object")
    for name in _OPTIONAL:
        if name in data:
            setattr(env, name, data.pop(name))
    env.extra = data
    return env


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise BadMessageError("malformed", f"envelope field holds {type(value).__name__}, expected a string")
    return value


def _signature(data: dict[str, Any], key: bytes) -> str:
    canonical = json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()

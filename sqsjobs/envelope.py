"""The JSON envelope every job travels in, and its optional HMAC signature.

JSON only, never pickle: a message can only name a registered job and carry
data that the job's pydantic model validates. The format is versioned (`v`) so
a later layout can be read next to this one. An encrypted job's payload travels sealed in
`encrypted` (sqsjobs.encryption), which a signature covers like any other field.

Nothing a message says is trusted: `decode` either returns an `Envelope` whose
every field has the type, size and shape the rest of sqsjobs relies on, or
raises `BadMessageError` — no other exception can come out of it, whatever the
body (deep nesting, huge numbers, lone surrogates, a forged `chain`).
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
    with_config,
)
from pydantic_core import from_json as _parse
from typing_extensions import TypedDict  # pydantic needs this one on Python 3.11

from .errors import BadMessageError
from .signing import SigningKeys
from .timing import has_utc

VERSION = 1
_OPTIONAL = ("available_at", "retry_until", "chain", "batch_id", "unique_key", "trace", "encrypted", "tags")
#: Deeper than this is not a job's data but an attack on the parser (payload models nest a few levels).
MAX_DEPTH = 64
_MAX_ID = 128
_MAX_NAME = 256
#: An RFC 3339 time with a zone, as envelope.schema.json's `time` spells it (a test keeps the two the same).
TIME_PATTERN = (
    r"^([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
#: A chain id as sqsjobs writes it (str(uuid.uuid4())): the schema's `uuid` format, hyphens included.
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_TIME = re.compile(TIME_PATTERN.removesuffix("$"))
_UUID = re.compile(UUID_PATTERN.removesuffix("$"))
#: pydantic-core's own integer-digit limit, fixed; Python's (sys.get_int_max_str_digits) may be set lower.
_PARSER_DIGITS = 4300


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
    #: An encrypted job's payload, sealed (sqsjobs.encryption); `payload` is then `{}` on the wire.
    encrypted: dict[str, Any] | None = None
    #: The job's tags (`Job.job_tags()`), for the job log's search.
    tags: list[str] | None = None
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

    def encode(self, signing_key: bytes | SigningKeys | None = None, queue: str | None = None) -> str:
        """The body; signed with the current key when keys are given, for `queue` (default: its own)."""
        data = self.to_dict()
        if signing_key is not None:
            data["sig"] = SigningKeys.of(signing_key).sign(data, queue)
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


# -- the wire model: what a body must look like to become an Envelope ---------------------
def _iso(text: str) -> str:
    if not _TIME.fullmatch(text):
        raise ValueError("not an RFC 3339 time with a zone (2026-01-01T09:30:00.000Z)")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise ValueError("an ISO-8601 time without a time zone")
    if not has_utc(moment):  # a job's `dispatched_at(job)` would raise inside the job
        raise ValueError("a time its offset moves outside years 1-9999")
    return text


def _uuid(text: str) -> str:
    if not _UUID.fullmatch(text):
        raise ValueError("not a UUID in its hyphenated form")
    uuid.UUID(text)  # chain and link ids are derived from it (uuid5)
    return text


def _integral(value: Any) -> Any:
    """JSON Schema's `integer` includes 1.0: take an integral float as its int, as the schema does."""
    return int(value) if type(value) is float and value.is_integer() else value


IsoTime = Annotated[StrictStr, Field(max_length=64), AfterValidator(_iso)]
Id = Annotated[StrictStr, Field(min_length=1, max_length=_MAX_ID)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=_MAX_NAME)]
_STRICT = ConfigDict(strict=True, extra="allow")


class _Sealed(BaseModel):
    """An encrypted payload: {"v": 1, "alg": "A256GCM", "key", "iv", "ct"} (base64; sqsjobs.encryption)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    v: Literal[1]
    alg: Literal["A256GCM"]
    key: Annotated[StrictStr, Field(min_length=1, max_length=8192)]
    iv: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    ct: StrictStr


class _Link(BaseModel):
    """A job still to come in a chain or a batch: {"job", "payload", "queue"?, "delay"?} or {"batch"}."""

    model_config = _STRICT
    job: Name | None = None
    payload: dict[str, Any] | None = None
    queue: Name | None = None
    delay: float | None = Field(default=None, ge=0)
    batch: _BatchSpec | None = None
    encrypted: _Sealed | None = None  # the payload of an encrypted job class, sealed (payload then {})

    @model_validator(mode="after")
    def _one_kind(self) -> _Link:
        if self.batch is None and (self.job is None or self.payload is None):
            raise ValueError("a link needs 'job' and 'payload', or 'batch'")
        return self


class _Member(BaseModel):
    model_config = _STRICT
    chain: list[_Link] | None = None
    job: Name | None = None
    payload: dict[str, Any] | None = None
    encrypted: _Sealed | None = None


class _BatchSpec(BaseModel):
    model_config = _STRICT
    name: StrictStr | None = None
    queue: Name | None = None
    allow_failures: bool = False
    jobs: list[_Member]
    callbacks: dict[Literal["then", "catch", "finally"], _Link] = {}


class _Chain(BaseModel):
    model_config = _STRICT
    id: Annotated[StrictStr, AfterValidator(_uuid)]
    pos: Annotated[StrictInt, BeforeValidator(_integral), Field(ge=0, le=100_000)]
    next: list[_Link]
    catch: _Link | None = None


@with_config(_STRICT)
class _Wire(TypedDict):
    """The envelope's fields. A TypedDict, not a model: only whether a body fits matters (what validation
    returns is dropped), and a model instance built per message for nothing cost 0.6 µs of 2.4."""

    id: Id
    job: Name
    payload: dict[str, Any]
    queue: Name
    dispatched_at: IsoTime
    available_at: NotRequired[IsoTime | None]
    retry_until: NotRequired[IsoTime | None]
    chain: NotRequired[_Chain | None]
    batch_id: NotRequired[Id | None]
    unique_key: NotRequired[Annotated[StrictStr, Field(max_length=1024)] | None]
    trace: NotRequired[Annotated[StrictStr, Field(max_length=_MAX_ID)] | None]
    encrypted: NotRequired[_Sealed | None]
    tags: NotRequired[
        Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=128)]], Field(max_length=10)] | None
    ]
    # Fields written by sqsjobs itself outside the named ones (callbacks, `failed retry`).
    retried: NotRequired[bool | None]
    for_batch: NotRequired[Id | None]
    for_chain: NotRequired[Id | None]


_Link.model_rebuild()
_Member.model_rebuild()
#: Validates a body's fields, without TypeAdapter's own call on every message.
_WIRE = TypeAdapter(_Wire).validator.validate_python


def involved(envelope: Envelope | None) -> bool:
    """Whether the job belongs to a chain or a batch, or is one's callback: such a job runs once per
    job id however many copies of its message arrive (plain jobs skip all of this, and never load
    the workflow modules)."""
    return envelope is not None and bool(
        envelope.chain or envelope.batch_id or envelope.extra.get("for_batch") or envelope.extra.get("for_chain")
    )


def has_sealed(value: Any) -> bool:
    """Whether chain links (with nested batches, their members and callbacks) hold a sealed payload
    anywhere: a payload of an `encrypted = True` class is replaced by `encrypted` (sqsjobs.encryption)."""
    if isinstance(value, list):
        return any(has_sealed(item) for item in value)
    if isinstance(value, dict):
        return "encrypted" in value or any(has_sealed(v) for k, v in value.items() if k != "payload")
    return False


def decode(
    body: str,
    signing_key: bytes | SigningKeys | None = None,
    *,
    queue: str | None = None,
    object_key: str | None = None,
    sent_at: float | None = None,
) -> Envelope:
    """Parse and (when keys are given) verify a message body; raise BadMessageError otherwise.

    With keys, the signature must be a listed key's, for `queue` (the queue the message was received
    on; None: the one it names), the body read from S3 must come from `object_key` of its own job,
    and with a max age the message must have been sent (`sent_at`, SQS's time) in time.
    """
    if not isinstance(body, str):  # a connection of the user's own may hand over anything
        raise BadMessageError(
            "malformed", f"message body is {type(body).__name__}, not text; it was not sent by sqsjobs"
        )
    plain = body.isascii() and "\\u" not in body
    data = _read(body, plain)
    if not isinstance(data, dict):
        raise BadMessageError("malformed", "message body is JSON but not an sqsjobs envelope object")
    if _maybe_hostile(body, plain):
        _check_shape(data)
    keys = SigningKeys.of(signing_key) if signing_key is not None else None
    sig = data.pop("sig", None)
    if keys is not None:
        keys.verify(sig, data, queue)
    version = _integral(data.pop("v", None))
    if version != VERSION or type(version) is not int:
        raise BadMessageError("malformed", f"unsupported envelope version {_short(version)}; expected {VERSION}")
    try:
        _WIRE(data)
    except ValidationError as exc:
        raise BadMessageError("malformed", f"not a valid sqsjobs envelope: {_problems(exc)}") from None
    except RecursionError:
        raise BadMessageError("malformed", f"message body is nested deeper than {MAX_DEPTH} levels") from None
    if isinstance(data.get("chain"), dict):
        data["chain"]["pos"] = int(data["chain"]["pos"])  # 1.0 -> 1: the schema's integer
    env = Envelope(
        id=data.pop("id"),
        job=data.pop("job"),
        payload=data.pop("payload"),
        queue=data.pop("queue"),
        dispatched_at=data.pop("dispatched_at"),
    )
    if data:
        for name in _OPTIONAL:
            if name in data:
                setattr(env, name, data.pop(name))
        env.extra = data
    if keys is not None:
        if object_key is not None:
            keys.check_object(env.id, object_key)
        keys.check_age(env.dispatched_at, env.available_at, sent_at)
    return env


def _read(body: str, plain: bool) -> Any:
    """The body's JSON, as json.loads reads it.

    A plain body (ASCII, no \\u escape: what sqsjobs writes for a payload of printable ASCII) is read by
    pydantic-core's parser, in a third of json.loads' time; wherever it reads one, the values are json.loads'
    (checked by tests/unit/test_envelope_parse.py). Any other body goes to json.loads: pydantic-core reads
    text and escapes outside ASCII 2-5x slower and keeps a UTF-8 copy of the body while it lives. So does a
    body pydantic-core refuses, so that json.loads' verdict and its message stand; and every body while
    Python's integer-digit limit is below pydantic-core's fixed 4,300 (it ignores the lower one).
    """
    if plain and ((limit := sys.get_int_max_str_digits()) >= _PARSER_DIGITS or limit == 0):
        try:
            return _parse(body, cache_strings=False)  # nothing of a payload is kept once its job is done
        except ValueError:
            pass
    try:
        return json.loads(body)
    except RecursionError:
        raise BadMessageError("malformed", f"message body is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, TypeError) as exc:
        raise BadMessageError("malformed", f"message body is not JSON ({exc}); it was not sent by sqsjobs") from None


def _maybe_hostile(body: str, plain: bool) -> bool:
    """Cheap test for the bodies worth a full walk: many brackets, or a lone surrogate, escaped (a plain body
    has no \\u escape) or raw (SQS delivers valid Unicode, but a connection in this process may not)."""
    if body.count("[") + body.count("{") > MAX_DEPTH:
        return True
    if plain:
        return False
    if "\\ud" in body or "\\uD" in body:  # JSON writes the u of an escape in lower case, its hex digits in either
        return True
    try:
        body.encode()  # a copy, dropped at once: a regex search for the range takes 3-8x as long
    except UnicodeEncodeError:
        return True
    return False


def _check_shape(data: Any) -> None:
    """No nesting deeper than MAX_DEPTH and no lone surrogate anywhere (it cannot be logged, signed
    or sent on to SQS). Iterative: the body is hostile until proven otherwise."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadMessageError("malformed", f"message body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _check_text(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise BadMessageError("malformed", "message body holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None


def _problems(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "(envelope)"
        parts.append(f"{where[:80]}: {error['msg'][:120]}")
    return "; ".join(parts)


def _short(value: Any) -> str:
    return repr(value)[:40]


def _signature(data: dict[str, Any], key: bytes) -> str:
    """The `sig` one raw key (id `default`) gives an envelope dict on its own queue (tests craft bodies with it)."""
    return SigningKeys.of(key).sign(data)

"""Which payload keys a job class reads, and what a worker says when a payload and its class disagree.

Producers and workers are deployed apart, so for a while one side is newer than the other:

- a payload with keys the class does not declare (a producer deployed before the workers) still runs,
  as it always did (`extra="ignore"`), but the worker says which keys it ignored: once per job and
  set of keys and at most once a minute per job, never once per message;
- a payload the class refuses (written before a deploy that added a required field or narrowed a type)
  goes to the DLQ as `invalid_payload`, naming each field and what is wrong with it.

Both texts are built from the class, never from the message: the reason is written in clear to the DLQ
(for an encrypted job too) and the warning to the log, so no value from a payload may reach either.
`accepted_names` is also what the schema snapshot (sqsjobs.schemas) records per field, so the
compatibility check and the worker agree on which names a field answers to.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import logging
import re
import threading
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, TypeVar

from pydantic import AliasChoices, AliasPath, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticKnownError

log = logging.getLogger("sqsjobs.runner")
M = TypeVar("M", bound=BaseModel)

#: Keys shown in a log line as they are: what a pydantic producer writes. Anything else is only counted,
#: so no text from a message (a newline, an escape sequence) reaches a log line as such.
_SHOWN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: (job, key count, key digest) already reported; forgotten all at once when full, so memory stays bounded.
_MAX_REMEMBERED = 1024
#: Unknown keys named in one warning; the rest are counted.
_MAX_NAMED = 10
#: A job's unknown-field warnings are this far apart at least: random key sets cannot flood the log.
_WARN_EVERY_S = 60.0
#: Validation problems named in one DLQ reason (SQS attributes are small; the body holds the rest).
_MAX_PROBLEMS = 5
#: Types and models looked into for the names a job's payload may carry (a bound, not a limit met in practice).
_MAX_TYPES = 500
_JSON_TYPES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "NoneType": "null",
    "list": "an array",
    "dict": "an object",
}
#: Context a pydantic message may show: the schema's own constraints. Anything else (`error`, `tag`,
#: `actual_length`, ...) comes from the input, and a validator's `ValueError` may quote the value.
_BOUNDS = ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "max_digits", "decimal_places")
_KINDS = ("whole_digits", "expected_plural", "field_type", "class_name", "class", "method_name", "encoding")
_EXPECTED = ("pattern", "expected", "discriminator", "expected_tags", "expected_schemes", "expected_version")
_SCHEMA_CONTEXT = frozenset((*_BOUNDS, *_KINDS, *_EXPECTED, "tz_expected"))
#: Where pydantic's template would quote the input, a text of ours.
_OWN_TEXT = {
    "value_error": "a validator of the job refused the value",
    "assertion_error": "an assertion in a validator of the job failed",
    "union_tag_invalid": "its {discriminator} tag is not one of the expected tags: {expected_tags}",
    "too_short": "{field_type} should have at least {min_length} item{expected_plural} after validation",
    "too_long": "{field_type} should have at most {max_length} item{expected_plural} after validation",
    "iteration_error": "Error iterating over object",
    "datetime_object_invalid": "Invalid datetime object",
    "no_such_attribute": "Object has no such attribute",
}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
#: Every placeholder pydantic's templates use (pydantic_core 2.x): enough context to read any template,
#: as text or as numbers (each type checks the kind of its own).
_PLACEHOLDERS = _SCHEMA_CONTEXT | {"error", "tag", "actual_length", "attribute", "encoding_error", "tz_actual"}
_ANY_CONTEXT = (dict.fromkeys(_PLACEHOLDERS, "x"), dict.fromkeys(_PLACEHOLDERS, 1))
#: The numbers an `{expected_plural}` follows.
_COUNTS = ("min_length", "max_length", "max_digits", "decimal_places", "whole_digits")


@functools.cache
def _template(kind: str) -> str | None:
    """pydantic's message for an error type with each input-borne placeholder (and its lead-in) cut
    out; None for a type pydantic does not know (a validator's own `PydanticCustomError`)."""
    template = _OWN_TEXT.get(kind)
    for context in _ANY_CONTEXT:
        if template is not None:
            break
        try:
            template = PydanticKnownError(kind, context).message_template  # type: ignore[arg-type]
        except Exception:  # not one of pydantic's types, or a context of the other kind
            continue
    if template is None:
        return None
    for name in set(_PLACEHOLDER.findall(template)) - _SCHEMA_CONTEXT:
        template = re.sub(r"(,( error:)?|:| got)? *'?\{" + name + r"\}'?", "", template)
    return template.strip(" ,:")


_known: dict[type[BaseModel], frozenset[str] | None] = {}
_names: dict[type[BaseModel], dict[str, frozenset[str]]] = {}
_warned: set[tuple[str, int, int]] = set()
_last_warned: dict[str, float] = {}
_lock = threading.Lock()


def load(cls: type[M], payload: Any) -> M:
    """The job (or model) a payload describes. Payloads are written by field name (`model_dump`), so
    every model in it takes its fields by name as well as by alias — nested models too, which their
    own `model_config` would not do."""
    return cls.model_validate(payload, by_name=True)


def accepted_names(name: str, info: FieldInfo, config: Mapping[str, Any]) -> list[str]:
    """The payload keys pydantic takes for field `name`: its validation alias(es), else its alias, and
    its own name unless only aliases are accepted. A nested `AliasPath` is written dotted (`a.0.b`)."""
    names: list[str] = []
    if config.get("validate_by_alias", True):
        given = info.validation_alias if info.validation_alias is not None else info.alias
        choices: Sequence[Any] = given.choices if isinstance(given, AliasChoices) else [given]
        for choice in choices:
            if isinstance(choice, str):
                names.append(choice)
            elif isinstance(choice, AliasPath):
                names.append(".".join(str(step) for step in choice.path))
    if not names or config.get("validate_by_name") or config.get("populate_by_name"):
        names.append(name)
    return list(dict.fromkeys(names))


def known_keys(cls: type[BaseModel]) -> frozenset[str] | None:
    """Top-level keys a payload of `cls` may carry without being news to it: what it reads and what its
    producers write (field names, aliases, computed fields). None: the class keeps or refuses extra keys
    itself (`extra="allow"` / `"forbid"`), so there is nothing to warn about."""
    try:
        return _known[cls]
    except KeyError:
        pass
    config = cls.model_config
    known: frozenset[str] | None = None
    if config.get("extra") in (None, "ignore"):
        names: set[str] = set()
        for name, info in cls.model_fields.items():
            names.update(key.split(".", 1)[0] for key in accepted_names(name, info, config))
            names.update(n for n in (name, info.alias, info.serialization_alias) if isinstance(n, str))
        for name, computed in cls.model_computed_fields.items():
            names.update(n for n in (name, computed.alias) if isinstance(n, str))
        known = frozenset(names)
    _known[cls] = known
    return known


def warn_unknown(
    cls: type[BaseModel], job_name: str, payload: Mapping[str, Any], clock: Callable[[], float] | None = None
) -> int:
    """How many keys of `payload` `cls` does not know (ignored, as before). Logged once per job and set
    of keys, and at most once a minute per job (by `clock`, else the monotonic clock): a set held back
    is said when it comes again later. Only a count and a digest of each set are remembered."""
    known = known_keys(cls)
    if known is None:
        return 0
    count = digest = 0
    for key in payload:  # one pass, nothing kept: a payload may carry a megabyte of keys
        if key not in known:
            count += 1
            digest = (digest + hash(key)) & 0xFFFFFFFFFFFFFFFF  # the same for the same set, in any order
    if not count:
        return 0
    seen = (job_name, count, digest)
    now = clock() if clock is not None else time.monotonic()
    with _lock:
        if seen in _warned:
            return count
        last = _last_warned.get(job_name)
        if last is not None and 0 <= now - last < _WARN_EVERY_S:
            return count
        for memory in (_warned, _last_warned):
            if len(memory) >= _MAX_REMEMBERED:
                memory.clear()
        _warned.add(seen)
        _last_warned[job_name] = now
    shown = heapq.nsmallest(_MAX_NAMED, (key for key in payload if key not in known and _SHOWN.fullmatch(key)))
    others = count - len(shown)
    listed = ", ".join(shown) + (f" and {others} other key(s)" if others else "")
    log.warning(
        "job %s received payload field(s) %s that %s does not declare; they were ignored. A producer "
        "deployed before this worker? Deploy workers first, or read them here (docs/schemas.md). "
        "Said once per job and set of fields, at most once a minute per job",
        job_name,
        listed,
        cls.__qualname__,
    )
    return count


def describe_problems(job_name: str, errors: Iterable[Mapping[str, Any]], cls: type[BaseModel] | None = None) -> str:
    """The `invalid_payload` reason: each field in trouble, what is wrong, and what usually caused it.
    Built from each error's type and location only: `msg` and `input` may quote the payload. A location
    step is shown when `cls` (or any model it holds) names it, else as `[key]`: a dict key is data (without
    `cls`, any plain identifier is shown)."""
    names = _field_names(cls) if cls is not None else None
    parts: list[str] = []
    missing = renamed = False
    listed = list(errors)
    for error in listed[:_MAX_PROBLEMS]:
        loc = tuple(error.get("loc", ()))
        where = ".".join(_step(step, names) for step in loc)[:80] or "(payload)"
        kind = str(error.get("type", ""))
        given = error.get("input")
        if kind == "missing":
            other = _written_as(loc[-1] if loc else None, given, names)
            if other is not None:
                renamed = True
                parts.append(f"field '{where}' is missing, but the payload has '{other}'")
            else:
                missing = True
                parts.append(f"field '{where}' is missing")
            continue
        got = _JSON_TYPES.get(type(given).__name__)
        parts.append(f"field '{where}': {_text(kind, error.get('ctx'))}" + (f" (got {got})" if got else ""))
    if len(listed) > _MAX_PROBLEMS:
        parts.append(f"and {len(listed) - _MAX_PROBLEMS} more")
    if renamed:
        hint = (
            "written under another name of the field? accept both (`validate_by_name=True` in that model's "
            "model_config, or `validation_alias=AliasChoices(...)`)"
        )
    elif missing:
        hint = "written before a field without a default was added? give the field a default"
    else:
        hint = "written before the job's fields changed? accept the old form too"
    return (
        f"payload does not fit {job_name}: {'; '.join(parts)}. A message {hint}, then `sqsjobs failed retry`; "
        "`sqsjobs schema check` catches this before a deploy (docs/schemas.md)"
    )


def _text(kind: str, ctx: Any) -> str:
    """What an error type means, with the schema's constraints filled in and nothing from the input."""
    template = _template(kind)
    if template is None:  # a validator's own PydanticCustomError: its message may quote the value
        return "a validator of the job refused the value" + (f" ({kind})" if _SHOWN.fullmatch(kind) else "")
    context = ctx if isinstance(ctx, Mapping) else {}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "expected_plural":
            count = next((context[n] for n in _COUNTS if n in context), None)
            return "" if count == 1 else "s"
        value = context.get(name)
        return "?" if value is None else _printable(str(value))[:60]

    return _PLACEHOLDER.sub(fill, template)[:160]


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def _step(step: Any, names: Mapping[str, frozenset[str]] | None) -> str:
    if isinstance(step, int) and not isinstance(step, bool):
        return str(step)
    if isinstance(step, str) and (names is None or step in names) and _SHOWN.fullmatch(step):
        return step
    return "[key]"


def _written_as(step: Any, given: Any, names: Mapping[str, frozenset[str]] | None) -> str | None:
    """Another name of the missing field that the payload does carry (a name of ours, never the input's)."""
    if names is None or not isinstance(step, str) or not isinstance(given, Mapping):
        return None
    return next((other for other in sorted(names.get(step, ())) if other != step and other in given), None)


def _field_names(cls: type[BaseModel]) -> dict[str, frozenset[str]]:
    """Every name a field of `cls`, or of a model, dataclass or TypedDict it holds, is known by, with the
    field's other names; plus the class names and literal tags pydantic puts in a location."""
    try:
        return _names[cls]
    except KeyError:
        pass
    found: dict[str, set[str]] = {}

    def field(*given: Any) -> None:
        names = {n for n in given if isinstance(n, str)}
        for name in names:
            found.setdefault(name, set()).update(names)

    seen: set[int] = set()
    todo: list[Any] = [cls]
    while todo and len(seen) < _MAX_TYPES:
        tp = todo.pop()
        if id(tp) in seen:
            continue
        seen.add(id(tp))
        todo.extend(typing.get_args(tp))
        if typing.get_origin(tp) is typing.Literal:
            for value in typing.get_args(tp):
                field(value.value if isinstance(value, Enum) else value)
            continue
        if not isinstance(tp, type):
            continue
        field(tp.__name__)
        if issubclass(tp, BaseModel):
            for name, info in tp.model_fields.items():
                config = tp.model_config
                aliases = [n for n in accepted_names(name, info, config) if "." not in n]
                field(name, info.alias, info.serialization_alias, *aliases)
                todo.append(info.annotation)
        elif dataclasses.is_dataclass(tp) or typing.is_typeddict(tp):
            try:
                hints = typing.get_type_hints(tp)
            except Exception:  # an unresolvable forward reference: its names stay unknown, shown as [key]
                continue
            for name, hint in hints.items():
                field(name)
                todo.append(hint)
    _names[cls] = result = {name: frozenset(others) for name, others in found.items()}
    return result

"""Which payload keys a job class reads, and what a worker says when a payload and its class disagree.

Producers and workers are deployed apart, so for a while one side is newer than the other:

- a payload with keys the class does not declare (a producer deployed before the workers) still runs,
  as it always did (`extra="ignore"`), but the worker says which keys it ignored: once per job and
  set of keys, never once per message;
- a payload the class refuses (written before a deploy that added a required field or narrowed a type)
  goes to the DLQ as `invalid_payload`, naming each field and what is wrong with it.

`accepted_names` is also what the schema snapshot (sqsjobs.schemas) records per field, so the
compatibility check and the worker agree on which names a field answers to.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import AliasChoices, AliasPath, BaseModel
from pydantic.fields import FieldInfo

log = logging.getLogger("sqsjobs.runner")

#: Keys shown in a log line as they are: what a pydantic producer writes. Anything else is only counted,
#: so no text from a message (a newline, an escape sequence) reaches a log line as such.
_SHOWN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: (job, keys) pairs already reported; forgotten all at once when full, so memory stays bounded.
_MAX_REMEMBERED = 1024
#: Validation problems named in one DLQ reason (SQS attributes are small; the body holds the rest).
_MAX_PROBLEMS = 5
_JSON_TYPES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "NoneType": "null",
    "list": "an array",
    "dict": "an object",
}

_known: dict[type[BaseModel], frozenset[str] | None] = {}
_warned: set[tuple[str, frozenset[str]]] = set()
_lock = threading.Lock()


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


def warn_unknown(cls: type[BaseModel], job_name: str, payload: Mapping[str, Any]) -> frozenset[str]:
    """The keys of `payload` that `cls` does not know (ignored, as before); logged once per job and set."""
    known = known_keys(cls)
    if known is None:
        return frozenset()
    unknown = frozenset(payload.keys() - known)
    if not unknown:
        return unknown
    with _lock:
        if (job_name, unknown) in _warned:
            return unknown
        if len(_warned) >= _MAX_REMEMBERED:
            _warned.clear()
        _warned.add((job_name, unknown))
    shown = sorted(key for key in unknown if _SHOWN.fullmatch(key))[:10]
    others = len(unknown) - len(shown)
    listed = ", ".join(shown) + (f" and {others} other key(s)" if others else "")
    log.warning(
        "job %s received payload field(s) %s that %s does not declare; they were ignored. A producer "
        "deployed before this worker? Deploy workers first, or read them here (docs/schemas.md). "
        "Said once per job and set of fields",
        job_name,
        listed,
        cls.__qualname__,
    )
    return unknown


def describe_problems(job_name: str, errors: Iterable[Mapping[str, Any]]) -> str:
    """The `invalid_payload` reason: each field in trouble, what is wrong, and what usually caused it."""
    parts: list[str] = []
    missing = False
    listed = list(errors)
    for error in listed[:_MAX_PROBLEMS]:
        where = ".".join(str(step) for step in error.get("loc", ()))[:80] or "(payload)"
        kind = str(error.get("type", ""))
        if kind == "missing":
            missing = True
            parts.append(f"field '{where}' is missing")
            continue
        given = _JSON_TYPES.get(type(error.get("input")).__name__, type(error.get("input")).__name__)
        parts.append(f"field '{where}': {str(error.get('msg', kind))[:120]} (got {given})")
    if len(listed) > _MAX_PROBLEMS:
        parts.append(f"and {len(listed) - _MAX_PROBLEMS} more")
    hint = (
        "written before a field without a default was added? give the field a default"
        if missing
        else "written before the job's fields changed? accept the old form too"
    )
    return (
        f"payload does not fit {job_name}: {'; '.join(parts)}. A message {hint}, then `sqsjobs failed retry`; "
        "`sqsjobs schema check` catches this before a deploy (docs/schemas.md)"
    )

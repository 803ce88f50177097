"""What pydantic checks that its JSON Schema does not say: a fingerprint of each payload field, for `schema check`.

A JSON Schema says `dict[str, int]` and `dict[int, int]` alike, `Decimal` as "a number or any string", a
time-zone-aware datetime as any date-time, and nothing of `strict`, `strip_whitespace`, `max_digits`,
`Json[...]`'s inner type or a `field_validator`. Each such fact narrows what a queued message may hold, so
the snapshot records them from pydantic's core schema, by where they apply in the field (`""` the field,
`[]` items, `{}` dict values, `[0]` a tuple position, `.name` a nested model's field), and
sqsjobs.schema_compat reports a fact the new code adds as breaking. Union members are walked
transparently, so `int` -> `int | Decimal` is reported too: conservative, never silent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

#: Where the facts of one field apply -> the facts there (sorted). A nested model's field is always present.
Facts = dict[str, list[str]]
#: The keys of a leaf that narrow what it accepts, per core schema type, with the value that does not narrow.
_HIDDEN: dict[str, dict[str, Any]] = {
    "str": {"strip_whitespace": False, "to_lower": False, "to_upper": False},
    "int": {"strict": False},
    "float": {"strict": False, "allow_inf_nan": True},
    "decimal": {"strict": False, "max_digits": None, "decimal_places": None},
    "bool": {"strict": False},
    "datetime": {"strict": False, "tz_constraint": None, "now_op": None, "now_utc_offset": None},
    "date": {"strict": False, "now_op": None, "now_utc_offset": None},
    "time": {"strict": False, "tz_constraint": None},
    "timedelta": {"strict": False},
    "bytes": {"strict": False},
    "uuid": {"strict": False, "version": None},
    "enum": {"strict": False},
    "literal": {},
    "any": {},
    "none": {},
    "url": {"allowed_schemes": None, "host_required": None, "default_host": None, "default_port": None},
    "multi-host-url": {"allowed_schemes": None, "host_required": None, "default_host": None, "default_port": None},
    "complex": {"strict": False},
}
#: Model settings that narrow every field below them, and the fact each gives.
_CONFIG = {"strict": "strict", "str_strip_whitespace": "strip_whitespace", "str_to_lower": "to_lower",
           "str_to_upper": "to_upper"}  # fmt: skip
#: Keys whose values are the sub-schemas a walk follows without changing where it is.
_THROUGH = frozenset({"default", "nullable", "lax-or-strict", "json-or-python", "definitions", "chain", "custom-error"})
_INNER = ("schema", "lax_schema", "python_schema")
_DROP = frozenset({"metadata", "serialization", "ref", "cls", "function", "config", "custom_error_message"})


def field_facts(model: type[BaseModel]) -> dict[str, Facts]:
    """Each field's facts, by field name: for the snapshot (sqsjobs.schemas)."""
    walker = _Walker()
    root = model.__pydantic_core_schema__
    walker.collect(root)
    fields = walker.model_fields(root)
    inherited = walker.config_facts(root)
    out: dict[str, Facts] = {}
    for name, schema in fields.items():
        facts: Facts = {"": []}
        walker.walk(schema, "", facts, inherited)
        out[name] = {where: sorted(set(found)) for where, found in sorted(facts.items())}
    return out


def model_facts(model: type[BaseModel]) -> list[str]:
    """The job class's own validators (`model_validator`): facts about the whole payload."""
    walker = _Walker()
    root = model.__pydantic_core_schema__
    walker.collect(root)
    found: list[str] = []
    node: Any = root
    for _ in range(32):
        node = walker.deref(node)
        if not isinstance(node, Mapping) or node.get("type") in ("model-fields", None):
            break
        if str(node.get("type", "")).startswith("function-"):
            found.extend(_validator(node))
        node = node.get("schema")
    return sorted(set(found))


def added(old: Facts, new: Facts) -> dict[str, list[str]]:
    """The facts `new` holds where `old` held the same place without them: each narrows what is accepted.

    A place is the same when it, or the nested field it belongs to, is in `old` (a new nested field is the
    walk's business, not a narrowing). Looser decimal bounds are not counted."""
    out: dict[str, list[str]] = {}
    for where, facts in new.items():
        if where not in old and _owner(where) not in old:
            continue
        before = set(old.get(where, []))
        fresh = [fact for fact in facts if fact not in before and not _looser(fact, before)]
        if fresh:
            out[where] = fresh
    return out


def _owner(where: str) -> str:
    """The nested field a place belongs to: `.a.b[]{}` -> `.a.b`; the field itself is `""`."""
    end = len(where)
    while end and where[end - 1] in "]}":
        end = where.rfind("[" if where[end - 1] == "]" else "{", 0, end)
    return where[:end]


def _looser(fact: str, before: set[str]) -> bool:
    name, _, value = fact.partition("=")
    if name not in ("max_digits", "decimal_places") or not value.isdigit():
        return False
    olds = [f.partition("=")[2] for f in before if f.startswith(name + "=")]
    return any(v.isdigit() and int(v) <= int(value) for v in olds)


class _Walker:
    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}
        self.visiting: set[str] = set()

    def collect(self, schema: Any) -> None:
        """Every `definitions` entry, by its ref, wherever it sits."""
        stack = [schema]
        while stack:
            node = stack.pop()
            if isinstance(node, Mapping):
                if isinstance(node.get("ref"), str):
                    self.defs.setdefault(node["ref"], node)
                stack.extend(v for k, v in node.items() if k not in ("metadata", "serialization"))
            elif isinstance(node, list | tuple):
                stack.extend(node)

    def deref(self, node: Any) -> Any:
        for _ in range(32):
            if isinstance(node, Mapping) and node.get("type") == "definition-ref":
                node = self.defs.get(str(node.get("schema_ref")), {})
            elif isinstance(node, Mapping) and node.get("type") == "definitions":
                node = node.get("schema", {})
            else:
                break
        return node

    def model_fields(self, root: Any) -> dict[str, Any]:
        node = self.deref(root)
        for _ in range(32):
            if not isinstance(node, Mapping):
                return {}
            fields = node.get("fields")
            if isinstance(fields, Mapping):
                return {str(k): v.get("schema", {}) for k, v in fields.items() if isinstance(v, Mapping)}
            node = self.deref(node.get("schema"))
        return {}

    def config_facts(self, root: Any) -> set[str]:
        node = self.deref(root)
        config = node.get("config", {}) if isinstance(node, Mapping) else {}
        found = {fact for key, fact in _CONFIG.items() if config.get(key)}
        if config.get("allow_inf_nan") is False:
            found.add("allow_inf_nan=False")
        return found

    def walk(self, schema: Any, where: str, facts: Facts, inherited: set[str]) -> None:
        node = schema
        ref = ""
        if isinstance(node, Mapping) and node.get("type") == "definition-ref":
            ref = str(node.get("schema_ref"))
            if ref in self.visiting:
                return
        node = self.deref(node)
        if not isinstance(node, Mapping):
            return
        if ref:
            self.visiting.add(ref)
        try:
            self._walk(node, where, facts, inherited)
        finally:
            self.visiting.discard(ref)

    def _walk(self, node: Mapping[str, Any], where: str, facts: Facts, inherited: set[str]) -> None:
        kind = str(node.get("type", ""))
        here = facts.setdefault(where, []) if where == "" or where in facts else []
        if kind.startswith("function-"):
            here += _validator(node)
        elif kind == "json":
            here.append("json=" + _brief(node.get("schema")))
        elif kind == "dict":
            keys = node.get("keys_schema")
            key_node = self.deref(keys or {})
            # str, Literal and Enum keys show in the JSON Schema (`propertyNames`); an int key does not.
            if key_node.get("type") not in (None, "str", "literal", "enum") or _hidden(key_node, inherited):
                here.append("keys=" + _brief(keys))
            self.walk(node.get("values_schema"), where + "{}", facts, inherited)
        elif kind in ("list", "set", "frozenset", "generator"):
            self.walk(node.get("items_schema"), where + "[]", facts, inherited)
        elif kind == "tuple":
            items = node.get("items_schema") or []
            variadic = node.get("variadic_item_index")
            for i, item in enumerate(items):
                self.walk(item, where + ("[]" if i == variadic else f"[{i}]"), facts, inherited)
        elif kind in ("union", "tagged-union"):
            choices = node.get("choices")
            members = [
                m[0] if isinstance(m, tuple) else m
                for m in (choices.values() if isinstance(choices, Mapping) else choices or [])
            ]
            takes_json = [m for m in members if not self._instance_only(m)]
            for member in takes_json or members:
                self.walk(member, where, facts, inherited)
        elif kind in ("model", "dataclass", "typed-dict", "model-fields", "dataclass-args"):
            self._fields(node, where, facts, self.config_facts(node) if kind in ("model", "dataclass") else inherited)
            return
        elif kind in _HIDDEN:
            here += _hidden(node, inherited)
        elif kind not in _THROUGH:
            here.append(f"type={kind}")
        if kind == "decimal":  # its JSON Schema is "a number or any string"
            here.append(kind)
        if here and where not in facts:
            facts[where] = here
        if kind == "chain":
            for step in node.get("steps", []):
                self.walk(step, where, facts, inherited)
        for key in _INNER:
            if key in node and kind not in ("json", "dict"):
                self.walk(node[key], where, facts, inherited)
                if kind == "lax-or-strict":
                    break  # the lax one is what a message meets (strict shows as a fact)

    def _instance_only(self, member: Any) -> bool:
        """A union member that takes only an already-built object (pydantic's `Path`): never JSON data."""
        node = self.deref(member)
        if isinstance(node, Mapping) and node.get("type") == "json-or-python":
            node = self.deref(node.get("python_schema"))
        return isinstance(node, Mapping) and node.get("type") == "is-instance"

    def _fields(self, node: Mapping[str, Any], where: str, facts: Facts, inherited: set[str]) -> None:
        if where:  # a nested model: its validators, then each field (present even without facts)
            facts.setdefault(where, [])
        if str(node.get("type", "")).startswith("function-"):
            facts.setdefault(where, []).extend(_validator(node))
        fields = node.get("fields")
        if isinstance(fields, Mapping):
            named = [(str(k), v) for k, v in fields.items()]
        elif isinstance(fields, list):
            named = [(str(f.get("name")), f) for f in fields if isinstance(f, Mapping)]
        else:
            self.walk(node.get("schema"), where, facts, inherited)
            return
        for name, field in named:
            alias = field.get("validation_alias")
            key = alias if isinstance(alias, str) else name
            facts.setdefault(f"{where}.{key}", [])
            self.walk(field.get("schema"), f"{where}.{key}", facts, inherited)


def _hidden(node: Mapping[str, Any], inherited: set[str]) -> list[str]:
    kind = str(node.get("type", ""))
    found = [f for f in inherited if _applies(f, kind)]
    for key, neutral in _HIDDEN.get(kind, {}).items():
        value = node.get(key, neutral)
        if value != neutral and _applies(key, kind):
            found.append(key if value is True else f"{key}={_text(value)}")
    return found


def _applies(fact: str, kind: str) -> bool:
    """Whether a fact narrows what a leaf of this kind takes from JSON data (a strict `str` takes every
    string a lax one does: JSON has no bytes)."""
    if fact == "strict":
        return kind not in ("str", "any", "none")
    if fact.startswith(("strip_whitespace", "to_lower", "to_upper")):
        return kind == "str"
    if fact.startswith("allow_inf_nan"):
        return kind == "float"
    return True


def _validator(node: Mapping[str, Any]) -> list[str]:
    """A validator function of the project's (pydantic's own implement types its JSON Schema shows)."""
    holder = node.get("function", {})
    function = holder.get("function") if isinstance(holder, Mapping) else None
    module = str(getattr(function, "__module__", "") or "")
    if function is None or module == "pydantic" or module.startswith(("pydantic.", "pydantic_core")):
        return []
    mode = str(node.get("type", "")).removeprefix("function-")
    return [f"validator={mode}:{getattr(function, '__name__', '?')}"]


def _brief(schema: Any) -> str:
    """A core schema as short stable text: types and constraints, no functions, refs or addresses."""

    def plain(value: Any, depth: int) -> Any:
        if depth > 8:
            return "..."
        if isinstance(value, Mapping):
            if value.get("type") == "definition-ref":
                return {"ref": str(value.get("schema_ref", "")).partition(":")[0]}
            if value.get("type") == "model" and "cls" in value:
                return {"model": getattr(value["cls"], "__name__", "?")}
            return {str(k): plain(v, depth + 1) for k, v in value.items() if k not in _DROP}
        if isinstance(value, list | tuple):
            return [plain(v, depth + 1) for v in value]
        return value if isinstance(value, str | int | float | bool | None) else type(value).__name__

    return json.dumps(plain(schema, 0), sort_keys=True, separators=(",", ":"), default=str)


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str | int) else str(value)

"""Whether one JSON Schema accepts every value another accepts: the structural walk behind `schema check`.

Both schemas are pydantic's (validation mode): `$ref` into each one's own `$defs`, `anyOf`/`oneOf` (a
discriminated union too), `enum`/`const`, `prefixItems` for tuples, `additionalProperties` for dicts, and the
usual constraints, `propertyNames` for dict keys. The walk is conservative: what it cannot prove accepted it
reports (`shape_changed`), a keyword it does not know included, and a recursive model is compared once per
pair of definitions. What pydantic checks beyond its JSON Schema is sqsjobs.schema_facts' business; lax
mode's own widenings (a bool as an int, a date as a date-time, any string as `bytes` or `Path`) are not
reported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_NOTES = frozenset(
    {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment", "discriminator"}
)
#: Every keyword the walk compares; any other one a new schema has (or changes) is reported as shape_changed.
_KNOWN = frozenset(
    {"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "properties", "required",
     "additionalProperties", "propertyNames", "items", "prefixItems", "minLength", "maxLength", "minItems",
     "maxItems", "minProperties", "maxProperties", "pattern", "format", "minimum", "maximum", "exclusiveMinimum",
     "exclusiveMaximum", "multipleOf", "uniqueItems", "not"}
)  # fmt: skip
#: Formats whose pydantic type takes every string (in lax mode): `bytes` (unless a maxLength counts its
#: bytes), `Path`; a date-time takes every date.
_TAKES_ANY_STRING = frozenset({"binary", "path"})
_WIDER_FORMAT = {"date": "date-time"}
_NOTHING: dict[str, Any] = {"not": {}}
_KINDS = ("integer", "number", "string", "boolean", "array", "object")
_TYPES = {"null": "null", **{kind: f"{'an' if kind[0] in 'aio' else 'a'} {kind}" for kind in _KINDS}}
#: (kind, where, detail) found while walking two schemas.
Problem = tuple[str, str, str]


class Walk:
    """Walks an old and a new JSON Schema side by side, each with its own `$defs`."""

    def __init__(self, old_root: Mapping[str, Any], new_root: Mapping[str, Any]) -> None:
        self.defs = (old_root.get("$defs", {}), new_root.get("$defs", {}))
        self.visiting: set[tuple[str, str]] = set()

    def resolve(self, schema: Any, *, old: bool) -> dict[str, Any]:
        """`schema` without `$ref` (inlined one level, siblings kept) and without annotations."""
        return self._resolve(schema, old)[0]

    def _resolve(self, schema: Any, old: bool) -> tuple[dict[str, Any], str]:
        if schema is True or schema is None:
            return {}, ""
        if schema is False or not isinstance(schema, dict):
            return dict(_NOTHING), ""
        ref = ""
        defs = self.defs[0 if old else 1]
        for _ in range(32):
            if "$ref" in schema and isinstance(target := defs.get(str(schema["$ref"]).rpartition("/")[2]), dict):
                ref = str(schema["$ref"])
                schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            elif list(_strip(schema)) == ["allOf"] and len(schema["allOf"]) == 1:
                schema = {**schema["allOf"][0], **{k: v for k, v in schema.items() if k != "allOf"}}
            else:
                break
        return _strip(schema), ref

    def equal(self, old: Any, new: Any) -> bool:
        return self.canonical(old, old=True) == self.canonical(new, old=False)

    def canonical(self, schema: Any, *, old: bool, depth: int = 0) -> str:
        """A schema as text with every `$ref` inlined and annotations dropped: equal contracts, equal text."""

        def expand(value: Any, level: int) -> Any:
            if isinstance(value, dict):
                resolved, ref = self._resolve(value, old)
                if level > 16:
                    return {"$ref": ref} if ref else resolved
                return {k: expand(v, level + 1) for k, v in resolved.items()}
            if isinstance(value, list):
                return [expand(v, level + 1) for v in value]
            return value

        return json.dumps(expand(schema, depth), sort_keys=True)

    def covers(self, old_schema: Any, new_schema: Any, where: str) -> list[Problem]:
        """Why some value `old_schema` accepts is refused by `new_schema` (empty: none is)."""
        old, old_ref = self._resolve(old_schema, True)
        new, new_ref = self._resolve(new_schema, False)
        if old_ref and new_ref:
            pair = (old_ref, new_ref)
            if pair in self.visiting:  # a recursive model: its comparison is already under way above
                return []
            self.visiting.add(pair)
            try:
                return self._covers(old, new, where)
            finally:
                self.visiting.discard(pair)
        return self._covers(old, new, where)

    def _covers(self, old: dict[str, Any], new: dict[str, Any], where: str) -> list[Problem]:
        if not new or old == _NOTHING:
            return []
        branches = _branches(old)
        if branches is not None:
            forms = [self._resolve(branch, True)[0] for branch in branches]
            models = sum(form.get("type") == "object" for form in forms)
            out: list[Problem] = []
            for branch, form in zip(branches, forms, strict=True):
                found = self.covers(branch, new, where)
                out += [_former(form, where)] if found and models > 1 and form.get("type") == "object" else found
            return out
        choices = _branches(new)
        if choices is not None:
            tried = [self.covers(old, choice, where) for choice in choices]
            if any(not problems for problems in tried):
                return []
            kind = old.get("type")
            same = [p for c, p in zip(choices, tried, strict=True) if self._resolve(c, False)[0].get("type") == kind]
            if kind == "object" and len(same) > 1:  # a union of models: which one it "became" is a guess
                return [_former(old, where)]
            return min(same or tried, key=len)
        if not old:
            return [("type_narrowed", where, f"accepted any value, now only {_describe(new)}")]
        if "enum" in old or "const" in old:
            values = old["enum"] if "enum" in old else [old["const"]]
            lost = [v for v in values if not self.accepts(new, v)]
            shown = ", ".join(json.dumps(v) for v in lost[:5])
            return [("enum_narrowed", where, f"no longer accepts {shown}")] if lost else []
        if "enum" in new or "const" in new:
            return [("type_narrowed", where, f"was {_describe(old)}, now only {_describe(new)}")]
        unknown = sorted(
            k
            for k in new
            if k not in _KNOWN and self.canonical(new[k], old=False) != self.canonical(old.get(k), old=True)
        )
        if unknown:
            return [("shape_changed", where, f"{', '.join(unknown)} changed, which this check cannot prove compatible")]
        old_type, new_type = old.get("type"), new.get("type")
        if not isinstance(old_type, str) or not isinstance(new_type, str):
            alike = self.canonical(old, old=True) == self.canonical(new, old=False)
            return [] if alike else [("shape_changed", where, "changed in a way this check cannot prove compatible")]
        if old_type != new_type and not _lax_widens(old_type, new_type):
            was = "null (None)" if old_type == "null" else _describe(old)
            return [("type_narrowed", where, f"no longer accepts {was}; now {_describe(new)}")]
        problems = _constraints(old, new, where)
        if new_type == "array":
            problems += self._arrays(old, new, where)
        elif new_type == "object":
            problems += self._objects(old, new, where)
        return problems

    def _arrays(self, old: dict[str, Any], new: dict[str, Any], where: str) -> list[Problem]:
        old_items, new_items = old.get("items", True), new.get("items", True)
        old_prefix, new_prefix = old.get("prefixItems", []), new.get("prefixItems", [])
        # A tuple (pydantic: prefixItems plus maxItems) has nothing past its last position.
        closed = bool(old_prefix) and old.get("maxItems", len(old_prefix) + 1) <= len(old_prefix)
        out: list[Problem] = []
        for i in range(len(old_prefix) if closed else max(len(old_prefix), len(new_prefix))):
            before = old_prefix[i] if i < len(old_prefix) else old_items
            after = new_prefix[i] if i < len(new_prefix) else new_items
            out += self.covers(before, after, f"{where}[{i}]")
        if not closed:
            out += self.covers(old_items, new_items, f"{where}[]")
        return out

    def _objects(self, old: dict[str, Any], new: dict[str, Any], where: str) -> list[Problem]:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        out: list[Problem] = []
        for key, schema in old_props.items():
            if key in new_props:
                out += self.covers(schema, new_props[key], f"{where}.{key}")
            else:
                out.append(("field_removed", f"{where}.{key}", f"no field reads {key!r} any more"))
        old_required = set(old.get("required", ()))
        for key in sorted(set(new.get("required", ())) - old_required):
            kind = "field_made_required" if key in old_props else "field_added_required"
            out.append((kind, f"{where}.{key}", "now required"))
        if "propertyNames" in new:  # dict keys: any string before, unless the old dict said otherwise
            keys = new["propertyNames"]
            if isinstance(keys, dict) and not {"type", "enum", "const", "$ref", "anyOf", "oneOf"} & set(keys):
                keys = {**keys, "type": "string"}
            out += self.covers(old.get("propertyNames", {"type": "string"}), keys, f"{where}{{key}}")
        new_extra = new.get("additionalProperties", True)
        old_extra = old.get("additionalProperties", True)
        if new_extra is not True:
            if old_extra is True and old_props and new_extra is False:
                out.append(("extra_forbidden", where, "keys it does not declare are refused"))
            elif not (old_extra is True and old_props):
                out += self.covers(old_extra, new_extra, f"{where}{{}}")
        return out

    def accepts(self, schema: Any, value: Any) -> bool:
        """Whether a (new) schema takes a value the old one listed in an enum: enough of JSON Schema for that."""
        resolved, _ = self._resolve(schema, False)
        if any(k not in _KNOWN for k in resolved):
            return False  # a keyword the walk does not know (contentSchema...): not provably accepted
        branches = _branches(resolved)
        if branches is not None:
            return any(self.accepts(branch, value) for branch in branches)
        if "const" in resolved and resolved["const"] != value:
            return False
        if "enum" in resolved and value not in resolved["enum"]:
            return False
        kind = resolved.get("type")
        if kind is not None and not _is_type(value, kind) and not _lax_takes(value, kind):
            return False
        if isinstance(value, str) and "pattern" not in resolved and "format" not in resolved:
            return bool(resolved.get("minLength", 0) <= len(value) <= resolved.get("maxLength", len(value)))
        if isinstance(value, int | float) and not isinstance(value, bool):
            exactly = {"minimum": value, "maximum": value, "multipleOf": value or resolved.get("multipleOf", 1)}
            return not _constraints(exactly, resolved, "")
        return "pattern" not in resolved and "format" not in resolved


def _former(form: Mapping[str, Any], where: str) -> Problem:
    """One model of a union that no longer fits: which fields of it changed is a guess, so name it whole."""
    fields = ", ".join(sorted(form.get("properties", {})))[:100]
    return ("type_narrowed", where, f"no longer accepts its former form with fields {fields}")


def _strip(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in _NOTES}


def _branches(schema: Mapping[str, Any]) -> list[Any] | None:
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            rest = {k: v for k, v in schema.items() if k != key}
            return [{**rest, **b} if isinstance(b, dict) else b for b in schema[key]]
    if isinstance(schema.get("type"), list):
        return [{**schema, "type": t} for t in schema["type"]]
    return None


def _lax_widens(old_type: str, new_type: str) -> bool:
    """pydantic's lax mode takes every old value: an int as a float, a bool as an int or a float (a strict
    field says so in its facts, sqsjobs.schema_facts)."""
    return (old_type, new_type) in (("integer", "number"), ("boolean", "integer"), ("boolean", "number"))


def _lax_takes(value: Any, kind: str) -> bool:
    """An enum value lax mode still takes under another JSON type: `True` as 1, 1 or 0 as a bool."""
    if isinstance(value, bool):
        return kind in ("integer", "number")
    return kind == "boolean" and isinstance(value, int) and value in (0, 1)


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    checks = {"string": str, "boolean": bool, "null": type(None), "array": list, "object": dict}
    return isinstance(value, checks.get(kind, object))


def _describe(schema: Mapping[str, Any]) -> str:
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"][:8])
    kind = schema.get("type")
    text = _TYPES.get(kind, str(kind)) if isinstance(kind, str) else "a value"
    return f"{text} ({schema['format']})" if "format" in schema else text


_BOUNDS = {
    True: (("minimum", False), ("exclusiveMinimum", True)),
    False: (("maximum", False), ("exclusiveMaximum", True)),
}


def _bound(schema: Mapping[str, Any], lower: bool) -> tuple[float, bool] | None:
    """The tightest lower (or upper) bound as (value, exclusive)."""
    found = [(float(schema[key]), excl) for key, excl in _BOUNDS[lower] if isinstance(schema.get(key), int | float)]
    if not found:
        return None
    return max(found) if lower else min(found, key=lambda b: (b[0], not b[1]))


def _constraints(old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> list[Problem]:
    """New constraints, or tighter ones, that some old value breaks."""
    out: list[Problem] = []

    def added(what: str) -> None:
        out.append(("constraint_added", where, what))

    for key in ("minLength", "minItems", "minProperties"):
        if key in new and new[key] > old.get(key, 0):
            added(f"{key} {new[key]} (was {old.get(key, 'none')})")
    for key in ("maxLength", "maxItems", "maxProperties"):
        if key in new and (key not in old or new[key] < old[key]):
            added(f"{key} {new[key]} (was {old.get(key, 'none')})")
    if "pattern" in new and new["pattern"] != old.get("pattern"):
        added(f"pattern {new['pattern']!r} (was {old.get('pattern') or 'none'})")
    after_format, before_format = new.get("format"), old.get("format")
    if after_format is not None and after_format != before_format:
        wider = _WIDER_FORMAT.get(str(before_format)) == after_format
        any_string = after_format in _TAKES_ANY_STRING and not (after_format == "binary" and "maxLength" in new)
        if not (wider or any_string):
            added(f"format {after_format!r} (was {before_format or 'none'})")
    for lower in (True, False):
        after, before = _bound(new, lower), _bound(old, lower)
        if after is None:
            continue
        sign = -1 if lower else 1  # compare upper bounds as mirrored lower bounds
        if (
            before is None
            or sign * before[0] > sign * after[0]
            or (before[0] == after[0] and after[1] and not before[1])
        ):
            name = "minimum" if lower else "maximum"
            was = "none" if before is None else f"{'exclusive ' if before[1] else ''}{before[0]:g}"
            added(f"{'exclusive ' if after[1] else ''}{name} {after[0]:g} (was {was})")
    step = new.get("multipleOf")
    if isinstance(step, int | float) and step:
        before_step = old.get("multipleOf")
        ratio = before_step / step if isinstance(before_step, int | float) else 0.5
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) == 0:
            added(f"multipleOf {step:g} (was {before_step if before_step is not None else 'none'})")
    return out

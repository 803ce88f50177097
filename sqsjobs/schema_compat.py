"""Whether every message the jobs of a committed snapshot accepted is still accepted by today's jobs.

A message queued before a deploy (or waiting in the DLQ for `failed retry`) is run by the code after
it. So a change is safe when everything the old contract accepted, the new one accepts: a job still
registered under every old name and alias, every old field still read (under its old name), no field
required that old messages lack, no type, enum or constraint that refuses an old value (the two JSON
Schemas are compared by sqsjobs.schema_walk, what they do not show by sqsjobs.schema_facts), and every
old name and alias still naming the same job. Each breaking change comes with how to make it safely.

A breaking change can still be made in steps: widen (accept old and new), deploy, wait until the
queues have drained and the DLQ's retention has passed, then narrow and `sqsjobs schema dump` again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .schema_facts import added
from .schema_walk import Walk

_LATER = "after the queue has drained and the DLQ's retention has passed, then `sqsjobs schema dump`"
#: How to make each breaking change safely.
FIXES = {
    "job_removed": "keep the old name: add it to the new class's aliases (class New(Job, name=..., aliases=({old!r},)))"
    ", or keep the class until " + _LATER,
    "alias_removed": "keep {old!r} in the class's aliases until " + _LATER,
    "alias_reassigned": "keep {old!r} naming the job it named (in that class's aliases), give the other job "
    "another name, and move it only " + _LATER,
    "field_removed": "if it was renamed, accept the old name: Field(validation_alias=AliasChoices('<new>', {old!r})); "
    "if it is no longer needed, keep it as an optional field (`{old}: T | None = None`) until " + _LATER,
    "field_added_required": "give it a default (`= ...` or Field(default=...)): messages queued before this deploy "
    "do not carry it",
    "field_made_required": "keep its default: messages queued before this deploy may not carry it",
    "type_narrowed": "widen first: accept the old type too (e.g. `int | str`) and deploy; narrow in a later deploy, "
    + _LATER,
    "enum_narrowed": "keep the old value(s) in the enum (map them in handle()) until " + _LATER,
    "constraint_added": "check it in handle() for new messages only, or add the constraint " + _LATER,
    "extra_forbidden": "keep extra='ignore' until " + _LATER,
    "shape_changed": "accept the old form too (a union of old and new), deploy, and narrow " + _LATER,
}


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the snapshot and today's jobs; `fix` is empty when it is safe."""

    job: str
    kind: str
    where: str
    detail: str
    fix: str = ""

    @property
    def breaking(self) -> bool:
        return bool(self.fix)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "breaking": self.breaking}


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every change from snapshot `old` (what may be queued) to `new` (today's jobs), breaking ones first."""
    old_jobs: Mapping[str, Any] = old["jobs"]
    new_jobs: Mapping[str, Any] = new["jobs"]
    by_name = {alias: name for name, entry in new_jobs.items() for alias in entry.get("aliases", ())}
    by_name.update({name: name for name in new_jobs})
    changes: list[Change] = []
    matched: set[str] = set()
    for name, entry in sorted(old_jobs.items()):
        target = by_name.get(name)
        if target is None:
            renamed = _same_schema(entry, new_jobs, exclude=set(old_jobs))
            hint = f" (renamed to {renamed!r}?)" if renamed else ""
            changes.append(_breaking(name, "job_removed", "", f"no job is registered as {name!r}{hint}", name))
            continue
        matched.add(target)
        if target != name:
            changes.append(Change(name, "job_renamed", "", f"now {target!r}, which keeps {name!r} as an alias"))
        for alias in entry.get("aliases", ()):
            if alias not in by_name:
                changes.append(_breaking(name, "alias_removed", "", f"alias {alias!r} is no longer registered", alias))
            elif by_name[alias] != target:
                detail = (
                    f"alias {alias!r} now names {by_name[alias]!r}: messages queued as {alias!r} would run that job"
                )
                changes.append(_breaking(name, "alias_reassigned", "", detail, alias))
        changes.extend(_compare_job(name, entry, new_jobs[target]))
        changes.extend(_compare_facts(name, entry, new_jobs[target]))
    changes.extend(Change(name, "job_added", "", "a new job") for name in sorted(set(new_jobs) - matched))
    unique = {(c.job, c.kind, c.where, c.detail): c for c in changes}.values()
    return sorted(unique, key=lambda c: (not c.breaking, c.job, c.where, c.kind))


def _breaking(job: str, kind: str, where: str, detail: str, old: str = "") -> Change:
    return Change(job, kind, where, detail, FIXES[kind].format(old=old or where.rpartition(".")[2]))


def _same_schema(entry: Mapping[str, Any], jobs: Mapping[str, Any], exclude: set[str]) -> str | None:
    """A new job whose schema is the removed one's: most likely the same job under a new name."""
    wanted = Walk(entry["schema"], {}).canonical(entry["schema"], old=True)
    for name, other in sorted(jobs.items()):
        if name not in exclude and Walk(other["schema"], {}).canonical(other["schema"], old=True) == wanted:
            return name
    return None


def _compare_job(job: str, old_entry: Mapping[str, Any], new_entry: Mapping[str, Any]) -> list[Change]:
    walk = Walk(old_entry["schema"], new_entry["schema"])
    old, new = walk.resolve(old_entry["schema"], old=True), walk.resolve(new_entry["schema"], old=False)
    old_props: Mapping[str, Any] = old.get("properties", {})
    new_props: Mapping[str, Any] = new.get("properties", {})
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    new_fields = new_entry.get("fields", {})
    reader = {n: key for key in new_props for n in new_fields.get(key, {}).get("accepts", [key])}
    fed: dict[str, list[str]] = {}
    out: list[Change] = []
    for key, schema in old_props.items():
        names = old_entry.get("fields", {}).get(key, {}).get("accepts", [key])
        targets = sorted({reader[n] for n in names if n in reader})
        where = f"payload.{key}"
        if not targets:
            guess = next((k for k in new_props if k not in old_props and walk.equal(schema, new_props[k])), None)
            hint = f" (renamed to {guess!r}? accept the old name with an alias)" if guess else ""
            out.append(_breaking(job, "field_removed", where, f"no field reads {key!r} any more{hint}", key))
            continue
        for name in names:
            if name not in reader:
                out.append(_breaking(job, "alias_removed", where, f"the name {name!r} is no longer accepted", name))
        for target in targets:
            fed.setdefault(target, []).append(key)
            problems = walk.covers(schema, new_props[target], where)
            out.extend(_breaking(job, kind, at, detail) for kind, at, detail in problems)
            if target != key:
                out.append(Change(job, "field_renamed", where, f"now {target!r}, which still accepts {key!r}"))
            elif not problems and not walk.equal(schema, new_props[target]):
                out.append(Change(job, "widened", where, "accepts more than before"))
    for key in sorted(new_required):
        if key not in fed:
            out.append(_breaking(job, "field_added_required", f"payload.{key}", "a new field without a default"))
        elif not old_required.intersection(fed[key]):
            out.append(_breaking(job, "field_made_required", f"payload.{key}", "was optional, now required"))
    for key in sorted(set(new_props) - set(fed) - new_required):
        out.append(Change(job, "field_added", f"payload.{key}", "a new optional field"))
    if new.get("additionalProperties") is False and old.get("additionalProperties") is not False:
        out.append(_breaking(job, "extra_forbidden", "payload", "payload keys the job does not declare are refused"))
    return out


def _compare_facts(job: str, old_entry: Mapping[str, Any], new_entry: Mapping[str, Any]) -> list[Change]:
    """What pydantic checks beyond the JSON Schema (sqsjobs.schema_facts): a fact the new code adds is breaking.

    A snapshot written before these facts were recorded compares its JSON Schemas only, and says so."""
    old_fields: Mapping[str, Any] = old_entry.get("fields", {})
    new_fields: Mapping[str, Any] = new_entry.get("fields", {})
    if "core" not in old_entry or any("core" not in f for f in old_fields.values()):
        detail = (
            "the snapshot predates type fingerprints: Decimal, time zones, dict keys, strict and validators were "
            "not compared; run `sqsjobs schema dump` from the deployed version to compare them too"
        )
        return [Change(job, "snapshot_outdated", "", detail)]
    out: list[Change] = []
    fresh = [f for f in new_entry.get("core", []) if f not in old_entry["core"]]
    if fresh:
        out.append(_narrowed(job, "payload", fresh))
    reader = {n: key for key, f in new_fields.items() for n in f.get("accepts", [key])}
    for key, field in old_fields.items():
        for target in sorted({reader[n] for n in field.get("accepts", [key]) if n in reader}):
            for where, facts in added(field["core"], new_fields[target].get("core", {})).items():
                out.append(_narrowed(job, f"payload.{key}{where}", facts))
    return out


def _narrowed(job: str, where: str, facts: list[str]) -> Change:
    detail = (
        f"pydantic now checks {', '.join(facts)}, which its JSON Schema does not show; if every value "
        "queued before still passes, check that and run `sqsjobs schema dump`"
    )
    return _breaking(job, "shape_changed", where, detail)

"""The job schema snapshot: every registered job's payload contract, in a file the project commits.

Messages outlive deploys: a job queued (or waiting in the DLQ) before a deploy is run by the code after
it. `sqsjobs schema dump` writes what each job accepts today — its name, its aliases, pydantic's JSON
Schema of its payload and the keys each field answers to — and `sqsjobs schema check` compares the jobs
of the next deploy with it (sqsjobs.schema_compat). The file is written with sorted keys and a fixed
indent, so its diff in a review shows exactly which contract changed.

The envelope around every payload has a schema of its own, shipped in the package
(`envelope.schema.json`, docs/envelope.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.errors import PydanticInvalidForJsonSchema

from .errors import ConfigurationError
from .payload_fields import accepted_names
from .registry import Registry
from .schema_facts import field_facts, model_facts

#: What the snapshot file says it is; a later layout gets a new number and both are read.
FORMAT = "sqsjobs.schema/1"
DEFAULT_FILE = "sqsjobs.schema.json"
ENVELOPE_SCHEMA = "envelope.schema.json"


def job_entry(model: type[BaseModel], aliases: Iterable[str] = ()) -> dict[str, Any]:
    """One job's contract: its aliases, each payload key's accepted names, pydantic's JSON Schema."""
    try:
        schema = model.model_json_schema(mode="validation")
    except PydanticInvalidForJsonSchema as exc:
        raise ConfigurationError(
            f"{model.__module__}.{model.__qualname__}: its payload has no JSON Schema ({exc}); annotate that "
            "field with pydantic's WithJsonSchema(...) or use a JSON type, so its contract can be checked"
        ) from exc
    config = model.model_config
    properties = schema.get("properties", {})
    facts = field_facts(model)
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        names = accepted_names(name, info, config)
        # The schema lists a field under its first accepted name (pydantic's choice): key it the same way.
        key = next((n for n in names if n in properties), name)
        fields[key] = {"accepts": names, "core": facts.get(name, {"": []})}
    return {"aliases": sorted(set(aliases)), "core": model_facts(model), "fields": fields, "schema": schema}


def snapshot(jobs: Registry | Mapping[str, tuple[type[BaseModel], Iterable[str]]]) -> dict[str, Any]:
    """The snapshot of a registry (every registered name, with the class's `aliases`), or of
    `{name: (model, aliases)}` for jobs not registered anywhere (tests, other services' contracts)."""
    if isinstance(jobs, Registry):
        classes = {name: jobs.get(name) for name in jobs.names()}
        jobs = {name: (cls, getattr(cls, "job_aliases", ())) for name, cls in classes.items()}
    return {"format": FORMAT, "jobs": {name: job_entry(model, aliases) for name, (model, aliases) in jobs.items()}}


def dumps(data: Mapping[str, Any]) -> str:
    """The file's text: sorted keys, two-space indent, a final newline — the same jobs give the same bytes."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(path: str | Path, data: Mapping[str, Any]) -> bool:
    """Write the snapshot; False when the file already held exactly this (nothing to commit)."""
    target = Path(path)
    text = dumps(data)
    try:
        if target.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigurationError(f"cannot read {target}: {exc}; pass another --output") from exc
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot write {target}: {exc}; pass another --output") from exc
    return True


def load(path: str | Path) -> dict[str, Any]:
    """A committed snapshot; ConfigurationError naming the file and what to run when it is not one."""
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"no job schema snapshot at {source}; write one with `sqsjobs schema dump --output {source}` and "
            "commit it (or pass --against FILE)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"{source} is not a job schema snapshot ({exc}); write it again with `sqsjobs schema dump`"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("jobs"), dict):
        found = data.get("format") if isinstance(data, dict) else None
        raise ConfigurationError(
            f"{source} is not a job schema snapshot of format {FORMAT!r} (it says {found!r}); write it again "
            "with `sqsjobs schema dump` from the version that was deployed"
        )
    for name, entry in data["jobs"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("schema"), dict):
            raise ConfigurationError(f"{source}: job {name!r} has no schema; write the file again with `schema dump`")
        fields = entry.get("fields", {})
        cores = (
            [f.get("core", {}) if isinstance(f, dict) else None for f in fields.values()]
            if isinstance(fields, dict)
            else [None]
        )
        if not isinstance(entry.get("core", []), list) or not all(
            isinstance(c, dict) and all(isinstance(v, list) for v in c.values()) for c in cores
        ):
            raise ConfigurationError(
                f"{source}: job {name!r} has malformed fields; write the file again with `schema dump`"
            )
    return data


def envelope_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the envelope every job travels in (docs/envelope.md)."""
    text = resources.files(__package__ or "sqsjobs").joinpath(ENVELOPE_SCHEMA).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema

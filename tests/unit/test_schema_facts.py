"""`schema check` against what pydantic really checks: a change that refuses a value the old model took is
reported as breaking even when pydantic's JSON Schema does not show it (dict keys, Decimal, time zones,
strict, Json's inner type, validators); a change every old value still passes is not; an old alias that
now names another job is. Each case proves its claim on a sample value, with the models themselves."""

from __future__ import annotations

import decimal
import json
import pathlib
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    FutureDate,
    Json,
    NaiveDatetime,
    ValidationError,
    constr,
    field_validator,
    model_validator,
)
from typer.testing import CliRunner

from sqsjobs import Job
from sqsjobs.cli import cli
from sqsjobs.errors import ConfigurationError
from sqsjobs.schema_compat import Change, compare
from sqsjobs.schemas import dumps, load, snapshot


def model(annotation: Any) -> type[BaseModel]:
    return type("Payload", (BaseModel,), {"__annotations__": {"x": annotation}})


def check(old: type[BaseModel], new: type[BaseModel]) -> list[Change]:
    """The comparison as `schema check` makes it: both snapshots through the file's text."""
    before = json.loads(dumps(snapshot({"shop.ship": (old, ())})))
    after = json.loads(dumps(snapshot({"shop.ship": (new, ())})))
    return compare(before, after)


def takes(cls: type[BaseModel], value: Any) -> bool:
    try:
        cls.model_validate({"x": value})
    except ValidationError:
        return False
    return True


class Strict(BaseModel):
    model_config = ConfigDict(strict=True)
    x: int


class Validated(BaseModel):
    x: int

    @field_validator("x")
    @classmethod
    def positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value


class Checked(BaseModel):
    x: int

    @model_validator(mode="after")
    def small(self) -> Checked:
        if self.x > 10:
            raise ValueError("too big")
        return self


class Inner(BaseModel):
    at: datetime


class AwareInner(BaseModel):
    at: AwareDatetime


OneChar = Annotated[str, Field(max_length=1)]
# (old annotation or model, new annotation or model, a value the old takes and the new refuses)
NARROWED: dict[str, tuple[Any, Any, Any]] = {
    "dict keys -> Literal": (dict[str, int], dict[Literal["a"], int], {"b": 1}),
    "dict keys -> max_length": (dict[str, int], dict[OneChar, int], {"bb": 1}),
    "dict keys -> int": (dict[str, int], dict[int, int], {"b": 1}),
    "str -> Decimal": (str, decimal.Decimal, "abc"),
    "datetime -> AwareDatetime": (datetime, AwareDatetime, "2024-01-01T10:00:00"),
    "datetime -> NaiveDatetime": (datetime, NaiveDatetime, "2024-01-01T10:00:00Z"),
    "date -> FutureDate": (date, FutureDate, "2020-01-01"),
    "Json[str] -> Json[int]": (Json[str], Json[int], '"abc"'),
    "str -> Json[int]": (str, Json[int], "abc"),
    "strip_whitespace added": (constr(min_length=1), constr(min_length=1, strip_whitespace=True), " "),
    "max_digits added": (decimal.Decimal, Annotated[decimal.Decimal, Field(max_digits=3)], "12345"),
    "decimal_places added": (decimal.Decimal, Annotated[decimal.Decimal, Field(decimal_places=1)], "1.23"),
    "allow_inf_nan=False": (float, Annotated[float, Field(allow_inf_nan=False)], float("inf")),
    "Field(strict=True)": (int, Annotated[int, Field(strict=True)], "5"),
    "model strict": (model(int), Strict, "5"),
    "a field_validator": (model(int), Validated, 0),
    "nested AwareDatetime": (list[Inner], list[AwareInner], [{"at": "2024-01-01T10:00:00"}]),
}


def as_model(spec: Any) -> type[BaseModel]:
    return spec if isinstance(spec, type) and issubclass(spec, BaseModel) else model(spec)


@pytest.mark.parametrize(("old", "new", "value"), list(NARROWED.values()), ids=list(NARROWED))
def test_a_change_that_refuses_an_old_value_is_breaking_even_when_the_json_schema_hides_it(
    old: Any, new: Any, value: Any
) -> None:
    before, after = as_model(old), as_model(new)
    assert takes(before, value) and not takes(after, value), "the sample should prove the break"
    found = [c for c in check(before, after) if c.breaking]
    assert found, "a queued message would fail as invalid_payload: the check must say so"
    assert all(c.where.startswith("payload.x") and c.fix for c in found)


def test_a_hidden_narrowing_says_what_pydantic_now_checks_and_what_to_do() -> None:
    (change,) = [c for c in check(model(datetime), model(AwareDatetime)) if c.breaking]
    assert (change.kind, change.where) == ("shape_changed", "payload.x")
    assert "tz_constraint=aware" in change.detail and "sqsjobs schema dump" in change.detail
    assert "accept the old form too" in change.fix


def test_a_model_validator_added_to_the_job_is_breaking() -> None:
    assert takes(model(int), 11) and not takes(Checked, 11)
    found = [(c.kind, c.where) for c in check(model(int), Checked) if c.breaking]
    assert found == [("shape_changed", "payload")]


# (old, new, a value both take: the new model takes every value the old one did)
WIDENED: dict[str, tuple[Any, Any, Any]] = {
    "bool -> int": (bool, int, True),
    "date -> datetime": (date, datetime, "2024-01-01"),
    "str -> bytes": (str, bytes, "abc"),
    "str -> Path": (str, pathlib.Path, "abc"),
    "Literal[1] -> Literal[True]": (Literal[1], Literal[True], 1),
    "Literal[True] -> Literal[1]": (Literal[True], Literal[1], True),
    "list -> set": (list[str], set[str], ["a", "a"]),
    "max_digits loosened": (
        Annotated[decimal.Decimal, Field(max_digits=3)],
        Annotated[decimal.Decimal, Field(max_digits=5)],
        "1234",
    ),
    "dict Literal keys widened": (dict[Literal["a"], int], dict[Literal["a", "b"], int], {"b": 1}),
    "strict removed": (Annotated[int, Field(strict=True)], int, "5"),
    "Decimal -> Decimal unchanged": (decimal.Decimal, decimal.Decimal, "1.5"),
}


@pytest.mark.parametrize(("old", "new", "value"), list(WIDENED.values()), ids=list(WIDENED))
def test_a_change_every_old_value_still_passes_is_not_breaking(old: Any, new: Any, value: Any) -> None:
    before, after = model(old), model(new)
    assert takes(after, value)
    found = check(before, after)
    assert not [c for c in found if c.breaking], found


def test_a_new_optional_nested_field_with_a_validator_is_not_breaking() -> None:
    class Old(BaseModel):
        at: datetime

    class New(BaseModel):
        at: datetime
        zone: AwareDatetime | None = None

    assert not [c for c in check(model(Old), model(New)) if c.breaking]


# -- aliases: every old name must still run the same job ----------------------------------------------------


class A(BaseModel):
    x: int


class B(BaseModel):
    y: str


def test_an_old_alias_given_to_another_job_is_breaking() -> None:
    old = snapshot({"a": (A, ("b",))})
    found = compare(old, snapshot({"a": (A, ()), "b": (B, ())}))
    (change,) = [c for c in found if c.breaking]
    assert (change.job, change.kind) == ("a", "alias_reassigned")
    assert "'b' now names 'b'" in change.detail and "keep 'b'" in change.fix

    moved = compare(old, snapshot({"a": (A, ()), "c": (B, ("b",))}))
    assert [(c.kind, c.breaking) for c in moved if c.breaking] == [("alias_reassigned", True)]

    kept = compare(old, snapshot({"a2": (A, ("a", "b"))}))
    assert not [c for c in kept if c.breaking], "a rename that keeps every old name runs the same job"


# -- the file: stable, and older files still read ------------------------------------------------------------


def test_the_snapshot_records_each_fields_facts_in_a_stable_order() -> None:
    data = snapshot({"j": (model(dict[int, AwareDatetime]), ())})
    facts = data["jobs"]["j"]["fields"]["x"]["core"]
    assert facts == {"": ['keys={"type":"int"}'], "{}": ["tz_constraint=aware"]}
    assert dumps(data) == dumps(snapshot({"j": (model(dict[int, AwareDatetime]), ())}))


def test_a_snapshot_without_facts_is_still_compared_and_says_to_dump_again(tmp_path: Path) -> None:
    data = snapshot({"shop.ship": (model(str), ())})
    for entry in data["jobs"].values():  # as sqsjobs wrote it before facts were recorded
        entry.pop("core")
        for field in entry["fields"].values():
            field.pop("core")
    target = tmp_path / "old.json"
    target.write_text(dumps(data))
    found = compare(load(target), snapshot({"shop.ship": (model(int), ())}))
    assert ("type_narrowed", True) in [(c.kind, c.breaking) for c in found], "the JSON Schemas are still compared"
    (note,) = [c for c in found if c.kind == "snapshot_outdated"]
    assert not note.breaking and "sqsjobs schema dump" in note.detail


class Stamp(Job, name="schema-facts.stamp"):
    at: AwareDatetime

    def handle(self) -> None:
        pass


def test_check_on_the_command_line_fails_on_a_hidden_narrowing(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    assert CliRunner().invoke(cli, ["schema", "dump", "-o", str(target)]).exit_code == 0
    data = json.loads(target.read_text())
    assert data["jobs"]["schema-facts.stamp"]["fields"]["at"]["core"] == {"": ["tz_constraint=aware"]}
    data["jobs"]["schema-facts.stamp"]["fields"]["at"]["core"] = {"": []}  # deployed: a plain datetime
    target.write_text(dumps(data))
    result = CliRunner().invoke(cli, ["schema", "check", "--against", str(target), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert [(c["job"], c["kind"], c["where"]) for c in report["breaking"]] == [
        ("schema-facts.stamp", "shape_changed", "payload.at")
    ]


def test_a_snapshot_with_malformed_facts_is_refused_saying_to_dump_again(tmp_path: Path) -> None:
    data = snapshot({"shop.ship": (model(str), ())})
    data["jobs"]["shop.ship"]["fields"]["x"]["core"] = "tz"
    target = tmp_path / "bad.json"
    target.write_text(dumps(data))
    with pytest.raises(ConfigurationError, match="schema dump"):
        load(target)

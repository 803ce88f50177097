"""Deploy-safe schemas: a committed snapshot of every job's payload contract, and a check that fails on the
changes that would break messages already queued — and says how to make each one safely."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import AliasChoices, BaseModel, Field
from typer.testing import CliRunner

from sqsjobs import App, Job, OutgoingMessage
from sqsjobs.cli import cli
from sqsjobs.cli.common import EXIT_CONFIG
from sqsjobs.envelope import Envelope
from sqsjobs.registry import Registry
from sqsjobs.schema_compat import Change, compare
from sqsjobs.schemas import dumps, snapshot
from sqsjobs.testing.schemas import assert_schemas_compatible
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import dead_letters

runner = CliRunner()


def changes(old: type[BaseModel], new: type[BaseModel], old_aliases: tuple[str, ...] = ()) -> list[Change]:
    return compare(snapshot({"shop.ship": (old, old_aliases)}), snapshot({"shop.ship": (new, ())}))


def breaking(old: type[BaseModel], new: type[BaseModel]) -> list[tuple[str, str]]:
    return [(c.kind, c.where) for c in changes(old, new) if c.breaking]


# -- the models of "before" and "after" a deploy --------------------------------------------------------


class Before(BaseModel):
    order_id: int
    note: str | None = None
    carrier: Literal["ups", "dhl"] = "ups"
    weight: int = Field(default=1, ge=0)
    tags: list[str] = []


class Color(StrEnum):
    RED = "red"
    BLUE = "blue"


class Colored(BaseModel):
    color: Color


class Street(BaseModel):
    zip: str


class Address(BaseModel):
    street: Street


class Node(BaseModel):
    name: str
    children: list[Node] = []


# -- breaking changes ---------------------------------------------------------------------------------


def test_a_new_field_without_a_default_breaks_and_the_fix_is_a_default() -> None:
    class After(Before):
        warehouse: str

    (change,) = [c for c in changes(Before, After) if c.breaking]
    assert (change.kind, change.where) == ("field_added_required", "payload.warehouse")
    assert "default" in change.fix


def test_a_removed_field_breaks_and_the_fix_is_an_alias_or_keeping_it_optional() -> None:
    class After(BaseModel):
        order_id: int
        carrier: Literal["ups", "dhl"] = "ups"
        weight: int = Field(default=1, ge=0)
        tags: list[str] = []

    (change,) = [c for c in changes(Before, After) if c.breaking]
    assert (change.kind, change.where) == ("field_removed", "payload.note")
    assert "AliasChoices('<new>', 'note')" in change.fix and "note: T | None = None" in change.fix


def test_a_renamed_field_without_an_alias_breaks_and_is_recognised_as_a_rename() -> None:
    class Old(BaseModel):
        order_id: int

    class After(BaseModel):
        order: int = 0

    (change,) = [c for c in changes(Old, After) if c.breaking]
    assert change.kind == "field_removed" and "renamed to 'order'" in change.detail


def test_a_renamed_field_that_accepts_its_old_name_is_safe() -> None:
    class After(BaseModel):
        order: int = Field(validation_alias=AliasChoices("order", "order_id"))
        note: str | None = None
        carrier: Literal["ups", "dhl"] = "ups"
        weight: int = Field(default=1, ge=0)
        tags: list[str] = []

    found = changes(Before, After)
    assert not any(c.breaking for c in found), found
    assert ("field_renamed", "payload.order_id") in [(c.kind, c.where) for c in found]


@pytest.mark.parametrize(
    ("annotation", "kind", "where"),
    [
        (int, "type_narrowed", "payload.note"),  # str | None -> int
        (str, "type_narrowed", "payload.note"),  # str | None -> str: no longer null
        (datetime | None, "constraint_added", "payload.note"),  # any string -> a date-time only
        (Literal["a", "b"] | None, "type_narrowed", "payload.note"),
    ],
    ids=["str-to-int", "optional-to-required-type", "str-to-datetime", "str-to-enum"],
)
def test_a_narrowed_type_breaks_and_the_fix_is_to_widen_first(annotation: Any, kind: str, where: str) -> None:
    After = type("After", (Before,), {"__annotations__": {"note": annotation}, "note": None})
    found = [c for c in changes(Before, After) if c.breaking]
    assert (kind, where) in [(c.kind, c.where) for c in found], found
    assert all("widen first" in c.fix or "constraint" in c.fix for c in found)


def test_an_enum_without_an_old_value_breaks_naming_the_value() -> None:
    class Fewer(BaseModel):
        carrier: Literal["ups"] = "ups"

    class Old(BaseModel):
        carrier: Literal["ups", "dhl"] = "ups"

    (change,) = [c for c in changes(Old, Fewer) if c.breaking]
    assert change.kind == "enum_narrowed" and '"dhl"' in change.detail

    class NewColor(StrEnum):
        RED = "red"

    class Recolored(BaseModel):
        color: NewColor

    assert breaking(Colored, Recolored) == [("enum_narrowed", "payload.color")]


def test_a_new_or_tighter_constraint_breaks() -> None:
    class Bounded(Before):
        weight: int = Field(default=1, ge=1)  # ge=0 before
        note: str | None = Field(default=None, max_length=20)

    assert breaking(Before, Bounded) == [
        ("constraint_added", "payload.note"),
        ("constraint_added", "payload.weight"),
    ]


def test_a_change_deep_inside_a_nested_model_or_a_list_is_found_where_it_is() -> None:
    class NumericStreet(BaseModel):
        zip: int

    class NewAddress(BaseModel):
        street: NumericStreet

    assert breaking(Address, NewAddress) == [("type_narrowed", "payload.street.zip")]

    class IntTags(Before):
        tags: list[int] = []

    assert breaking(Before, IntTags) == [("type_narrowed", "payload.tags[]")]


class Parcel(BaseModel):
    kind: Literal["parcel"] = "parcel"
    grams: int


class Letter(BaseModel):
    kind: Literal["letter"] = "letter"
    pages: int


class ParcelOnly(BaseModel):
    item: Parcel


class ParcelOrLetter(BaseModel):
    item: Annotated[Parcel | Letter, Field(discriminator="kind")]


def test_a_union_of_models_that_loses_a_member_breaks_and_one_that_gains_is_safe() -> None:
    assert [(c.kind, c.breaking) for c in changes(ParcelOnly, ParcelOrLetter)] == [("widened", False)]
    (lost,) = [c for c in changes(ParcelOrLetter, ParcelOnly) if c.breaking]
    assert (lost.kind, lost.where) == ("type_narrowed", "payload.item")
    assert "kind, pages" in lost.detail


def test_a_recursive_model_is_compared_without_looping() -> None:
    assert changes(Node, Node) == []

    class Tree(BaseModel):
        name: int
        children: list[Tree] = []

    assert ("type_narrowed", "payload.name") in breaking(Node, Tree)


def test_a_removed_job_or_dropped_alias_breaks_and_a_kept_alias_is_a_safe_rename() -> None:
    old = snapshot({"shop.ship": (Before, ("Ship",))})
    gone = compare(old, snapshot({"shop.dispatch-order": (Before, ())}))
    assert [(c.kind, c.job) for c in gone if c.breaking] == [("job_removed", "shop.ship")]
    assert "renamed to 'shop.dispatch-order'" in gone[0].detail
    assert "aliases=('shop.ship',)" in gone[0].fix

    dropped = compare(old, snapshot({"shop.ship": (Before, ())}))
    assert [(c.kind, c.detail) for c in dropped if c.breaking] == [
        ("alias_removed", "alias 'Ship' is no longer registered")
    ]

    kept = compare(old, snapshot({"shop.dispatch-order": (Before, ("shop.ship", "Ship"))}))
    assert not any(c.breaking for c in kept)
    assert ("job_renamed", "shop.ship") in [(c.kind, c.job) for c in kept]


# -- safe changes ---------------------------------------------------------------------------------------


def test_safe_changes_pass_and_are_listed_as_info() -> None:
    class After(BaseModel):
        order_id: int | str  # widened
        note: str | None = None
        carrier: Literal["ups", "dhl", "fedex"] = "ups"  # a new enum value
        weight: float = Field(default=1, ge=-10)  # int -> float, looser bound
        tags: list[str] = []
        gift: bool = False  # a new optional field

    found = changes(Before, After)
    assert not any(c.breaking for c in found), found
    kinds = {(c.kind, c.where) for c in found}
    assert ("field_added", "payload.gift") in kinds
    assert {("widened", "payload.order_id"), ("widened", "payload.carrier"), ("widened", "payload.weight")} <= kinds
    new_job = compare(snapshot({"a": (Before, ())}), snapshot({"a": (Before, ()), "b": (Before, ())}))
    assert [(c.kind, c.job, c.breaking) for c in new_job] == [("job_added", "b", False)]


# -- the snapshot file, the command line and the pytest helper --------------------------------------------


class Invoice(Job, name="schemas.send-invoice", aliases=("SendInvoice",)):
    invoice_id: int
    memo: str = ""

    def handle(self) -> None:
        pass


def invoke(*args: str) -> Any:
    return runner.invoke(cli, list(args), terminal_width=250)


def test_dump_writes_sorted_stable_json_with_names_and_aliases(tmp_path: Path) -> None:
    target = tmp_path / "sqsjobs.schema.json"
    first = invoke("schema", "dump", "--output", str(target))
    assert first.exit_code == 0, first.output
    written = target.read_bytes()
    again = invoke("schema", "dump", "--output", str(target))
    assert again.exit_code == 0 and "unchanged" in again.output
    assert target.read_bytes() == written
    data = json.loads(written)
    entry = data["jobs"]["schemas.send-invoice"]
    assert entry["aliases"] == ["SendInvoice"]
    assert entry["schema"]["required"] == ["invoice_id"]
    assert written.decode() == dumps(data), "keys sorted, two-space indent: a diff shows only what changed"


def older_snapshot(path: Path) -> None:
    """The snapshot as an older release wrote it: Invoice had a `customer` field it no longer has."""
    data = snapshot({"schemas.send-invoice": (Invoice, ("SendInvoice",))})
    entry = data["jobs"]["schemas.send-invoice"]
    entry["schema"]["properties"]["customer"] = {"type": "string"}
    entry["fields"]["customer"] = {"accepts": ["customer"]}
    path.write_text(dumps(data))


def test_check_passes_against_its_own_dump_and_fails_with_the_fix_on_a_breaking_change(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    assert invoke("schema", "dump", "-o", str(target)).exit_code == 0
    same = invoke("schema", "check", "--against", str(target))
    assert same.exit_code == 0, same.output
    assert "No change" in same.output

    older_snapshot(target)
    result = invoke("schema", "check", "--against", str(target))
    assert result.exit_code == 1, result.output
    assert "payload.customer" in result.output and "field_removed" in result.output
    assert "AliasChoices" in result.output

    as_json = invoke("schema", "check", "--against", str(target), "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.output)
    assert report["ok"] is False
    assert [(c["job"], c["kind"], c["where"]) for c in report["breaking"]] == [
        ("schemas.send-invoice", "field_removed", "payload.customer")
    ]
    assert any(c["kind"] == "job_added" for c in report["safe"]), "every other registered job is new to it"


def test_check_without_a_snapshot_is_one_line_saying_how_to_make_one(tmp_path: Path) -> None:
    result = invoke("schema", "check", "--against", str(tmp_path / "missing.json"))
    assert result.exit_code == EXIT_CONFIG
    assert result.output.startswith("error: ") and "sqsjobs schema dump" in result.output


def test_the_pytest_helper_runs_the_same_check(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    registry = Registry()
    registry.add(Invoice, "schemas.send-invoice", ("SendInvoice",))
    target.write_text(dumps(snapshot(registry)))
    assert_schemas_compatible(target, app=registry)
    assert_schemas_compatible(target, app=__name__)  # a module, imported as --app: the session's other jobs are new

    older_snapshot(target)
    with pytest.raises(AssertionError, match=r"schemas\.send-invoice payload\.customer field_removed"):
        assert_schemas_compatible(target, app=__name__)


# -- a breaking change deployed anyway: the old message goes to the DLQ saying which field ------------------


class Ship(Job, name="schemas.ship"):
    weight: int
    carrier: str  # added after messages were queued without it

    def handle(self) -> None:
        pass


def test_an_old_payload_that_no_longer_fits_is_dead_lettered_naming_each_field(sqs_app: App) -> None:
    old = Envelope(
        id="job-1",
        job="schemas.ship",
        payload={"weight": "heavy"},
        queue="default",
        dispatched_at="2026-01-01T00:00:00.000Z",
    )
    sqs_app.connection.send("default", OutgoingMessage(body=old.encode()))
    Worker(sqs_app, WorkerOptions(queues=["default"], sleep=1, stop_when_empty=True)).run(install_signals=False)

    (letter,) = dead_letters(sqs_app)
    assert letter["attrs"]["sqsjobs.reason"] == "invalid_payload"
    error = letter["attrs"]["sqsjobs.error"]
    assert "field 'weight': Input should be a valid integer" in error and "(got a string)" in error
    assert "field 'carrier' is missing" in error
    assert "give the field a default" in error
    assert letter["Body"] == old.encode(), "the original body is kept for `failed retry` after the fix"

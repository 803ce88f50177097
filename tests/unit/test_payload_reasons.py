"""The `invalid_payload` reason is written in clear to the DLQ (for an encrypted job, after decryption) and
shown by `sqsjobs failed`: it names each field and what is wrong, and never a value from the payload.
And a payload we wrote always fits the job that wrote it, nested models with an alias included."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from sqsjobs import App, Job, OutgoingMessage, aws, chain
from sqsjobs.envelope import Envelope
from sqsjobs.executors.child import run_request
from sqsjobs.payload_fields import describe_problems
from sqsjobs.provisioning import provision
from sqsjobs.registry import default_registry
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import dead_letters


class Cash(BaseModel):
    kind: Literal["cash"]
    amount: int


class Wire(BaseModel):
    kind: Literal["wire"]


class Pay(Job, name="reasons.pay"):
    card: str = "tok_0"
    limits: dict[str, int] = {}
    ref: uuid.UUID | None = None
    method: Annotated[Cash | Wire, Field(discriminator="kind")] | None = None
    note: str = ""
    pin: str = "0000"

    @field_validator("card")
    @classmethod
    def _token_only(cls, value: str) -> str:
        if not value.startswith("tok_"):
            raise ValueError(f"{value!r} is not a token")
        return value

    @field_validator("note")
    @classmethod
    def _short(cls, value: str) -> str:
        if len(value) > 5:
            raise PydanticCustomError("note_too_long", "note {note} is too long", {"note": value})
        return value

    @field_validator("pin")
    @classmethod
    def _digits(cls, value: str) -> str:
        assert value.isdigit(), f"pin {value} has letters"
        return value

    def handle(self) -> None:
        pass


def send(app: App, job: str, payload: dict[str, Any]) -> None:
    envelope = Envelope(str(uuid.uuid4()), job, payload, "default", "2026-01-01T00:00:00.000Z")
    app.connection.send("default", OutgoingMessage(body=envelope.encode()))


def work(app: App) -> None:
    Worker(app, WorkerOptions(queues=["default"], sleep=1, stop_when_empty=True)).run(install_signals=False)


def run_one(app: App) -> None:
    """What a worker does with the next message (the runner core, without the poll loop)."""
    (message,) = app.connection.receive("default", 1, 0)
    app.runner.process(message)


def reason_for(app: App, job: str, payload: dict[str, Any]) -> str:
    send(app, job, payload)
    run_one(app)
    (letter,) = app.connection.dead_letters("default")
    assert letter.attributes["sqsjobs.reason"] == "invalid_payload"
    return letter.attributes["sqsjobs.error"]


@pytest.mark.parametrize(
    ("payload", "said", "secrets"),
    [
        ({"card": "4111111111111111"}, "field 'card': a validator of the job refused the value", ["4111"]),
        (
            {"limits": {"sk_live_SECRETKEY\nERROR fake log line": "x"}},
            "field 'limits.[key]': Input should be a valid integer",
            ["sk_live", "fake log"],
        ),
        ({"limits": {"sk_live_PLAINKEY": "x"}}, "field 'limits.[key]'", ["sk_live"]),  # an identifier, still data
        ({"ref": "sk_live_abcdefg"}, "field 'ref': Input should be a valid UUID", ["sk_live", "`s`"]),
        (
            {"method": {"kind": "sk_live_SECRET"}},
            "field 'method': its 'kind' tag is not one of the expected tags: 'cash', 'wire'",
            ["sk_live"],
        ),
        ({"method": {"kind": "cash", "amount": "lots"}}, "field 'method.cash.amount': Input should be", ["lots"]),
        ({"note": "sk_live_NOTE"}, "field 'note': a validator of the job refused the value (note_too_long)", ["sk"]),
        ({"pin": "sk_live_PIN"}, "field 'pin': an assertion in a validator of the job failed", ["sk_live"]),
    ],
)
def test_the_reason_names_the_field_and_the_problem_and_no_value(
    memory_app: App, payload: dict[str, Any], said: str, secrets: list[str]
) -> None:
    reason = reason_for(memory_app, "reasons.pay", payload)
    assert said in reason, reason
    assert not [s for s in secrets if s in reason], reason
    assert reason.isprintable(), "no newline or escape from a message reaches the DLQ attribute or a log line"


def test_an_encrypted_jobs_refused_card_number_is_not_written_to_the_dlq_in_clear(moto: None, prefix: str) -> None:
    key = aws.client("kms").create_key(Description="sqsjobs tests")["KeyMetadata"]["KeyId"]
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, kms_key=key)
    provision(app, ["default"], table=False, bucket=False)
    with app.activate():
        SealedPay.model_construct(card="4111111111111111").dispatch()  # a producer that skipped validation
        work(app)
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "invalid_payload"
    assert "field 'card': a validator of the job refused the value" in letter["attrs"]["sqsjobs.error"]
    # The whole number, not a prefix: the copy's MD5 digests and ciphertext are random text, and a
    # four-digit prefix turns up in them about once in a thousand runs.
    assert "4111111111111111" not in json.dumps(letter), "the decrypted payload stays out of the DLQ copy"


class SealedPay(Job, name="reasons.sealed-pay"):
    encrypted = True
    card: str

    @field_validator("card")
    @classmethod
    def _token_only(cls, value: str) -> str:
        if not value.startswith("tok_"):
            raise ValueError(f"{value!r} is not a token")
        return value

    def handle(self) -> None:
        pass


# -- nested models with an alias -----------------------------------------------------------------


class Addr(BaseModel):
    zip_code: str = Field(alias="zipCode")


class Ship(Job, name="reasons.ship"):
    shipped: ClassVar[list[str]] = []
    addr: Addr
    stops: list[Addr] = []

    def handle(self) -> None:
        Ship.shipped.append(self.addr.zip_code + "".join(stop.zip_code for stop in self.stops))


@pytest.fixture
def shipped() -> Iterator[list[str]]:
    Ship.shipped.clear()
    yield Ship.shipped


def test_a_nested_model_with_an_alias_runs_on_the_sync_connection(shipped: list[str]) -> None:
    with App(connection="sync").activate():
        Ship(addr=Addr(zipCode="123"), stops=[Addr(zipCode="4")]).dispatch()
    assert shipped == ["1234"]


def test_a_nested_model_with_an_alias_runs_as_a_chain_link(shipped: list[str]) -> None:
    with App(connection="sync").activate():
        chain([Ship(addr=Addr(zipCode="1")), Ship(addr=Addr(zipCode="2"))]).dispatch()
    assert shipped == ["1", "2"]  # the second is rebuilt from its link by the first's end


def test_a_nested_model_with_an_alias_runs_on_a_worker_over_sqs(sqs_app: App, shipped: list[str]) -> None:
    with sqs_app.activate():
        Ship(addr=Addr(zipCode="123")).dispatch()
    send(sqs_app, "reasons.ship", {"addr": {"zipCode": "9"}})  # a producer that writes the alias
    work(sqs_app)
    assert sorted(shipped) == ["123", "9"]
    assert dead_letters(sqs_app) == []


def test_a_nested_model_with_an_alias_runs_in_a_child_process_executor(shipped: list[str]) -> None:
    payload = Ship(addr=Addr(zipCode="55")).model_dump(mode="json")
    request = {"job": "reasons.ship", "payload": payload, "job_id": "j-1", "attempts": 1, "queue": "default"}
    reply = run_request(json.dumps(request).encode(), default_registry)
    assert reply["error"] is None, reply
    assert shipped == ["55"]


class Label(BaseModel):
    """Written under its serialization alias (`serialize_by_alias`) but read only by its name."""

    model_config = ConfigDict(serialize_by_alias=True)
    zip_code: str = Field(serialization_alias="zipCode")


class Post(Job, name="reasons.post"):
    label: Label

    def handle(self) -> None:
        pass


def test_a_field_written_under_another_of_its_names_is_not_called_a_new_field(memory_app: App) -> None:
    Post(label=Label(zip_code="1")).dispatch()
    run_one(memory_app)
    (letter,) = memory_app.connection.dead_letters("default")
    reason = letter.attributes["sqsjobs.error"]
    assert "field 'label.zip_code' is missing, but the payload has 'zipCode'" in reason, reason
    assert "validate_by_name=True" in reason and "AliasChoices" in reason
    assert "without a default was added" not in reason


def test_a_field_present_under_its_name_where_only_the_alias_is_read_gets_the_renamed_hint() -> None:
    with pytest.raises(ValidationError) as raised:
        Ship.model_validate({"addr": {"zip_code": "123"}})  # what a worker did before it read names everywhere
    reason = describe_problems("reasons.ship", raised.value.errors(), Ship)
    assert "field 'addr.zipCode' is missing, but the payload has 'zip_code'" in reason, reason
    assert "give the field a default" not in reason


def test_a_field_really_missing_keeps_the_default_hint(memory_app: App) -> None:
    reason = reason_for(memory_app, "reasons.ship", {"addr": {}})
    assert "field 'addr.zipCode' is missing" in reason and "give the field a default" in reason

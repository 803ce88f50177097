"""Encrypted job classes in batches: what a batch record keeps in DynamoDB is sealed too.

A batch's callbacks (`then`/`catch`/`finally`) and the rest of a chain waiting on a batch live in its
DynamoDB item (`batch#<id>` / `meta`) until their turn; the payload of every job of an encrypted class
there is sealed with a KMS data key, bound to the batch id and the field, and opened only to be sent
(sealed again in its message). In-process moto (KMS, SQS, DynamoDB); the table is scanned raw with boto3
and KMS calls are counted with a botocore before-call hook on the shared client.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import sqsjobs
from sqsjobs import App, aws, batch, chain, encryption
from sqsjobs.decisions import Postpone, Release
from sqsjobs.errors import DispatchError
from sqsjobs.job_class import Job
from sqsjobs.provisioning import provision
from tests.helpers import dead_letters

CARD = "4111-1111-1111-1111"
LATER = "5500-0000-0000-0004"
CAUGHT = "3400-0000-0000-009"


class Charge(Job, name="encbatch.charge"):
    encrypted = True
    runs: ClassVar[list[str]] = []
    card: str

    def handle(self) -> None:
        Charge.runs.append(self.card)


class Plain(Job, name="encbatch.plain"):
    runs: ClassVar[list[int]] = []
    n: int

    def handle(self) -> None:
        Plain.runs.append(self.n)


@pytest.fixture(autouse=True)
def _reset() -> None:
    Charge.runs = []
    Plain.runs = []


@pytest.fixture
def kms_key(moto: None) -> str:
    return str(aws.client("kms").create_key(Description="sqsjobs tests")["KeyMetadata"]["KeyId"])


@pytest.fixture
def app(kms_key: str, prefix: str) -> Iterator[App]:
    """SQS queues and the DynamoDB table, as production has them, with a KMS key."""
    app = App(
        connection="sqs",
        queue_prefix=prefix,
        queues=["default"],
        table=f"{prefix}table",
        visibility_timeout=30,
        kms_key=kms_key,
    )
    provision(app, ["default"], bucket=False)
    with app.activate():
        yield app


def table_items(app: App) -> list[dict[str, Any]]:
    """Every item of the table, as DynamoDB holds it (no sqsjobs code in between)."""
    return list(aws.client("dynamodb").scan(TableName=app.settings.table, ConsistentRead=True)["Items"])


def batch_meta(app: App) -> list[dict[str, Any]]:
    return [item for item in table_items(app) if item["sk"]["S"] == "meta" and item["pk"]["S"].startswith("batch#")]


def run_all(app: App) -> list[str]:
    """Run every message on the queue through the core until it stays empty; the bodies received."""
    connection = app.connection
    bodies: list[str] = []
    empty = 0
    while empty < 2:
        messages = connection.receive("default", 10, 0)
        empty = 0 if messages else empty + 1
        for message in messages:
            bodies.append(message.body)
            decision = app.runner.process(message, connection)
            if isinstance(decision, Release | Postpone):  # fast-forward: it comes back at once
                connection.change_visibility("default", [(message, 0)])
            else:
                connection.delete("default", [message])
    return bodies


def kms_calls() -> list[str]:
    seen: list[str] = []
    aws.client("kms").meta.events.register("before-call.kms.*", lambda model, **_: seen.append(model.name))
    return seen


# -- a batch's callbacks ------------------------------------------------------------------------------
def test_an_encrypted_callback_is_sealed_in_the_batch_record_and_runs_in_clear(app: App) -> None:
    created = batch([Plain(n=1), Plain(n=2)]).then(Charge(card=CARD)).finally_(Plain(n=3)).dispatch()

    items = table_items(app)
    assert items and CARD not in json.dumps(items)
    (record,) = batch_meta(app)
    callbacks = json.loads(record["callbacks"]["S"])
    assert callbacks["then"]["job"] == "encbatch.charge" and callbacks["then"]["payload"] == {}
    assert set(callbacks["then"]["encrypted"]) == {"v", "alg", "key", "iv", "ct"}
    assert callbacks["finally"] == {"job": "encbatch.plain", "payload": {"n": 3}}  # a plain class stays plain

    bodies = run_all(app)
    assert Charge.runs == [CARD] and sorted(Plain.runs) == [1, 2, 3]
    (sent,) = [json.loads(b) for b in bodies if json.loads(b)["job"] == "encbatch.charge"]
    assert sent["payload"] == {} and "encrypted" in sent and sent["for_batch"] == created.id  # sealed again
    assert all(CARD not in b for b in bodies) and CARD not in json.dumps(table_items(app))
    found = created.fresh()
    assert found.finished and found.processed == 2


def test_a_sealed_callback_moved_to_another_batch_does_not_open(app: App) -> None:
    first = batch([Plain(n=1)]).then(Charge(card=CARD)).dispatch()
    second = batch([Plain(n=2)]).then(Charge(card=LATER)).dispatch()
    dynamodb = aws.client("dynamodb")
    stolen = dynamodb.get_item(
        TableName=app.settings.table, Key={"pk": {"S": f"batch#{first.id}"}, "sk": {"S": "meta"}}
    )
    dynamodb.update_item(
        TableName=app.settings.table,
        Key={"pk": {"S": f"batch#{second.id}"}, "sk": {"S": "meta"}},
        UpdateExpression="SET callbacks = :c",
        ExpressionAttributeValues={":c": stolen["Item"]["callbacks"]},
    )
    run_all(app)
    assert Charge.runs == [CARD]  # the first batch's own; the copy in the second batch's record did not open
    (letter,) = dead_letters(app)
    assert letter["attrs"]["sqsjobs.reason"] == "invalid_link", letter["attrs"]
    assert "cannot be decrypted" in json.dumps(letter["attrs"])
    assert CARD not in letter["Body"]


# -- a chain that reaches a batch -----------------------------------------------------------------------
def test_a_chain_reaching_a_batch_keeps_the_callbacks_and_the_rest_of_the_chain_sealed(app: App) -> None:
    chain([Plain(n=1), batch([Plain(n=2), Plain(n=3)]).then(Charge(card=CARD)), Charge(card=LATER)]).catch(
        Charge(card=CAUGHT)
    ).dispatch()
    bodies = []
    connection = app.connection
    (message,) = connection.receive("default", 10, 0)  # the first link; the worker opens the chain it carries
    bodies.append(message.body)
    app.runner.process(message, connection)
    connection.delete("default", [message])

    (record,) = batch_meta(app)  # the worker reached the batch link and stored its record
    stored = json.dumps(table_items(app))
    assert all(secret not in stored for secret in (CARD, LATER, CAUGHT))
    waiting = json.loads(record["continuation"]["S"])
    assert [link["payload"] for link in waiting["next"]] == [{}] and "encrypted" in waiting["catch"]

    bodies += run_all(app)
    assert sorted(Plain.runs) == [1, 2, 3] and Charge.runs == [CARD, LATER]
    assert all(secret not in body for body in bodies for secret in (CARD, LATER, CAUGHT))


def test_a_chain_that_starts_with_a_batch_stores_it_sealed_at_dispatch(app: App) -> None:
    chain([batch([Plain(n=1)]).catch(Charge(card=CARD)), Plain(n=2)]).catch(Charge(card=CAUGHT)).dispatch()
    stored = json.dumps(table_items(app))
    assert CARD not in stored and CAUGHT not in stored
    run_all(app)
    assert Plain.runs == [1, 2] and Charge.runs == []


# -- KMS only when something is encrypted ---------------------------------------------------------------
def test_only_a_batch_naming_an_encrypted_class_calls_kms(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = kms_calls()
    with monkeypatch.context() as patch:  # unloaded for the dispatch only; then the same module object again
        patch.setattr(sqsjobs, "encryption", encryption)
        patch.delitem(sys.modules, "sqsjobs.encryption")
        batch([Plain(n=1), [Plain(n=2), Plain(n=3)]]).then(Plain(n=4)).catch(Plain(n=5)).dispatch()
        assert "sqsjobs.encryption" not in sys.modules  # a dispatcher that encrypts nothing never loads it
    run_all(app)
    assert sorted(Plain.runs) == [1, 2, 3, 4]
    assert seen == [] and app._encryptor is None

    batch([Plain(n=6)]).then(Charge(card=CARD)).dispatch()
    assert seen == ["GenerateDataKey"]  # the callback, sealed for the record


def test_kms_refusing_the_data_key_stores_no_batch(app: App) -> None:
    from botocore.awsrequest import AWSResponse

    def refuse(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        parsed = {"Error": {"Code": "AccessDeniedException", "Message": "refused by the test"}, "ResponseMetadata": {}}
        return AWSResponse("https://kms.invalid/", 400, {}, None), parsed  # type: ignore[arg-type]

    aws.client("kms").meta.events.register_first("before-call.kms.GenerateDataKey", refuse)
    with pytest.raises(DispatchError, match="kms:GenerateDataKey"):
        batch([Plain(n=1)]).then(Charge(card=CARD)).dispatch()
    assert batch_meta(app) == [] and run_all(app) == []

"""The shipped envelope JSON Schema is the wire format: every body sqsjobs sends validates against it, the
bodies it refuses are refused by the workers too, and the example in docs/envelope.md runs a job."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from jsonschema import Draft202012Validator

from sqsjobs import App, Job, OutgoingMessage, PermanentError, aws, batch, chain
from sqsjobs.connections.memory import MemoryConnection
from sqsjobs.envelope import decode
from sqsjobs.errors import BadMessageError
from sqsjobs.schemas import envelope_schema
from sqsjobs.worker import Worker, WorkerOptions

KEY = "envelope-schema-signing-key-of-32-bytes!"
DOCS = Path(__file__).parents[2] / "docs" / "envelope.md"
validator = Draft202012Validator(envelope_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


class Recording(MemoryConnection):
    """The memory connection, keeping every body sent: to a queue, or to a DLQ."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[str] = []

    def send(self, queue: str, message: OutgoingMessage) -> str:
        self.bodies.append(message.body)
        return super().send(queue, message)

    def send_to_dlq(self, queue: str, message: OutgoingMessage) -> None:
        self.bodies.append(message.body)
        super().send_to_dlq(queue, message)


class Step(Job, name="envelope-schema.step"):
    n: int
    note: str | None = None
    retry_until = timedelta(hours=1)

    def job_tags(self) -> list[str]:
        return [f"step:{self.n}"]

    def handle(self) -> None:
        pass


class Once(Job, name="envelope-schema.once"):
    unique_for = 60.0

    def handle(self) -> None:
        pass


class Breaks(Job, name="envelope-schema.breaks"):
    def handle(self) -> None:
        raise PermanentError("no")


class Secret(Job, name="envelope-schema.secret"):
    encrypted = True
    card: str

    def handle(self) -> None:
        pass


class SendInvoice(Job, name="invoices.send"):
    sent: ClassVar[list[int]] = []
    invoice_id: int

    def handle(self) -> None:
        SendInvoice.sent.append(self.invoice_id)


def problems(body: str) -> list[str]:
    return [error.message for error in validator.iter_errors(json.loads(body))]


@pytest.fixture
def recording() -> Iterator[tuple[App, Recording]]:
    connection = Recording()
    app = App(connection=connection, signing_key=KEY)
    with app.activate():
        yield app, connection


def test_every_body_a_whole_workflow_sends_validates(recording: tuple[App, Recording]) -> None:
    app, connection = recording
    Step(n=1, note="é ✓").dispatch()
    Once().dispatch()
    Breaks().dispatch()  # its DLQ copy is a body too
    chain([Step(n=3), batch([Step(n=4), [Step(n=5), Step(n=6)]]), Step(n=7)]).catch(Step(n=8)).dispatch()
    batch([Step(n=9), Breaks()]).then(Step(n=10)).catch(Step(n=11)).finally_(Step(n=12)).dispatch()
    Worker(app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False)
    Step(n=2).dispatch(delay=timedelta(hours=2))  # a long delay (available_at), after the worker: it waits

    bodies = [json.loads(b) for b in connection.bodies]
    assert len(bodies) >= 15
    fields = set().union(*bodies)
    for field in ("available_at", "retry_until", "chain", "batch_id", "unique_key", "tags", "sig", "for_batch"):
        assert field in fields, f"the workflow should have produced a body with {field!r}"
    for body in connection.bodies:
        assert problems(body) == [], body


def test_an_encrypted_body_validates(moto: None) -> None:
    key = str(aws.client("kms").create_key(Description="sqsjobs tests")["KeyMetadata"]["KeyId"])
    connection = Recording()
    with App(connection=connection, kms_key=key).activate():
        Secret(card="4111").dispatch()
    (body,) = connection.bodies
    data = json.loads(body)
    assert data["payload"] == {} and data["encrypted"]["alg"] == "A256GCM"
    assert problems(body) == []


def good() -> dict[str, Any]:
    return {
        "v": 1,
        "id": "7d0c6b59-8f3e-4c1a-9a57-2f4f4b0e9a11",
        "job": "invoices.send",
        "payload": {"invoice_id": 7},
        "queue": "default",
        "dispatched_at": "2026-01-01T09:30:00.000Z",
    }


LINK = {"job": "invoices.send", "payload": {}}
SEALED = {"v": 1, "alg": "A256GCM", "key": "a2V5", "iv": "aXY=", "ct": "Y3Q="}
BAD = {
    "no version": lambda e: e.pop("v"),
    "version 2": lambda e: e.update(v=2),
    "version as text": lambda e: e.update(v="1"),
    "no id": lambda e: e.pop("id"),
    "empty id": lambda e: e.update(id=""),
    "no job": lambda e: e.pop("job"),
    "no payload": lambda e: e.pop("payload"),
    "payload not an object": lambda e: e.update(payload=[7]),
    "time without a zone": lambda e: e.update(dispatched_at="2026-01-01T09:30:00"),
    "not a time": lambda e: e.update(dispatched_at="yesterday"),
    "available_at a number": lambda e: e.update(available_at=1767260000),
    "chain position below 0": lambda e: e.update(chain={"id": e["id"], "pos": -1, "next": []}),
    "chain id not a uuid": lambda e: e.update(chain={"id": "x", "pos": 0, "next": []}),
    "link with nothing to run": lambda e: e.update(chain={"id": e["id"], "pos": 0, "next": [{"queue": "q"}]}),
    "batch without jobs": lambda e: e.update(chain={"id": e["id"], "pos": 0, "next": [{"batch": {}}]}),
    "sealed with another algorithm": lambda e: e.update(encrypted={**SEALED, "alg": "A128GCM"}),
    "sealed with an extra field": lambda e: e.update(encrypted={**SEALED, "plain": "x"}),
    "eleven tags": lambda e: e.update(tags=[f"t{i}" for i in range(11)]),
    "an empty tag": lambda e: e.update(tags=[""]),
    "a huge unique key": lambda e: e.update(unique_key="k" * 1025),
    "batch id a number": lambda e: e.update(batch_id=7),
}


@pytest.mark.parametrize("change", list(BAD.values()), ids=list(BAD))
def test_a_crafted_bad_envelope_is_refused_by_the_schema_and_by_workers(change: Any) -> None:
    envelope = good()
    change(envelope)
    body = json.dumps(envelope)
    assert problems(body) != []
    with pytest.raises(BadMessageError):
        decode(body)


def test_a_job_name_no_class_can_have_is_refused_by_both() -> None:
    body = json.dumps({**good(), "job": "1 not a name"})
    assert problems(body) != []
    assert decode(body).job not in App(connection="memory").registry


def test_a_malformed_signature_is_refused_by_both() -> None:
    signed = json.loads(next(iter(sent_by(App(connection=Recording(), signing_key=KEY)))))
    assert re.fullmatch(r"default:[0-9a-f]{64}", signed["sig"])
    forged = json.dumps({**signed, "sig": "default:not-hex"})
    assert problems(forged) != []
    with pytest.raises(BadMessageError):
        decode(forged, KEY.encode())


def sent_by(app: App) -> list[str]:
    with app.activate():
        SendInvoice(invoice_id=1).dispatch()
    assert isinstance(app.connection, Recording)
    return app.connection.bodies


def test_unknown_top_level_fields_are_allowed_and_kept() -> None:
    body = json.dumps({**good(), "x_origin": "billing-service"})
    assert problems(body) == []
    assert decode(body).extra == {"x_origin": "billing-service"}


def test_the_example_in_the_docs_validates_and_runs_the_job(memory_app: App) -> None:
    text = DOCS.read_text()
    example = text[text.index("## A minimal example") :]
    body = example[example.index("```json") + len("```json") : example.index("```", example.index("```json") + 7)]
    assert problems(body) == []
    SendInvoice.sent.clear()
    memory_app.connection.send("default", OutgoingMessage(body=body))
    Worker(memory_app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False)
    assert SendInvoice.sent == [7]

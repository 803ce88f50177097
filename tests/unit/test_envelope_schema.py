"""The shipped envelope JSON Schema is the wire format: every body sqsjobs sends validates against it, the
bodies it refuses are refused by the workers too, and the example in docs/envelope.md runs a job."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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


# -- the schema and the workers agree, body by body -----------------------------------------------------------

loose = Draft202012Validator(envelope_schema())  # a validator that does not assert formats: the pattern decides
CHAIN_ID = "7d0c6b59-8f3e-4c1a-9a57-2f4f4b0e9a11"


def in_chain(*links: dict[str, Any]) -> dict[str, Any]:
    return {"chain": {"id": CHAIN_ID, "pos": 0, "next": list(links)}}


# (change to the good body, whether it is valid): each is judged the same by both validators and by decode().
AGREED: dict[str, tuple[dict[str, Any], bool]] = {
    "the docs example": ({}, True),
    "v 1.0 (JSON Schema's integer includes it)": ({"v": 1.0}, True),
    "v true": ({"v": True}, False),
    "v 1.5": ({"v": 1.5}, False),
    "chain pos 1.0": ({"chain": {"id": CHAIN_ID, "pos": 1.0, "next": []}}, True),
    "chain pos 1.5": ({"chain": {"id": CHAIN_ID, "pos": 1.5, "next": []}}, False),
    "chain pos true": ({"chain": {"id": CHAIN_ID, "pos": True, "next": []}}, False),
    "chain id upper case": ({"chain": {"id": CHAIN_ID.upper(), "pos": 0, "next": []}}, True),
    "chain id without hyphens": ({"chain": {"id": CHAIN_ID.replace("-", ""), "pos": 0, "next": []}}, False),
    "chain id urn:uuid:": ({"chain": {"id": f"urn:uuid:{CHAIN_ID}", "pos": 0, "next": []}}, False),
    "chain id in braces": ({"chain": {"id": "{" + CHAIN_ID + "}", "pos": 0, "next": []}}, False),
    "sealed v 1.0": ({"payload": {}, "encrypted": {**SEALED, "v": 1.0}}, True),
    "time with an offset": ({"dispatched_at": "2026-01-01T09:30:00+02:00"}, True),
    "time with 9 fraction digits": ({"dispatched_at": "2026-01-01T09:30:00.123456789Z"}, True),
    "time with -00:00": ({"dispatched_at": "2026-01-01T09:30:00-00:00"}, True),
    "time offset +23:59": ({"dispatched_at": "2026-01-01T09:30:00+23:59"}, True),
    "time month 13": ({"dispatched_at": "2026-13-01T09:30:00Z"}, False),
    "time day 32": ({"dispatched_at": "2026-01-32T09:30:00Z"}, False),
    "time hour 24": ({"dispatched_at": "2026-01-01T24:00:00Z"}, False),
    "time leap second": ({"dispatched_at": "2026-12-31T23:59:60Z"}, False),
    "time offset +24:00": ({"dispatched_at": "2026-01-01T09:30:00+24:00"}, False),
    "time year 0000": ({"dispatched_at": "0000-01-01T09:30:00Z"}, False),
    "time with a space": ({"dispatched_at": "2026-01-01 09:30:00Z"}, False),
    "time lower-case t and z": ({"dispatched_at": "2026-01-01t09:30:00z"}, False),
    "time without seconds": ({"dispatched_at": "2026-01-01T09:30Z"}, False),
    "time offset without colon": ({"dispatched_at": "2026-01-01T09:30:00+0000"}, False),
    "time with 10 fraction digits": ({"dispatched_at": "2026-01-01T09:30:00.1234567890Z"}, False),
    "available_at null": ({"available_at": None}, True),
    "link delay true": ({"chain": {"id": CHAIN_ID, "pos": 0, "next": [{**LINK, "delay": True}]}}, False),
    "link delay 5": ({"chain": {"id": CHAIN_ID, "pos": 0, "next": [{**LINK, "delay": 5}]}}, True),
    "batch allow_failures null": (in_chain({"batch": {"jobs": [], "allow_failures": None}}), False),
    "batch callback under another key": (in_chain({"batch": {"jobs": [], "callbacks": {"x": LINK}}}), False),
    "id of 128 astral characters": ({"id": "😀" * 128}, True),
    "id of 129 characters": ({"id": "x" * 129}, False),
    "retried as text": ({"retried": "yes"}, False),
    "an empty queue": ({"queue": ""}, False),
}  # fmt: skip


def verdicts(envelope: dict[str, Any]) -> tuple[bool, bool, bool]:
    """(the schema with format assertion, without it, a worker's decode())."""
    try:
        decode(json.dumps(envelope))
        decoded = True
    except BadMessageError:
        decoded = False
    return validator.is_valid(envelope), loose.is_valid(envelope), decoded


@pytest.mark.parametrize(("change", "valid"), list(AGREED.values()), ids=list(AGREED))
def test_the_schema_and_the_workers_agree_on_a_crafted_body(change: dict[str, Any], valid: bool) -> None:
    assert verdicts({**good(), **change}) == (valid, valid, valid)


def test_an_integral_float_is_read_as_its_int() -> None:
    envelope = decode(json.dumps({**good(), "v": 1.0, "chain": {"id": CHAIN_ID, "pos": 2.0, "next": []}}))
    assert envelope.chain is not None and type(envelope.chain["pos"]) is int and envelope.chain["pos"] == 2


def test_the_time_pattern_in_the_schema_is_the_one_workers_apply() -> None:
    from sqsjobs.envelope import TIME_PATTERN, UUID_PATTERN

    defs = envelope_schema()["$defs"]
    assert defs["time"]["pattern"] == TIME_PATTERN
    assert defs["chain"]["properties"]["id"]["pattern"] == UUID_PATTERN


DIGITS = st.integers
ZONES = st.sampled_from(["Z", "z", "+00:00", "-00:00", "+02:00", "-23:59", "+23:59", "+24:00", "+05:60", "+0000", ""])


@settings(max_examples=300, deadline=None)
@given(
    year=DIGITS(1998, 2101),
    month=DIGITS(0, 13),
    day=DIGITS(0, 32),
    hour=DIGITS(0, 25),
    minute=DIGITS(0, 61),
    second=DIGITS(0, 61),
    fraction=st.sampled_from(["", ".0", ".123", ".123456789", ".1234567890", "."]),
    separator=st.sampled_from(["T", "t", " "]),
    zone=ZONES,
)
def test_any_time_is_judged_the_same_by_the_schema_and_the_workers(
    year: int, month: int, day: int, hour: int, minute: int, second: int, fraction: str, separator: str, zone: str
) -> None:
    text = f"{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}{fraction}{zone}"
    strict, pattern_only, decoded = verdicts({**good(), "dispatched_at": text})
    assert strict == decoded, text
    if pattern_only != decoded:  # only a day its month lacks passes the pattern alone (documented)
        assert pattern_only and not _real_day(year, month, day), text


def _real_day(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999-00:01"])
@pytest.mark.parametrize("field", ["dispatched_at", "available_at", "retry_until"])
def test_a_time_with_no_utc_datetime_passes_the_schema_and_is_refused_by_workers(field: str, when: str) -> None:
    """Documented: its offset moves it past either end of datetime's range, so `dispatched_at(job)` and the
    failed-jobs views could not show it; the schema's `date-time` format cannot say so."""
    assert verdicts({**good(), field: when}) == (True, True, False)
    inside = when.replace("+23:59", "-23:59").replace("-00:01", "+00:01")  # the same wall time, in range
    assert verdicts({**good(), field: inside}) == (True, True, True)


def test_what_the_schema_refuses_and_a_worker_takes_is_refused_later_or_only_with_keys() -> None:
    """The documented differences: a job name no class can have runs nothing (`unknown_job`); a malformed
    `sig` is ignored by a worker without keys and refused by one with keys (`signature`)."""
    named = {**good(), "job": "a b"}
    assert verdicts(named)[:2] == (False, False)
    assert decode(json.dumps(named)).job not in App(connection="memory").registry
    for sig in (5, "A" * 64):
        body = json.dumps({**good(), "sig": sig})
        assert verdicts(json.loads(body)) == (False, False, True)
        with pytest.raises(BadMessageError) as refused:
            decode(body, KEY.encode())
        assert refused.value.kind == "signature"


def test_the_encryption_aad_is_written_as_the_docs_say() -> None:
    """A producer in another language must bind the same bytes: ASCII-only, non-ASCII as \\u escapes."""
    from sqsjobs.encryption import link_aad, payload_aad

    assert (
        payload_aad("invoices.send", "commande-é") == b'["sqsjobs/1", "payload", "invoices.send", "commande-\\u00e9"]'
    )
    assert payload_aad("j", "😀") == b'["sqsjobs/1", "payload", "j", "\\ud83d\\ude00"]'
    assert link_aad("j", "id") == b'["sqsjobs/1", "link", "j", "id"]'
    assert '`"commande-\\u00e9"`' in DOCS.read_text()

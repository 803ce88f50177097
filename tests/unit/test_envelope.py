from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqsjobs.envelope import Envelope, decode
from sqsjobs.errors import BadMessageError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def make(**overrides: object) -> Envelope:
    fields: dict[str, object] = {
        "id": "job-1",
        "job": "mail.send",
        "payload": {"to": "a@example.com"},
        "queue": "default",
        "dispatched_at": "2026-01-01T00:00:00.000Z",
    }
    fields.update(overrides)
    return Envelope(**fields)  # type: ignore[arg-type]


@given(payload=st.dictionaries(st.text(max_size=10), json_values, max_size=6), signed=st.booleans())
def test_any_json_payload_round_trips(payload: dict[str, object], signed: bool) -> None:
    key = b"secret" if signed else None
    envelope = make(payload=payload, available_at="2026-01-01T01:00:00.000Z", trace="t-1")
    back = decode(envelope.encode(key), key)
    assert back.payload == payload
    assert (back.id, back.job, back.queue, back.available_at, back.trace) == (
        "job-1",
        "mail.send",
        "default",
        "2026-01-01T01:00:00.000Z",
        "t-1",
    )


def test_unknown_fields_survive_a_round_trip_for_forward_compatibility() -> None:
    body = json.loads(make().encode())
    body["future_field"] = {"x": 1}
    assert json.loads(decode(json.dumps(body)).encode())["future_field"] == {"x": 1}


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("not json", "malformed"),
        ("[1, 2]", "malformed"),
        ('{"v": 99, "id": "x"}', "malformed"),
        ('{"v": 1, "job": "x", "payload": {}, "queue": "q", "dispatched_at": "t"}', "malformed"),
        ('{"v": 1, "id": 5, "job": "x", "payload": {}, "queue": "q", "dispatched_at": "t"}', "malformed"),
        ('{"v": 1, "id": "i", "job": "x", "payload": [], "queue": "q", "dispatched_at": "t"}', "malformed"),
    ],
)
def test_bodies_that_are_not_envelopes_are_bad_messages(body: str, kind: str) -> None:
    with pytest.raises(BadMessageError) as caught:
        decode(body)
    assert caught.value.kind == kind


def test_with_a_key_unsigned_and_tampered_messages_are_refused() -> None:
    key = b"k1"
    with pytest.raises(BadMessageError, match="not signed") as unsigned:
        decode(make().encode(), key)
    assert unsigned.value.kind == "signature"

    tampered = json.loads(make().encode(key))
    tampered["payload"]["to"] = "attacker@example.com"
    with pytest.raises(BadMessageError, match="does not match") as changed:
        decode(json.dumps(tampered), key)
    assert changed.value.kind == "signature"

    with pytest.raises(BadMessageError):
        decode(make().encode(b"another-key"), key)
    assert decode(make().encode(key), key).payload == {"to": "a@example.com"}

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqsjobs.envelope import Envelope, decode
from sqsjobs.errors import BadMessageError
from sqsjobs.signing import SigningKeys

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


# -- signatures with key ids (sqsjobs.signing) ---------------------------------------------------
LONG = b"k" * 32


def test_a_signature_names_its_key_id_and_any_listed_key_verifies() -> None:
    old, new = SigningKeys("old", {"old": LONG}), SigningKeys("new", {"new": b"n" * 32, "old": LONG})
    body = make().encode(old)
    assert json.loads(body)["sig"].startswith("old:")
    assert decode(body, new).id == "job-1"
    with pytest.raises(BadMessageError, match="key id 'new', which SQSJOBS_SIGNING_KEY does not list"):
        decode(make().encode(new), old)


def test_a_signature_binds_the_queue() -> None:
    keys = SigningKeys.of(LONG)
    body = make(queue="payments").encode(keys)
    assert decode(body, keys, queue="payments").queue == "payments"
    with pytest.raises(BadMessageError, match="signed for queue 'payments' but received on 'default'") as caught:
        decode(body, keys, queue="default")
    assert caught.value.kind == "signature"
    forged = json.loads(body)
    forged["queue"] = "default"  # rewriting the envelope's queue to match breaks the MAC instead
    with pytest.raises(BadMessageError, match="does not match"):
        decode(json.dumps(forged), keys, queue="default")


def test_an_offloaded_body_must_come_from_an_object_of_its_own_job() -> None:
    keys = SigningKeys.of(LONG)
    body = make(id="job-1").encode(keys)
    assert decode(body, keys, object_key="sqsjobs/job-1-0a1b2c3d").id == "job-1"
    for key in (
        "sqsjobs/job-2-0a1b2c3d",
        "other/job-1-0a1b2c3d",
        "sqsjobs/job-1-0a1b2c3d/x",
        "sqsjobs/xjob-1-0a1b2c3d",
    ):
        with pytest.raises(BadMessageError, match="not one of its own") as caught:
            decode(body, keys, object_key=key)
        assert caught.value.kind == "signature"


def test_the_max_age_counts_from_dispatch_or_due_time_to_the_send() -> None:
    keys = SigningKeys("default", {"default": LONG}, max_age=60, skew=5)
    dispatched = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    body = make(dispatched_at="2027-01-15T08:00:00.000Z").encode(keys)
    assert decode(body, keys, sent_at=dispatched + 65).id == "job-1"  # max age + skew
    with pytest.raises(BadMessageError, match="SQSJOBS_SIGNING_MAX_AGE") as caught:
        decode(body, keys, sent_at=dispatched + 66)
    assert caught.value.kind == "expired_signature"
    delayed = make(dispatched_at="2027-01-15T08:00:00.000Z", available_at="2027-01-16T08:00:00.000Z").encode(keys)
    assert decode(delayed, keys, sent_at=dispatched + 86_400 + 60).id == "job-1"
    assert decode(body, keys).id == "job-1"  # no send time (a DLQ body read by `failed`): not judged


def test_signatures_from_before_key_ids_still_verify_on_their_own_queue() -> None:
    import hashlib
    import hmac

    data = make().to_dict()
    legacy = hmac.new(LONG, json.dumps(data, separators=(",", ":"), sort_keys=True).encode(), hashlib.sha256)
    body = json.dumps({**data, "sig": legacy.hexdigest()})
    assert decode(body, LONG, queue="default").id == "job-1"
    with pytest.raises(BadMessageError, match="received on 'high'"):
        decode(body, LONG, queue="high")

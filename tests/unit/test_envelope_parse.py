"""A body is read as the standard library reads it, whichever parser did the reading.

`envelope.decode` parses a plain body (ASCII, no \\u escape) with pydantic-core, in a third of json.loads'
time, and hands every other body, and any body that parser refuses, to json.loads. These tests hold it
to that: every value comes out as json.loads gives it (a signature is checked over those values, so a
float read one ulp apart would refuse a good message), and every refusal is the one json.loads' reading
leads to.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sqsjobs import envelope
from sqsjobs.envelope import MAX_DEPTH, decode
from sqsjobs.errors import BadMessageError
from sqsjobs.signing import SigningKeys

KEY = SigningKeys("k1", {"k1": b"k" * 32})


def _scalars(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return (
        st.none()
        | st.booleans()
        | st.integers()  # beyond 64 bits too
        | st.floats(allow_nan=False)  # -0.0, subnormals, inf (json.dumps writes Infinity)
        | text
    )


def _values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        _scalars(text), lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4)
    )


#: Text a plain body carries (read by pydantic-core): printable ASCII and the escapes json.dumps writes short.
_PLAIN_TEXT = st.text(st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + list("\n\r\t\b\f")))
#: Any text but lone surrogates (those are refused, below): most of it makes a body json.loads reads.
_ANY_TEXT = st.text()


def _body(payload: dict[str, Any], ascii_only: bool) -> str:
    return json.dumps(
        {
            "v": 1,
            "id": "0c8f0b8e-5f3a-4b7e-9d52-3c3b4f2b8a11",
            "job": "noop",
            "payload": payload,
            "queue": "default",
            "dispatched_at": "2026-12-04T11:00:00.000Z",
        },
        ensure_ascii=ascii_only,
    )


@settings(max_examples=300)
@given(st.dictionaries(_PLAIN_TEXT, _values(_PLAIN_TEXT), max_size=5))
def test_every_value_of_a_plain_body_is_read_as_json_loads_reads_it(payload: dict[str, Any]) -> None:
    body = _body(payload, True)
    assume("\\u" not in body)  # a backslash before a u in the text: not plain (json.loads reads it)
    assert body.isascii()  # read by pydantic-core
    # repr, not ==: 0 and 0.0, -0.0 and 0.0, 1 and True are equal but not the same value
    assert repr(decode(body).payload) == repr(json.loads(body)["payload"])


@settings(max_examples=100)
@given(st.dictionaries(_ANY_TEXT, _values(_ANY_TEXT), max_size=5), st.booleans())
def test_every_value_of_any_body_is_read_as_json_loads_reads_it(payload: dict[str, Any], ascii_only: bool) -> None:
    body = _body(payload, ascii_only)
    assert repr(decode(body).payload) == repr(json.loads(body)["payload"])


@settings(max_examples=300)
@given(st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True))
def test_every_number_as_written_is_read_as_json_loads_reads_it(number: str) -> None:
    body = _body({}, True).replace('"payload": {}', f'"payload": {{"n": {number}}}')
    assert repr(decode(body).payload["n"]) == repr(json.loads(number))


@settings(max_examples=100)
@given(st.dictionaries(_PLAIN_TEXT, _values(_PLAIN_TEXT), max_size=5), st.booleans())
def test_a_signed_body_verifies_whatever_its_payload_holds(payload: dict[str, Any], ascii_only: bool) -> None:
    data = json.loads(_body(payload, ascii_only))
    data["sig"] = KEY.sign(dict(data))
    body = json.dumps(data)
    assert repr(decode(body, KEY).payload) == repr(json.loads(body)["payload"])


def test_non_finite_numbers_and_big_integers_are_read() -> None:
    body = _body({"inf": math.inf, "big": 10**40}, True).replace("Infinity", "NaN", 1)
    got = decode(body).payload
    assert math.isnan(got["inf"]) and got["big"] == 10**40


def test_a_number_only_the_standard_library_reads_is_read_as_it_reads_it() -> None:
    # pydantic-core refuses a number of more than 4,300 digits; json.loads reads this float (to inf)
    digits = "1" * 4301 + ".0"
    body = _body({}, True).replace('"payload": {}', f'"payload": {{"f": {digits}, "i": {"9" * 4300}}}')
    got = decode(body).payload
    assert got["f"] == json.loads(digits) == math.inf and got["i"] == int("9" * 4300)


@pytest.fixture
def digit_limit_640() -> Iterator[None]:
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    yield
    sys.set_int_max_str_digits(before)


@pytest.mark.usefixtures("digit_limit_640")
def test_an_integer_past_a_lowered_digit_limit_is_refused_as_python_refuses_it() -> None:
    # pydantic-core keeps its own limit of 4,300 digits whatever Python's is
    body = _body({}, True).replace('"payload": {}', f'"payload": {{"n": {"1" * 1000}}}')
    for keys in (None, KEY):
        with pytest.raises(BadMessageError) as caught:
            decode(body, keys)
        assert caught.value.kind == "malformed" and "Exceeds the limit (640 digits)" in str(caught.value)


@pytest.mark.parametrize("limit", [4300, 0, 10_000], ids=["default digit limit", "no digit limit", "a higher one"])
def test_a_plain_body_is_read_without_json_loads(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """What the faster parser is for: if its call ever failed on every body, all would still decode, each
    parsed twice."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("json.loads read a plain body")

    monkeypatch.setattr(envelope.json, "loads", refuse)
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(limit)
    try:
        assert decode(_body({"n": 1, "name": "order-7\n"}, True)).payload == {"n": 1, "name": "order-7\n"}
    finally:
        sys.set_int_max_str_digits(before)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        # pydantic-core refuses a lone surrogate escape; json.loads reads it, and the shape check refuses it
        (_body({"text": "\ud800"}, True), "lone UTF-16 surrogate"),
        (_body({"text": "\udc00\ud800"}, True), "lone UTF-16 surrogate"),
        (_body({"text": "\ud800"}, True).replace("\\ud800", "\\uD800"), "lone UTF-16 surrogate"),
        # deeper than our limit but within pydantic-core's, and deeper than both
        (_body({"a": json.loads("[" * 100 + "]" * 100)}, True), f"nested deeper than {MAX_DEPTH} levels"),
        (_body({"a": json.loads("[" * 300 + "]" * 300)}, True), f"nested deeper than {MAX_DEPTH} levels"),
        ("[" * 50_000 + "]" * 50_000, f"nested deeper than {MAX_DEPTH} levels"),
        # not JSON: json.loads' own account of why
        ("{'job': 'noop'}", "Expecting property name enclosed in double quotes"),
        ('{"job": "noop"} trailing', "Extra data"),
        ("\ufeff{}", "Unexpected UTF-8 BOM"),
        ("[]", "JSON but not an sqsjobs envelope object"),
        # a connection in this process (memory, inline, the user's own) may hand over what SQS never would
        (_body({"text": "\ud800"}, False), "lone UTF-16 surrogate"),
        (b"{}", "not text"),
    ],
)
def test_a_body_refused_is_refused_as_json_loads_reading_it_would_be(body: Any, says: str) -> None:
    with pytest.raises(BadMessageError) as caught:
        decode(body)
    assert caught.value.kind == "malformed"
    assert says in str(caught.value)

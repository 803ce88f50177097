"""Hypothesis strategies for what an attacker (or a buggy producer) can really put on an SQS queue.

Strategies draw small, printable *recipes* (so a falsifying example reads well); `harness.build`
turns a recipe into the body and attributes that are sent. Everything sent obeys SQS's rules:
bodies and attribute values are allowed XML characters (#x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD
#x10000-#x10FFFF), at most 10 attributes, at most 1 MiB. Lone surrogates travel as JSON escapes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# -- profiles ------------------------------------------------------------------------------
_HEALTH = [
    HealthCheck.function_scoped_fixture,  # one mock_aws per test; every example makes its own queues
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
    HealthCheck.filter_too_much,
]
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=_HEALTH)
settings.register_profile("long", max_examples=3000, deadline=None, suppress_health_check=_HEALTH)

#: The profile every fuzz property runs under: `ci` unless SQSJOBS_FUZZ_PROFILE says otherwise.
#: Applied per test (a decorator), never loaded globally, so other Hypothesis tests keep theirs.
FUZZ = settings.get_profile(os.environ.get("SQSJOBS_FUZZ_PROFILE", "ci"))
#: Seconds pytest-timeout allows one property: the suite's default under `ci`, none under `long`.
FUZZ_TIMEOUT = 0 if os.environ.get("SQSJOBS_FUZZ_PROFILE") == "long" else 120

# -- characters SQS accepts --------------------------------------------------------------------
XML_CHARS = st.one_of(
    st.sampled_from("\t\n\r"),
    st.characters(min_codepoint=0x20, max_codepoint=0xD7FF),
    st.characters(min_codepoint=0xE000, max_codepoint=0xFFFD),
    st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
)


def xml_ok(text: str) -> bool:
    """Whether SQS would accept `text` as a body or attribute value."""
    return all(
        c in "\t\n\r" or 0x20 <= ord(c) <= 0xD7FF or 0xE000 <= ord(c) <= 0xFFFD or 0x10000 <= ord(c) <= 0x10FFFF
        for c in text
    )


def xml_text(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(XML_CHARS, min_size=min_size, max_size=max_size)


ENVELOPE_FIELDS = (
    "v",
    "id",
    "job",
    "payload",
    "queue",
    "dispatched_at",
    "available_at",
    "retry_until",
    "chain",
    "batch_id",
    "unique_key",
    "trace",
    "sig",
    "retried",
    "for_batch",
)
REQUIRED = ("v", "id", "job", "payload", "queue", "dispatched_at")

TIMESTAMPS = (
    "9999-99-99",
    "",
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "2020-01-01T00:00:00Z",
    "2026-01-01T00:00:00",  # naive
    "2026-01-01T00:00:00+25:00",
    "+275760-09-13T00:00:00Z",
    "now",
    "1e308",
    1e308,
    -1e308,
    0,
    -1,
    True,
)

#: JSON text placed verbatim where a value goes: numbers Python cannot hold, and NaN/Infinity.
RAW_NUMBERS = ("1e400", "-1e400", "1E-400", "NaN", "Infinity", "-Infinity", "-0", "1e308", "1" + "0" * 5000)


@dataclass(frozen=True)
class Raw:
    """JSON text spliced in verbatim: a number (RAW_NUMBERS) or `depth`-deep nesting."""

    number: str = ""
    depth: int = 0
    kind: str = "["

    def text(self) -> str:
        if self.depth:
            if self.kind == "[":
                return "[" * self.depth + "]" * self.depth
            return '{"a":' * self.depth + "1" + "}" * self.depth
        return self.number

    def __repr__(self) -> str:
        if self.depth:
            return f"Raw(depth={self.depth}, kind={self.kind!r})"
        return f"Raw({self.number if len(self.number) < 20 else self.number[:6] + f'...<{len(self.number)} chars>'})"


@dataclass(frozen=True)
class Surrogate:
    """A string holding a lone surrogate, sent as a JSON `\\udXXX` escape."""

    code: int = 0xD800
    around: str = ""

    def value(self) -> str:
        return self.around + chr(self.code) + self.around


@dataclass(frozen=True)
class BigSig:
    """A huge (and possibly non-ASCII) signature string."""

    char: str
    size: int

    def value(self) -> str:
        return self.char * self.size


def deep() -> st.SearchStrategy[Raw]:
    return st.builds(
        Raw,
        depth=st.one_of(st.integers(1_000, 5_000), st.sampled_from([1_000, 10_000, 100_000])),
        kind=st.sampled_from("[{"),
    )


raws = st.one_of(st.builds(Raw, number=st.sampled_from(RAW_NUMBERS)), deep())
surrogates = st.builds(
    Surrogate, code=st.integers(0xD800, 0xDFFF), around=st.sampled_from(["", "x", "é", "fuzz.recorder"])
)
junk: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        xml_text(max_size=20),
        st.sampled_from(TIMESTAMPS),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(xml_text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
sig_values: st.SearchStrategy[Any] = st.one_of(
    xml_text(max_size=80),
    st.text("0123456789abcdef", min_size=64, max_size=64),
    st.builds(BigSig, char=st.sampled_from(["a", "é", "\u4e2d", "\U0001f600", "0"]), size=st.integers(1, 200_000)),
    junk,
)
#: A chain as the library writes it, give or take: for poking at the workflow code with near-valid shapes.
chains: st.SearchStrategy[Any] = st.one_of(
    junk,
    st.fixed_dictionaries(
        {"id": junk, "pos": junk},
        optional={"next": st.lists(junk, max_size=2), "catch": junk},
    ),
)


@dataclass
class EnvelopeRecipe:
    """A Recorder envelope with `mutations` applied: (op, field, value) with op set/drop/raw."""

    mutations: list[tuple[str, str, Any]] = field(default_factory=list)
    signed: bool = False  # sign it with the app's key (the sender holds the key but is buggy)
    ascii_only: bool = False


@dataclass
class TextRecipe:
    """A body that is not an envelope at all."""

    text: str = ""
    raw: Raw | None = None


@dataclass
class PointerRecipe:
    """An Extended Client pointer body; `target` says what it points at."""

    #: own-valid (a real job's body in sqsjobs' bucket), own-missing, own-garbage, own-binary,
    #: foreign-valid (a job body in a bucket sqsjobs does not own), anywhere (drawn names)
    target: str = "own-valid"
    bucket: str = ""
    key: str = ""
    shape: str = "ok"  # ok, legacy-class, wrong-class, not-a-list, short, key-not-str, bucket-missing, json-junk
    size_attribute: str = "ExtendedPayloadSize"
    size_value: str | None = None  # None: the real size, as a Number


@dataclass
class Crafted:
    recipe: EnvelopeRecipe | TextRecipe | PointerRecipe
    #: extra message attributes: name -> (DataType, value)
    attributes: dict[str, tuple[str, str]] = field(default_factory=dict)


def _mutation(name: str) -> st.SearchStrategy[tuple[str, str, Any]]:
    values: st.SearchStrategy[Any]
    if name in ("available_at", "retry_until", "dispatched_at"):
        values = st.one_of(st.sampled_from(TIMESTAMPS), junk)
    elif name == "sig":
        values = sig_values
    elif name == "chain":
        values = chains
    elif name == "payload":
        values = st.one_of(junk, st.fixed_dictionaries({"token": st.one_of(junk, surrogates, raws)}))
    elif name == "v":
        values = st.one_of(st.sampled_from([1, 1.0, True, 2, 0, "1", None]), junk)
    elif name == "job":
        values = st.one_of(st.sampled_from(["fuzz.recorder", "Fuzz.Recorder", "fuzz.nope", ""]), junk)
    else:
        values = junk
    return st.one_of(
        st.tuples(st.just("set"), st.just(name), values),
        st.tuples(st.just("set"), st.just(name), surrogates),
        st.tuples(st.just("raw"), st.just(name), raws),
        st.tuples(st.just("drop"), st.just(name), st.none()),
    )


mutations = st.sampled_from(ENVELOPE_FIELDS).flatmap(_mutation)
extra_fields = st.tuples(st.just("set"), xml_text(1, 10), st.one_of(junk, raws, surrogates))

envelope_recipes = st.builds(
    EnvelopeRecipe,
    mutations=st.lists(st.one_of(mutations, mutations, extra_fields), min_size=0, max_size=4),
    signed=st.booleans(),
    ascii_only=st.booleans(),
)
text_recipes = st.one_of(
    st.builds(TextRecipe, text=xml_text(1, 200)),
    st.builds(TextRecipe, text=st.sampled_from(["[]", "{}", "null", '"x"', "1", "[1,2]", '{"v":1}', "\ufeff{}"])),
    st.builds(TextRecipe, raw=raws),
)

ATTRIBUTE_NAMES = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True).filter(lambda n: not n.lower().startswith(("aws", "amazon"))),
    st.sampled_from(["sqsjobs.reason", "sqsjobs.job_id", "retried", "ExtendedPayloadSize", "SQSLargePayloadSize"]),
)
SIZE_VALUES = ("1e3", "-1", "abc", "0", "1.5", " 12", "0x10", "9" * 38, "9" * 300, "NaN", "١٢", "12")

pointer_recipes = st.builds(
    PointerRecipe,
    target=st.sampled_from(["own-valid", "own-missing", "own-garbage", "own-binary", "foreign-valid", "anywhere"]),
    bucket=xml_text(0, 70),
    key=xml_text(0, 70),
    shape=st.sampled_from(
        ["ok", "ok", "ok", "legacy-class", "wrong-class", "not-a-list", "short", "key-not-str", "bucket-missing"]
    ),
    size_attribute=st.sampled_from(["ExtendedPayloadSize", "SQSLargePayloadSize"]),
    size_value=st.one_of(st.none(), st.sampled_from(SIZE_VALUES)),
)


def _attributes(reserved: int) -> st.SearchStrategy[dict[str, tuple[str, str]]]:
    values = st.one_of(
        st.tuples(st.just("String"), xml_text(1, 60)),
        st.tuples(st.just("String"), st.sampled_from(SIZE_VALUES)),
        st.tuples(st.just("Number"), st.integers(-(10**30), 10**30).map(str)),
    )
    return st.dictionaries(ATTRIBUTE_NAMES, values, max_size=max(0, 10 - reserved))


def _crafted(recipe: Any) -> st.SearchStrategy[Crafted]:
    reserved = 1 if isinstance(recipe, PointerRecipe) else 0
    return st.builds(Crafted, recipe=st.just(recipe), attributes=st.one_of(st.just({}), _attributes(reserved)))


crafted = st.one_of(envelope_recipes, text_recipes, pointer_recipes).flatmap(_crafted)


@dataclass
class Scenario:
    """One receive batch: `poison` crafted messages next to `valid` real jobs (plus valid pointers)."""

    signing: bool
    poison: list[Crafted]
    valid: int
    name: str = field(default="", compare=False)


@st.composite
def scenarios(draw: st.DrawFn, max_messages: int = 10) -> Scenario:
    valid = draw(st.integers(1, 4))
    poison = draw(st.lists(crafted, min_size=1, max_size=max_messages - valid))
    return Scenario(signing=draw(st.booleans()), poison=poison, valid=valid)


def _envelope(*mutations: tuple[str, str, Any], signed: bool = False) -> Crafted:
    return Crafted(EnvelopeRecipe(list(mutations), signed=signed))


#: One scenario per bug class seen so far: run in every profile (`@example`), before the random ones.
KNOWN: list[Scenario] = [
    Scenario(False, [Crafted(TextRecipe(raw=Raw(depth=100_000)))], 2, name="deep-array-100k"),
    Scenario(False, [Crafted(TextRecipe(raw=Raw(depth=1_000, kind="{")))], 1, name="deep-object-1k"),
    Scenario(False, [_envelope(("raw", "payload", Raw(depth=10_000)))], 1, name="deep-payload-10k"),
    Scenario(False, [Crafted(TextRecipe(raw=Raw(number="1" + "0" * 5000)))], 1, name="int-5000-digits"),
    Scenario(False, [_envelope(("raw", "v", Raw(number="1e400")))], 1, name="v-1e400"),
    Scenario(False, [_envelope(("set", "available_at", "9999-99-99"))], 1, name="available_at-9999-99-99"),
    Scenario(False, [_envelope(("set", "available_at", 1e308))], 1, name="available_at-1e308"),
    Scenario(False, [_envelope(("set", "retry_until", "2026-13-01T00:00:00Z"))], 1, name="retry_until-month-13"),
    Scenario(False, [_envelope(("set", "retry_until", ""))], 1, name="retry_until-empty"),
    Scenario(True, [_envelope(("set", "sig", "é" * 64))], 1, name="sig-non-ascii"),
    Scenario(True, [_envelope(("set", "sig", BigSig("\U0001f600", 50_000)))], 1, name="sig-huge-emoji"),
    Scenario(True, [_envelope(("set", "id", Surrogate(0xD800)))], 1, name="id-lone-surrogate-signed"),
    Scenario(
        True,
        [_envelope(("set", "payload", {"token": Surrogate(0xDC00)}), signed=True)],
        1,
        name="token-lone-surrogate-signed",
    ),
    Scenario(False, [_envelope(("set", "payload", {"token": Surrogate(0xDC00)}))], 1, name="token-lone-surrogate"),
    Scenario(False, [_envelope(("set", "chain", "x"))], 1, name="chain-x"),
    Scenario(False, [_envelope(("set", "chain", {"id": 5, "pos": "x"}))], 1, name="chain-bad-dict"),
    Scenario(False, [_envelope(("set", "batch_id", 7))], 1, name="batch_id-int"),
    Scenario(False, [_envelope(("set", "unique_key", ["x"]))], 1, name="unique_key-list"),
    Scenario(False, [Crafted(PointerRecipe("own-valid", size_value="abc"))], 2, name="pointer-size-abc"),
    Scenario(False, [Crafted(PointerRecipe("own-valid", size_value="1e3"))], 1, name="pointer-size-1e3"),
    Scenario(
        True,
        [Crafted(PointerRecipe("own-valid", size_attribute="SQSLargePayloadSize", size_value="-1"))],
        1,
        name="pointer-legacy-size-minus-1-signed",
    ),
    Scenario(
        False,
        [Crafted(PointerRecipe("anywhere", bucket="other/bucket", key="../../etc"))],
        1,
        name="pointer-invalid-bucket",
    ),
    Scenario(False, [Crafted(PointerRecipe("own-missing"))], 1, name="pointer-missing-object"),
    Scenario(False, [Crafted(PointerRecipe("foreign-valid"))], 1, name="pointer-into-a-foreign-bucket"),
    Scenario(False, [Crafted(PointerRecipe("own-binary"))], 1, name="pointer-not-utf8"),
    Scenario(
        True,
        [Crafted(PointerRecipe("own-valid")), Crafted(TextRecipe("garbage"))],
        1,
        name="pointer-valid-signed-next-to-garbage",
    ),
    Scenario(
        True,
        [
            Crafted(TextRecipe("x"), {"a": ("String", "b")}),
            _envelope(("set", "v", 2)),
            _envelope(("drop", "job", None)),
        ],
        3,
        name="mixed-signed",
    ),
]


#: Many kinds of poison in one receive batch, next to two real jobs.
EVERYTHING_AT_ONCE = Scenario(
    False,
    [
        Crafted(TextRecipe(raw=Raw(depth=100_000))),
        Crafted(TextRecipe(raw=Raw(number="1" + "0" * 5000))),
        Crafted(TextRecipe("garbage"), {"ExtendedPayloadSize": ("String", "abc")}),
        _envelope(("set", "available_at", "9999-99-99")),
        _envelope(("set", "chain", "x")),
        _envelope(("set", "payload", {"token": Surrogate(0xDC00)})),
        Crafted(PointerRecipe("own-valid", size_value="abc")),
        Crafted(PointerRecipe("own-missing")),
    ],
    2,
    name="everything-at-once",
)

"""Job names are checked when a class registers: a documented pattern, a clear error naming the class."""

from __future__ import annotations

import pytest

from sqsjobs import ConfigurationError, Job, Registry
from sqsjobs.registry import NAME_PATTERN, UNKNOWN


@pytest.mark.parametrize(
    "name",
    [
        "evil\n12:00:00 INFO    job processed job=billing.charge",
        "with space",
        "tab\tname",
        "1starts-with-a-digit",
        "-dash-first",
        "x" * 129,
        "émoji-é",
        'quote"d',
        "equals=sign",
        "\x1b[31mred",
    ],
)
def test_a_name_outside_the_pattern_is_refused_naming_the_class_and_the_pattern(name: str) -> None:
    with pytest.raises(ConfigurationError) as caught:

        class BadlyNamed(Job, name=name):
            def handle(self) -> None:
                pass

    message = str(caught.value)
    assert "BadlyNamed" in message and NAME_PATTERN in message


def test_an_alias_outside_the_pattern_is_refused_too() -> None:
    with pytest.raises(ConfigurationError, match="BadAlias"):

        class BadAlias(Job, name="names.bad-alias", aliases=("old\nname",)):
            def handle(self) -> None:
                pass


def test_a_class_name_used_as_the_job_name_must_fit_as_well() -> None:
    registry = Registry()

    class _Private(Job, abstract=True):
        pass

    with pytest.raises(ConfigurationError, match="_Private"):
        registry.add(_Private, _Private.__name__)


@pytest.mark.parametrize(
    "name", ["a", "billing.send-invoice", "Reports/Monthly:v2", "snake_case_name", "A" + "x" * 127, "SendInvoice"]
)
def test_names_inside_the_pattern_register(name: str) -> None:
    registry = Registry()

    class Fine(Job, abstract=True):
        pass

    registry.add(Fine, name)
    assert registry.get(name) is Fine
    assert registry.known_name(name) == name


def test_a_name_no_class_registered_is_known_as_unknown() -> None:
    registry = Registry()
    assert registry.known_name("names.never-registered") == UNKNOWN
    assert registry.known_name("x\ny") == UNKNOWN
    assert registry.known_name(None) == UNKNOWN
    assert "x\ny" not in registry and 3 not in registry

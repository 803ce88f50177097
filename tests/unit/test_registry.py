from __future__ import annotations

import pytest

from sqsjobs import BadMessageError, ConfigurationError, Job, Registry, default_registry


class RenamedJob(Job, name="registry.renamed", aliases=("registry.old-name", "OldClassName")):
    def handle(self) -> None:
        pass


def test_old_names_still_resolve_after_a_rename() -> None:
    assert default_registry.get("registry.old-name") is RenamedJob
    assert default_registry.get("OldClassName") is RenamedJob
    assert RenamedJob.job_name == "registry.renamed"


def test_an_unregistered_name_is_a_bad_message_never_an_import() -> None:
    with pytest.raises(BadMessageError, match="no job is registered") as caught:
        default_registry.get("os.system")
    assert caught.value.kind == "unknown_job"


def test_two_classes_cannot_claim_one_name() -> None:
    registry = Registry()
    registry.add(RenamedJob, "shared")
    with pytest.raises(ConfigurationError, match="used by both"):

        class Other(Job, abstract=True):
            pass

        registry.add(Other, "shared")


def test_tries_must_be_finite_and_positive() -> None:
    with pytest.raises(ConfigurationError, match="tries"):

        class Broken(Job, name="registry.broken"):
            tries = 0


def test_a_payload_field_may_not_hide_a_job_option_or_method() -> None:
    with pytest.raises(ConfigurationError, match="fail, queue"):

        class Shadowing(Job, name="registry.shadowing"):
            queue: str  # type: ignore[misc]
            fail: bool

            def handle(self) -> None:
                pass

"""Job name -> job class, so a message names a job and never an import path.

Names are chosen by the job (`class Send(Job, name="mail.send")`) or default
to the class name; `aliases` keep old names working after a rename, so messages
already in flight still find their class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .errors import BadMessageError, ConfigurationError

#: A registered job class. The registry sits below `sqsjobs.job` (which registers into it), so it
#: knows classes only as classes; callers that need `Job`'s methods know they have one.
JobClass = type[Any]


class Registry:
    """The set of job classes a process may run; nothing outside it is ever run."""

    def __init__(self) -> None:
        self._by_name: dict[str, JobClass] = {}
        self._canonical: dict[str, JobClass] = {}

    def add(self, cls: JobClass, name: str, aliases: tuple[str, ...] = ()) -> None:
        for key in (name, *aliases):
            existing = self._by_name.get(key)
            if existing is not None and _origin(existing) != _origin(cls):
                raise ConfigurationError(
                    f"job name {key!r} is used by both {_origin(existing)} and {_origin(cls)}; "
                    f"give one of them another name: class {cls.__name__}(Job, name='...')"
                )
            self._by_name[key] = cls
        self._canonical[name] = cls

    def get(self, name: str) -> JobClass:
        """The class registered under `name` or one of its aliases."""
        try:
            return self._by_name[name]
        except KeyError:
            raise BadMessageError(
                "unknown_job",
                f"no job is registered as {name!r}; import the module that defines it "
                "(SQSJOBS_APP) or add the old name to the class's aliases",
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[JobClass]:
        return iter(self._canonical.values())

    def names(self) -> list[str]:
        return sorted(self._canonical)


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


default_registry = Registry()

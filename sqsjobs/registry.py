"""Job name -> job class, so a message names a job and never an import path.

Names are chosen by the job (`class Send(Job, name="mail.send")`) or default
to the class name; `aliases` keep old names working after a rename, so messages
already in flight still find their class.

A name (and each alias) matches `NAME_PATTERN`: a letter, then up to 127 letters, digits or
`_ . : / -` — so a name is safe to print in a log line and to use as a metric dimension, and
nothing a message says reaches either unless it is a registered name (`known_name`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .errors import BadMessageError, ConfigurationError

#: A registered job class. The registry sits below `sqsjobs.job_class` (which registers into it), so it
#: knows classes only as classes; callers that need `Job`'s methods know they have one.
JobClass = type[Any]

#: What a job name (or alias) may be: 1-128 characters, a letter first, then letters, digits and `_.:/-`.
NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_.:/-]{0,127}"
_NAME = re.compile(NAME_PATTERN)

#: How logs and metrics name a job that no registered name matches (whatever its message said).
UNKNOWN = "unknown"


def check_name(cls: type, name: object) -> str:
    """`name` if it is a valid job name, else a ConfigurationError naming the class and the pattern."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigurationError(
            f"{cls.__module__}.{cls.__qualname__}: job name {name!r} does not match {NAME_PATTERN} "
            "(a letter, then up to 127 letters, digits or _ . : / -); choose another: "
            f"class {cls.__name__}(Job, name='...')"
        )
    return name


class Registry:
    """The set of job classes a process may run; nothing outside it is ever run."""

    def __init__(self) -> None:
        self._by_name: dict[str, JobClass] = {}
        self._canonical: dict[str, JobClass] = {}
        #: Bumped by every `add`: what is worked out from the whole set (the longest timeout) is kept until it moves.
        self.version = 0

    def add(self, cls: JobClass, name: str, aliases: tuple[str, ...] = ()) -> None:
        for key in (name, *aliases):
            check_name(cls, key)
        for key in (name, *aliases):
            existing = self._by_name.get(key)
            if existing is not None and _origin(existing) != _origin(cls):
                raise ConfigurationError(
                    f"job name {key!r} is used by both {_origin(existing)} and {_origin(cls)}; "
                    f"give one of them another name: class {cls.__name__}(Job, name='...')"
                )
            self._by_name[key] = cls
        self._canonical[name] = cls
        self.version += 1

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
        return isinstance(name, str) and name in self._by_name

    def known_name(self, name: object) -> str:
        """`name` when it is registered here (a name or an alias), else `unknown`: what a log line or a
        metric dimension may say about a job, so that no text from a message reaches either."""
        return name if isinstance(name, str) and name in self._by_name else UNKNOWN

    def __iter__(self) -> Iterator[JobClass]:
        return iter(self._canonical.values())

    def runnable(self) -> set[JobClass]:
        """Every class a message may name, by a name or an alias (an alias may outlive a re-registration)."""
        return set(self._by_name.values())

    def names(self) -> list[str]:
        return sorted(self._canonical)


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


default_registry = Registry()

"""Schedules declared in code, next to the jobs they dispatch (docs/scheduler.md).

    from sqsjobs import schedule
    from sqsjobs.cron import daily, every_minutes

    schedule(SendReport(kind="daily"), daily(at="02:30", tz="Europe/London"), without_overlapping=True)
    schedule(PruneTokens(), every_minutes(15), catch_up="skip")

A schedule is only a declaration: which job (with its payload), when (a `Cron`), and what a tick may
do when it comes. `sqsjobs.scheduling` decides which ticks are due and dispatches each once, whoever
runs it (a Lambda function every minute, `sqsjobs schedule run`, or `sqsjobs work --schedule`), so the
same module declares them for all three. Like job classes, schedules register when their module is
imported (SQSJOBS_APP), and are known by name: the name keys the schedule's run record and tick marks,
so renaming a schedule starts its record afresh.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from .cron import Cron, cron
from .errors import ConfigurationError
from .registry import NAME_PATTERN
from .timing import seconds

if TYPE_CHECKING:
    from .job_class import Job

#: What a schedule does with ticks that passed without a runner (its runners were down or paused):
#: "once" runs them as one run now, "skip" runs none, N runs each of the last N (oldest first).
CatchUp = Literal["once", "skip"] | int

_NAME = re.compile(NAME_PATTERN)
#: A tick not dispatched this long after its time was missed (its catch-up policy applies).
DEFAULT_GRACE_S = 300.0
#: How long a dispatched run that never started (a backlog, a paused queue) blocks `without_overlapping`.
DEFAULT_OVERLAP_EXPIRES_S = 86_400.0
#: The most missed ticks a catch-up may run; more would be a flood, not a catch-up.
MAX_CATCH_UP = 1_000


@dataclass(frozen=True, eq=False)
class Schedule:
    """One declared schedule. Build it with `schedule(...)`, which validates and registers it."""

    name: str
    job: Job
    cron: Cron
    queue: str | None = None
    without_overlapping: bool = False
    catch_up: CatchUp = "once"
    grace_s: float = DEFAULT_GRACE_S
    overlap_expires_s: float = DEFAULT_OVERLAP_EXPIRES_S
    #: Checked at each tick (Laravel's `when`); False skips that tick, recorded as skipped.
    condition: Callable[[], bool] | None = None

    @property
    def job_name(self) -> str:
        return type(self.job).job_name

    def describe(self) -> str:
        return self.cron.describe()

    def _identity(self) -> tuple[str, str, str, str, str | None]:
        payload = json.dumps(self.job.model_dump(mode="json"), sort_keys=True)
        return (self.job_name, payload, self.cron.expression, self.cron.tz, self.queue)


class Schedules:
    """The schedules a process knows, by name."""

    def __init__(self) -> None:
        self._by_name: dict[str, Schedule] = {}

    def add(self, item: Schedule) -> Schedule:
        existing = self._by_name.get(item.name)
        if existing is not None and existing._identity() != item._identity():
            raise ConfigurationError(
                f"two schedules are named {item.name!r} ({existing.job_name} {existing.describe()!r} and "
                f"{item.job_name} {item.describe()!r}); give one a name: schedule(..., name='...')"
            )
        self._by_name[item.name] = item
        return item

    def get(self, name: str) -> Schedule:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none (is SQSJOBS_APP set to the module that declares them?)"
            raise ConfigurationError(f"no schedule named {name!r}; known: {known}") from None

    def remove(self, name: str) -> None:
        self._by_name.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Schedule]:
        return iter(sorted(self._by_name.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._by_name)


default_schedules = Schedules()

#: Run ids are derived from the schedule and the tick, so every runner names a tick's job alike and
#: the run hook can tell a tick's job from a message that only claims to be one.
_RUNS = uuid.UUID("6f1d2c1e-5c1b-4a53-9a43-7c0f3f0a5e11")


def run_id(name: str, tick_ms: int) -> str:
    return str(uuid.uuid5(_RUNS, f"{name}\0{tick_ms}"))


def record_key(name: str) -> tuple[str, str]:
    return (f"schedule#{name}", "run")


def tick_key(name: str, tick_ms: int) -> tuple[str, str]:
    return (f"schedule#{name}", f"tick#{tick_ms}")


def missed_key(name: str, tick_ms: int) -> tuple[str, str]:
    return (f"schedule#{name}", f"missed#{tick_ms}")


def schedule(
    job: Job,
    when: Cron | str,
    *,
    name: str | None = None,
    queue: str | None = None,
    without_overlapping: bool = False,
    catch_up: CatchUp = "once",
    grace: float | timedelta = DEFAULT_GRACE_S,
    overlap_expires: float | timedelta = DEFAULT_OVERLAP_EXPIRES_S,
    condition: Callable[[], bool] | None = None,
    registry: Schedules | None = None,
) -> Schedule:
    """Declare that `job` is dispatched at every tick of `when` (a `Cron`, or a cron expression in UTC).

    `name` defaults to the job's name; two schedules of one job need names of their own.
    `without_overlapping`: a tick is skipped while the previous run is dispatched and not finished (a
    started run holds it until its timeout passes, since a live run is interrupted there; a run that
    never started holds it for `overlap_expires`). `catch_up` says what the ticks missed while no runner
    ran become; `grace` is how late a tick may still be dispatched as on time.
    """
    from .job_class import Job

    if isinstance(job, type):
        raise ConfigurationError(
            f"schedule() takes a job instance with its payload, not the class {job.__name__}: "
            f"schedule({job.__name__}(...), ...)"
        )
    if not isinstance(job, Job):
        raise ConfigurationError(f"schedule() takes a Job instance, not {type(job).__name__}")
    if "job_name" not in vars(type(job)):
        raise ConfigurationError(f"{type(job).__name__} is abstract; schedule a concrete job")
    plan = cron(when) if isinstance(when, str) else when
    if not isinstance(plan, Cron):
        raise ConfigurationError(
            f"schedule({type(job).__name__}(...), when=...) takes a Cron (sqsjobs.cron.daily(...), "
            "every_minutes(...), cron('...')) or a cron expression"
        )
    label = name if name is not None else type(job).job_name
    if not isinstance(label, str) or _NAME.fullmatch(label) is None:
        raise ConfigurationError(
            f"schedule name {label!r} does not match {NAME_PATTERN} (a letter, then up to 127 letters, digits or "
            "_ . : / -)"
        )
    if not (catch_up in ("once", "skip") or (isinstance(catch_up, int) and 1 <= catch_up <= MAX_CATCH_UP)):
        raise ConfigurationError(
            f"schedule {label!r}: catch_up={catch_up!r}; use 'once', 'skip' or a number of missed ticks "
            f"from 1 to {MAX_CATCH_UP}"
        )
    grace_s, expires_s = seconds(grace), seconds(overlap_expires)
    if not 60 <= grace_s <= 86_400:
        # Runners pass once a minute, at any second of it: a tick must be allowed that late.
        raise ConfigurationError(f"schedule {label!r}: grace={grace!r}; give 60 seconds to 1 day")
    if not 0 < expires_s <= 14 * 86_400:
        raise ConfigurationError(f"schedule {label!r}: overlap_expires={overlap_expires!r}; give 1 second to 14 days")
    try:
        job.model_dump_json()
    except Exception as exc:  # what cannot be JSON cannot be dispatched at any tick: say so now
        raise ConfigurationError(f"schedule {label!r}: the payload of {type(job).job_name} is not JSON: {exc}") from exc
    item = Schedule(label, job, plan, queue, without_overlapping, catch_up, grace_s, expires_s, condition)
    return (registry if registry is not None else default_schedules).add(item)


def scheduled_for(job: Job) -> datetime | None:
    """The tick (UTC) the scheduler dispatched `job`'s message for, kept through retries and redrives;
    None for a job the scheduler did not send. A nightly report reads its day from this, not from when
    it runs, so a late run or a retry after midnight builds the night it was meant for."""
    envelope = job._ctx.envelope if job._ctx is not None else None
    scheduled = envelope.extra.get("schedule") if envelope is not None else None
    tick = scheduled.get("tick") if isinstance(scheduled, dict) else None
    return datetime.fromtimestamp(tick / 1000, UTC) if isinstance(tick, int) else None

"""Cron schedules as time arithmetic: the UTC instants a 5-field expression fires at, in a named zone.

The scheduler stores each tick as an instant and dispatches it once, so what it needs from here is a
strictly increasing, duplicate-free sequence of instants, even where daylight saving makes a wall-clock
rule such as "02:30 every day" ambiguous or impossible. These are its promises:

* Ticks are wall-clock times in the schedule's zone (`tz`, an IANA name), turned into instants.
* A wall time that does not exist (the spring-forward gap) fires once, at the first instant after the
  gap: 02:30 on the US spring-forward day in America/New_York fires at 03:00 EDT (07:00 UTC). All the
  ticks in one gap, and a tick at the gap's end, collapse into that single instant.
* A wall time that happens twice (the fall-back fold) fires at its first occurrence only, so a daily
  01:30 job runs once. When the hour field covers all 24 hours the schedule is a real-time cadence
  instead, and it fires at both occurrences: "every 15 minutes" keeps ticking through the repeated hour.
* Instants go in and come out as aware datetimes (UTC out); seconds in a schedule do not exist.

The grammar is Vixie cron's: `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n`, comma lists,
JAN-DEC and SUN-SAT (0 or 7 is Sunday), and the macros @yearly, @annually, @monthly, @weekly, @daily,
@midnight, @hourly. A step counts from the start of its range, so `*/7` in the minute field fires at :56
and again at :00: the cadence restarts every hour. When day-of-month and day-of-week are both restricted
a day matches either; a field counts as unrestricted only when it is exactly `*` (Vixie also treats `*/2`
that way, which silently drops the step). Quartz syntax (seconds, `?`, `L`, `W`, `#`) is refused, and so
is an expression that can never fire, such as `0 0 30 2 *`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .cron_fields import DAY_TITLES, DAYS, MINUTE, MONTHS, Spec, compile_expression
from .errors import ConfigurationError


def _zone(tz: str) -> ZoneInfo:
    error = ConfigurationError(
        f"unknown time zone {tz!r}: tz takes an IANA zone name such as 'UTC' or 'Europe/London' "
        "(if no name works, the tz database is missing: install the tzdata package)"
    )
    if not isinstance(tz, str) or not tz:
        raise error
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise error from exc


def _utc(instant: datetime, name: str) -> datetime:
    if instant.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (e.g. datetime.now(UTC)), got {instant!r}")
    return instant.astimezone(UTC)


@dataclass(frozen=True)
class Cron:
    """A schedule: a normalised 5-field expression and the zone its wall-clock times are read in."""

    expression: str
    tz: str = "UTC"
    _spec: Spec = field(init=False, repr=False, compare=False)
    _tzinfo: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str):
            raise ConfigurationError(f"a cron expression must be a string, got {self.expression!r}")
        normalised, spec = compile_expression(self.expression)
        object.__setattr__(self, "expression", normalised)
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_tzinfo", _zone(self.tz))

    @classmethod
    def parse(cls, expression: str, tz: str = "UTC") -> Cron:
        return cls(expression, tz)

    def matches(self, local: datetime) -> bool:
        """Whether the wall-clock fields match; an aware time is first read in this zone.

        This is the field test only: a gap time matches although it fires at the gap's end, and a folded
        time matches on both occurrences whatever the fold rule says. The instants are `next_after`'s job.
        """
        if local.tzinfo is not None:
            local = local.astimezone(self._tzinfo)
        return self._spec.matches(local)

    def next_after(self, instant: datetime) -> datetime:
        """The first tick strictly after `instant`."""
        return next(self._ticks_after(_utc(instant, "instant")))

    def ticks_between(self, start: datetime, end: datetime, limit: int | None = None) -> list[datetime]:
        """Ticks in (start, end], ascending; with `limit`, the earliest `limit` of them.

        The earliest, so a scheduler catching up after downtime runs missed ticks in order and can ask
        again from the last one it got.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        end = _utc(end, "end")
        ticks: list[datetime] = []
        if limit == 0:
            return ticks
        for tick in self._ticks_after(_utc(start, "start")):
            if tick > end:
                break
            ticks.append(tick)
            if len(ticks) == limit:
                break
        return ticks

    def previous_at_or_before(self, instant: datetime) -> datetime | None:
        """The latest tick at or before `instant`, or None if there is none in the 366 days before it.

        The mirror of the forward scan: walls reduced to their last occurrence are monotonic, and inside the
        second pass of a fold the walls after the current one have already fired once, so the scan starts
        a fold's width later.
        """
        u = _utc(instant, "instant")
        oldest = u - timedelta(days=366)
        wall = self._start_wall(u, forward=False)
        floor = oldest.astimezone(self._tzinfo).replace(tzinfo=None) - timedelta(days=1)
        best: datetime | None = None
        while (found := self._spec.previous_wall(wall, floor)) is not None:
            emitted = self._instants(found)
            for tick in emitted:
                if tick <= u and (best is None or tick > best):
                    best = tick
            if emitted[-1] <= u:
                break
            wall = found - MINUTE
        return best if best is not None and best >= oldest else None

    def describe(self) -> str:
        """Short text for logs and the CLI; anything without a plain-words form is shown as the expression."""
        s, zone = self._spec, f" ({self.tz})"
        all_year = len(s.months) == 12
        every_day = all_year and s.dom_any and s.dow_any
        if every_day and len(s.hours) == 24 and (len(s.minutes) == 60 or _even_steps(s.minutes, 60)):
            return "every minute" if len(s.minutes) == 60 else f"every {s.minutes[1]} minutes"
        if len(s.minutes) == 1 and every_day and (len(s.hours) == 24 or _even_steps(s.hours, 24)):
            every = "hourly" if len(s.hours) == 24 else f"every {s.hours[1]} hours"
            return f"{every} at :{s.minutes[0]:02d}{zone}"
        if len(s.minutes) == 1 and len(s.hours) == 1:
            at = f"at {s.hours[0]:02d}:{s.minutes[0]:02d}{zone}"
            day, doms, dows = next(iter(s.doms)), len(s.doms), sorted(s.dows)
            if every_day:
                return f"daily {at}"
            if all_year and s.dom_any and dows in ([1, 2, 3, 4, 5], [0, 6]):
                return f"{'weekends' if dows == [0, 6] else 'weekdays'} {at}"
            if all_year and s.dom_any and len(dows) == 1:
                return f"weekly on {DAY_TITLES[dows[0]]} {at}"
            if all_year and s.dow_any and doms == 1:
                return f"monthly on day {day} {at}"
            if len(s.months) == 1 and s.dow_any and doms == 1:
                return f"yearly on {day} {MONTHS[s.months[0] - 1].title()} {at}"
        return f"{self.expression}{zone}"

    def _ticks_after(self, u: datetime) -> Iterator[datetime]:
        """Ticks after `u` in order, skipping over wall-clock fields rather than stepping minute by minute.

        Walls map to instants monotonically once each is reduced to its first occurrence (gap walls to the
        gap's end), so no later wall can fire before the current wall's first occurrence: every tick up to
        it is final. Second occurrences met on the way wait in `pending` until then. Inside the first pass
        of a fold, the repeated walls before the current one still have their second occurrence to come, so
        the scan starts a fold's width earlier.
        """
        wall = self._start_wall(u, forward=True)
        last, pending = u, list[datetime]()
        while (found := self._spec.next_wall(wall)) is not None:
            emitted = self._instants(found)
            pending = sorted({*pending, *(tick for tick in emitted if tick > last)})
            while pending and pending[0] <= emitted[0]:
                last = pending.pop(0)
                yield last
            wall = found + MINUTE
        raise ConfigurationError(f"cron expression {self.expression!r} never fires")

    def _start_wall(self, u: datetime, *, forward: bool) -> datetime:
        """`u`'s wall clock, widened by the fold's width toward the walls that fire on the other side of `u`."""
        local = u.astimezone(self._tzinfo)
        wall = local.replace(tzinfo=None, fold=0)
        width = local.replace(fold=1).astimezone(UTC) - local.replace(fold=0).astimezone(UTC)
        if local.fold == (0 if forward else 1):
            wall = wall - width if forward else wall + width
        return wall.replace(second=0, microsecond=0)

    def _instants(self, wall: datetime) -> tuple[datetime, ...]:
        """The instants one matching wall time fires at: one, or two in a fold when every hour fires."""
        first = wall.replace(tzinfo=self._tzinfo, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self._tzinfo, fold=1).astimezone(UTC)
        if first == second:
            return (first,)
        if first < second:
            return (first, second) if len(self._spec.hours) == 24 else (first,)
        # In a gap, fold=1 reads the wall with the later offset (too early) and fold=0 with the earlier one
        # (too late); the transition lies between, at whole seconds.
        early, late = int(second.timestamp()), int(first.timestamp())
        while late - early > 1:
            middle = (early + late) // 2
            if datetime.fromtimestamp(middle, self._tzinfo).replace(tzinfo=None) >= wall:
                late = middle
            else:
                early = middle
        return (datetime.fromtimestamp(late, UTC),)


def _even_steps(values: tuple[int, ...], size: int) -> bool:
    """Whether `values` is a cadence that really is regular: a step from 0 that divides the field."""
    return len(values) > 1 and size % values[1] == 0 and values == tuple(range(0, size, values[1]))


def cron(expression: str, *, tz: str = "UTC") -> Cron:
    return Cron.parse(expression, tz)


def _whole(value: object, name: str, lo: int, hi: int, call: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigurationError(f"{call}({name}={value!r}): {name} takes a whole number from {lo} to {hi}")
    return value


def _clock(at: str, call: str) -> str:
    """`at` as the minute and hour fields."""
    match = re.fullmatch(r"([01][0-9]|2[0-3]):([0-5][0-9])", at) if isinstance(at, str) else None
    if match is None:
        raise ConfigurationError(f"{call}(at={at!r}): at takes 'HH:MM' on a 24-hour clock, from 00:00 to 23:59")
    return f"{int(match[2])} {int(match[1])}"


def every_minute(*, tz: str = "UTC") -> Cron:
    return Cron("* * * * *", tz)


def every_minutes(n: int, *, tz: str = "UTC") -> Cron:
    """Every `n` minutes as cron counts them: from :00 each hour, so 7 fires at :56 and then at :00."""
    return Cron(f"*/{_whole(n, 'n', 1, 59, 'every_minutes')} * * * *", tz)


def hourly(at_minute: int = 0, *, tz: str = "UTC") -> Cron:
    return Cron(f"{_whole(at_minute, 'at_minute', 0, 59, 'hourly')} * * * *", tz)


def every_hours(n: int, at_minute: int = 0, *, tz: str = "UTC") -> Cron:
    """Every `n` hours from midnight, so the cadence restarts each day when `n` does not divide 24."""
    minute = _whole(at_minute, "at_minute", 0, 59, "every_hours")
    return Cron(f"{minute} */{_whole(n, 'n', 1, 23, 'every_hours')} * * *", tz)


def daily(at: str = "00:00", *, tz: str = "UTC") -> Cron:
    return Cron(f"{_clock(at, 'daily')} * * *", tz)


def weekdays(at: str = "00:00", *, tz: str = "UTC") -> Cron:
    return Cron(f"{_clock(at, 'weekdays')} * * 1-5", tz)


def weekends(at: str = "00:00", *, tz: str = "UTC") -> Cron:
    return Cron(f"{_clock(at, 'weekends')} * * 0,6", tz)


def weekly(day: str = "mon", at: str = "00:00", *, tz: str = "UTC") -> Cron:
    names = {name: i for i, name in enumerate(DAYS)} | {t.lower(): i for i, t in enumerate(DAY_TITLES)}
    number = names.get(day.strip().lower()) if isinstance(day, str) else None
    if number is None:
        raise ConfigurationError(f"weekly(day={day!r}): day takes a day name such as 'mon' or 'Monday'")
    return Cron(f"{_clock(at, 'weekly')} * * {number}", tz)


def monthly(on: int = 1, at: str = "00:00", *, tz: str = "UTC") -> Cron:
    """On day `on` of each month; a month without that day (31 in April, 30 in February) has no tick."""
    day = _whole(on, "on", 1, 31, "monthly")
    return Cron(f"{_clock(at, 'monthly')} {day} * *", tz)

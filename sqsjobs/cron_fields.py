"""The cron grammar: an expression's five fields as the sets of values they allow (sqsjobs.cron does
the time arithmetic). Vixie cron's syntax; Quartz's is refused with its own message, and so is an
expression that can never fire, so a schedule's mistake surfaces when its module is imported.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from .errors import ConfigurationError

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7))
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES = {3: {name: i + 1 for i, name in enumerate(MONTHS)}, 4: {name: i for i, name in enumerate(DAYS)}}
_NAME_HINTS = {3: " or JAN-DEC", 4: " or SUN-SAT (0 and 7 are both Sunday)"}
DAY_TITLES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0"}
_MACROS |= {"@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_LONGEST_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_QUARTZ = re.compile(r"\d*L|\d+W|LW|L-\d+", re.IGNORECASE)
_NUMBER = re.compile(r"[0-9]+")
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
# Feb 29 can be 8 years from the last one (2096 -> 2104), the longest wait of any expression that fires.
HORIZON_YEARS = 9


def midnight(x: datetime) -> datetime:
    return x.replace(hour=0, minute=0)


@dataclass(frozen=True)
class Spec:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    doms: frozenset[int]
    months: tuple[int, ...]
    dows: frozenset[int]
    dom_any: bool
    dow_any: bool

    def day_matches(self, year: int, month: int, day: int) -> bool:
        dom_ok = day in self.doms
        dow_ok = (calendar.weekday(year, month, day) + 1) % 7 in self.dows
        return (dom_ok and dow_ok) if self.dom_any or self.dow_any else (dom_ok or dow_ok)

    def matches(self, wall: datetime) -> bool:
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and wall.month in self.months
            and self.day_matches(wall.year, wall.month, wall.day)
        )

    def next_wall(self, x: datetime) -> datetime | None:
        """The first matching wall time at or after `x`, skipping whole months, days and hours at a time."""
        last_year = x.year + HORIZON_YEARS
        while x.year <= last_year:
            if x.month not in self.months:
                later = [m for m in self.months if m > x.month]
                x = datetime(x.year, later[0], 1) if later else datetime(x.year + 1, self.months[0], 1)
            elif not self.day_matches(x.year, x.month, x.day):
                x = midnight(x) + DAY
            elif x.hour not in self.hours:
                later = [h for h in self.hours if h > x.hour]
                x = x.replace(hour=later[0], minute=0) if later else midnight(x) + DAY
            elif x.minute not in self.minutes:
                later = [m for m in self.minutes if m > x.minute]
                x = x.replace(minute=later[0]) if later else x.replace(minute=0) + timedelta(hours=1)
            else:
                return x
        return None

    def previous_wall(self, x: datetime, floor: datetime) -> datetime | None:
        """The last matching wall time at or before `x`, or None once the search passes `floor`."""
        while x >= floor:
            if x.month not in self.months:
                earlier = [m for m in self.months if m < x.month]
                year, month = (x.year, earlier[-1]) if earlier else (x.year - 1, self.months[-1])
                x = datetime(year, month, calendar.monthrange(year, month)[1], 23, 59)
            elif not self.day_matches(x.year, x.month, x.day):
                x = midnight(x) - MINUTE
            elif x.hour not in self.hours:
                earlier = [h for h in self.hours if h < x.hour]
                x = x.replace(hour=earlier[-1], minute=59) if earlier else midnight(x) - MINUTE
            elif x.minute not in self.minutes:
                earlier = [m for m in self.minutes if m < x.minute]
                x = x.replace(minute=earlier[-1]) if earlier else x.replace(minute=0) - MINUTE
            else:
                return x
        return None


def _parse_field(text: str, index: int, expression: str) -> set[int]:
    name, lo, hi = _FIELDS[index]
    names = _NAMES.get(index, {})
    accepted = (
        f"{name} accepts {lo}-{hi}{_NAME_HINTS.get(index, '')}, '*', ranges a-b, steps */n, a/n or a-b/n, "
        "and comma lists of those"
    )

    def bad(why: str) -> ConfigurationError:
        return ConfigurationError(f"cron expression {expression!r}: {name} field {text!r} {why}; {accepted}")

    def value(token: str) -> int:
        if _NUMBER.fullmatch(token):
            if not lo <= int(token) <= hi:
                raise bad(f"has {token}, which is out of range")
            return int(token)
        if token.lower() in names:
            return names[token.lower()]
        if _QUARTZ.fullmatch(token):
            raise bad(quartz)
        raise bad(f"has {token!r}, which is not a {'number or name' if names else 'number'}")

    quartz = "uses Quartz syntax ('?', 'L', 'W', '#'), which standard cron does not have"
    if "#" in text or "?" in text:
        raise bad(quartz)
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        if not base:
            raise bad("has an empty item")
        step = 1
        if slash:
            if not _NUMBER.fullmatch(step_text) or int(step_text) == 0:
                raise bad(f"has step {step_text!r}; a step is a whole number from 1")
            step = int(step_text)
        if base == "*":
            start, stop = lo, hi
        elif "-" in base:
            first, _, last = base.partition("-")
            start, stop = value(first), value(last)
            if start > stop:
                raise bad(f"has the reversed range {base!r}")
        else:
            start = value(base)
            stop = hi if slash else start
        values.update(range(start, stop + 1, step))
    return {v % 7 for v in values} if index == 4 else values


@lru_cache(maxsize=256)
def compile_expression(expression: str) -> tuple[str, Spec]:
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in _MACROS:
            raise ConfigurationError(f"cron expression {expression!r}: unknown macro; use one of {', '.join(_MACROS)}")
        text = _MACROS[text.lower()]
    fields = text.split()
    if len(fields) != 5:
        quartz = ": seconds and years are Quartz syntax, not supported here" if len(fields) in (6, 7) else ""
        raise ConfigurationError(
            f"cron expression {expression!r} has {len(fields)} fields{quartz}; use 5 fields (minute hour "
            "day-of-month month day-of-week) or a macro such as @daily"
        )
    sets = [_parse_field(text, i, expression) for i, text in enumerate(fields)]
    spec = Spec(
        minutes=tuple(sorted(sets[0])),
        hours=tuple(sorted(sets[1])),
        doms=frozenset(sets[2]),
        months=tuple(sorted(sets[3])),
        dows=frozenset(sets[4]),
        dom_any=fields[2] == "*",
        dow_any=fields[4] == "*",
    )
    if spec.dow_any and not any(d <= _LONGEST_MONTH[m] for m in spec.months for d in spec.doms):
        raise ConfigurationError(
            f"cron expression {expression!r} never fires: no month it allows has the day-of-month it asks for"
        )
    return " ".join(fields).lower(), spec

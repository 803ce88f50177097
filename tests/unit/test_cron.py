from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqsjobs.cron import (
    Cron,
    cron,
    daily,
    every_hours,
    every_minute,
    every_minutes,
    hourly,
    monthly,
    weekdays,
    weekends,
    weekly,
)
from sqsjobs.errors import ConfigurationError

NY, LONDON, LORD_HOWE = "America/New_York", "Europe/London", "Australia/Lord_Howe"
MINUTE = timedelta(minutes=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def ticks(c: Cron, start: datetime, count: int) -> list[datetime]:
    return c.ticks_between(start, start + timedelta(days=3000), limit=count)


def values(index: int, text: str) -> set[int]:
    """The values one field matches, read back through `matches` with every other field `*`."""
    fields = ["*"] * 5
    fields[index] = text
    c = Cron.parse(" ".join(fields))
    if index == 0:
        return {m for m in range(60) if c.matches(datetime(2024, 1, 1, 0, m))}
    if index == 1:
        return {h for h in range(24) if c.matches(datetime(2024, 1, 1, h))}
    if index == 2:
        return {d for d in range(1, 32) if c.matches(datetime(2024, 1, d))}
    if index == 3:
        return {m for m in range(1, 13) if c.matches(datetime(2024, m, 1))}
    return {d for d in range(7) if c.matches(datetime(2024, 1, 7 + d))}  # 2024-01-07 is a Sunday


# --- grammar --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "text", "expected"),
    [
        (0, "*", set(range(60))),
        (0, "7", {7}),
        (0, "10-13", {10, 11, 12, 13}),
        (0, "*/15", {0, 15, 30, 45}),
        (0, "10-30/10", {10, 20, 30}),
        (0, "50/4", {50, 54, 58}),
        (0, "1,5-6,*/30", {0, 1, 5, 6, 30}),
        (1, "*/7", {0, 7, 14, 21}),
        (1, "23", {23}),
        (2, "1,15,31", {1, 15, 31}),
        (2, "28-31/2", {28, 30}),
        (3, "jan,JUL,Dec", {1, 7, 12}),
        (3, "feb-apr", {2, 3, 4}),
        (3, "*/4", {1, 5, 9}),
        (4, "mon-fri", {1, 2, 3, 4, 5}),
        (4, "SAT,sun", {0, 6}),
        (4, "7", {0}),
        (4, "0", {0}),
        (4, "5-7", {5, 6, 0}),
        (4, "*/2", {0, 2, 4, 6}),
    ],
)
def test_each_field_form_matches_the_values_cron_gives_it(index: int, text: str, expected: set[int]) -> None:
    assert values(index, text) == expected


@pytest.mark.parametrize(
    ("macro", "expression"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@MIDNIGHT", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_macros_expand_to_their_five_fields(macro: str, expression: str) -> None:
    assert Cron.parse(macro).expression == expression


def test_parsing_normalises_the_text_so_equal_schedules_compare_equal() -> None:
    c = Cron.parse("  */15   *  * * MON-Fri ", tz=NY)
    assert c == Cron("*/15 * * * mon-fri", NY) == cron("*/15 * * * mon-fri", tz=NY)
    assert c.expression == "*/15 * * * mon-fri"
    assert c != Cron("*/15 * * * mon-fri")
    assert hash(c) == hash(Cron("*/15 * * * mon-fri", NY))


@pytest.mark.parametrize(
    ("expression", "fragments"),
    [
        ("60 * * * *", ["minute field '60'", "out of range", "0-59"]),
        ("* 24 * * *", ["hour field '24'", "0-23"]),
        ("* * 0 * *", ["day-of-month field '0'", "1-31"]),
        ("* * 32 * *", ["day-of-month field '32'"]),
        ("* * * 13 *", ["month field '13'", "JAN-DEC"]),
        ("* * * * 8", ["day-of-week field '8'", "SUN-SAT"]),
        ("* * * foo *", ["month field 'foo'", "not a number or name"]),
        ("x * * * *", ["minute field 'x'", "not a number"]),
        ("-5 * * * *", ["minute field '-5'"]),
        ("30-10 * * * *", ["reversed range '30-10'"]),
        ("* * * * fri-mon", ["day-of-week", "reversed range"]),
        ("*/0 * * * *", ["step '0'"]),
        ("*/x * * * *", ["step 'x'"]),
        ("1,,2 * * * *", ["empty item"]),
        ("1, * * * *", ["empty item"]),
        ("0 0 * * * *", ["6 fields", "seconds", "Quartz", "5 fields"]),
        ("0 0 12 * * ? 2030", ["7 fields", "Quartz"]),
        ("* * * *", ["4 fields", "use 5 fields", "@daily"]),
        ("", ["0 fields"]),
        ("0 12 ? * mon", ["day-of-month field '?'", "Quartz"]),
        ("0 12 L * *", ["day-of-month field 'L'", "Quartz"]),
        ("0 12 15W * *", ["Quartz"]),
        ("0 12 LW * *", ["Quartz"]),
        ("0 12 * * 5L", ["day-of-week field '5L'", "Quartz"]),
        ("0 12 * * 5#3", ["day-of-week field '5#3'", "Quartz"]),
        ("@reboot", ["unknown macro", "@daily"]),
        ("0 0 30 2 *", ["never fires"]),
        ("0 0 31 4,6,9,11 *", ["never fires"]),
    ],
)
def test_bad_expressions_are_refused_naming_the_field_and_what_it_accepts(
    expression: str, fragments: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Cron.parse(expression)
    assert f"{expression!r}" in str(caught.value)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_a_day_that_only_some_years_or_months_have_is_not_refused() -> None:
    assert Cron.parse("0 0 29 2 *").next_after(utc(2096, 3, 1)) == utc(2104, 2, 29)  # 2100 is not a leap year
    assert Cron.parse("0 0 30 2 1").next_after(utc(2024, 1, 1)) == utc(2024, 2, 5)  # the Monday half of the OR
    assert Cron.parse("0 0 31 1-4 *").ticks_between(utc(2024, 1, 1), utc(2024, 12, 1)) == [
        utc(2024, 1, 31),
        utc(2024, 3, 31),
    ]


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "/etc/localtime", "../zoneinfo/UTC", "Europe"])
def test_an_unknown_zone_is_refused(tz: str) -> None:
    with pytest.raises(ConfigurationError, match=r"time zone.*IANA"):
        Cron.parse("* * * * *", tz=tz)


def test_a_non_string_expression_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must be a string"):
        Cron(None)  # type: ignore[arg-type]


# --- next_after in one zone -----------------------------------------------------------------------


def test_next_after_is_strictly_after_and_ignores_seconds() -> None:
    c = every_minute()
    assert c.next_after(utc(2024, 5, 1, 10, 0)) == utc(2024, 5, 1, 10, 1)
    assert c.next_after(utc(2024, 5, 1, 10, 0, 59, 999_999)) == utc(2024, 5, 1, 10, 1)
    assert c.next_after(utc(2024, 5, 1, 10, 0, 0, 1)) == utc(2024, 5, 1, 10, 1)


def test_next_after_takes_any_aware_instant_and_answers_in_utc() -> None:
    paris = datetime(2024, 5, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))  # 10:00 UTC
    tick = hourly(30).next_after(paris)
    assert tick == utc(2024, 5, 1, 10, 30)
    assert tick.tzinfo is UTC


def test_a_naive_instant_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        every_minute().next_after(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        every_minute().ticks_between(utc(2024, 1, 1), datetime(2024, 1, 2))


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 0 1 * *", utc(2024, 1, 31, 23, 59), [utc(2024, 2, 1), utc(2024, 3, 1)]),
        ("59 23 31 12 *", utc(2024, 12, 31, 23, 59), [utc(2025, 12, 31, 23, 59)]),
        ("0 12 31 * *", utc(2024, 4, 1), [utc(2024, 5, 31, 12), utc(2024, 7, 31, 12), utc(2024, 8, 31, 12)]),
        ("0 0 29 2 *", utc(2024, 2, 29), [utc(2028, 2, 29), utc(2032, 2, 29)]),
        ("30 6 * 2 *", utc(2023, 2, 28, 7), [utc(2024, 2, 1, 6, 30)]),
        ("0 0 * * sun", utc(2024, 12, 29), [utc(2025, 1, 5)]),
        ("*/20 23 31 dec *", utc(2024, 12, 31, 23, 40), [utc(2025, 12, 31, 23), utc(2025, 12, 31, 23, 20)]),
        ("@yearly", utc(2024, 6, 1), [utc(2025, 1, 1), utc(2026, 1, 1)]),
        ("0 9 * jan,jul mon", utc(2024, 1, 30), [utc(2024, 7, 1, 9), utc(2024, 7, 8, 9)]),
    ],
)
def test_next_after_crosses_month_and_year_ends_and_leap_days(
    expression: str, after: datetime, expected: list[datetime]
) -> None:
    assert ticks(Cron.parse(expression), after, len(expected)) == expected


def test_far_apart_ticks_are_found_by_skipping_fields_not_walking_minutes() -> None:
    began = time.perf_counter()
    assert Cron.parse("0 0 29 2 *").next_after(utc(2096, 2, 29, 0, 1)) == utc(2104, 2, 29)
    assert Cron.parse("0 0 29 2 *").previous_at_or_before(utc(2097, 2, 28)) == utc(2096, 2, 29)
    assert time.perf_counter() - began < 0.2  # walking eight years minute by minute takes seconds


def test_day_of_month_and_day_of_week_both_restricted_means_either() -> None:
    # September 2024: Fridays are 6, 13, 20, 27; the 13th is also a Friday.
    either = Cron.parse("0 0 13 * fri")
    assert [t.day for t in ticks(either, utc(2024, 9, 1), 5)] == [6, 13, 20, 27, 4]
    assert [t.day for t in ticks(Cron.parse("0 0 13 * *"), utc(2024, 9, 1), 2)] == [13, 13]
    assert [t.day for t in ticks(Cron.parse("0 0 * * fri"), utc(2024, 9, 1), 2)] == [6, 13]
    # Only a bare `*` leaves a field out of the OR: `*/10` is a restriction (days 1, 11, 21, 31), so Mondays join it.
    stepped = Cron.parse("0 0 */10 * mon")
    assert [t.day for t in ticks(stepped, utc(2024, 9, 30, 1), 6)] == [1, 7, 11, 14, 21, 28]


def test_matches_reads_the_wall_clock_in_the_schedules_zone() -> None:
    c = daily("09:30", tz=NY)
    assert c.matches(datetime(2024, 7, 1, 9, 30, 45))
    assert not c.matches(datetime(2024, 7, 1, 9, 31))
    assert c.matches(utc(2024, 7, 1, 13, 30))  # 09:30 EDT
    assert not c.matches(utc(2024, 7, 1, 9, 30))


# --- daylight saving ------------------------------------------------------------------------------


def test_a_daily_time_in_the_spring_gap_fires_once_at_the_end_of_the_gap() -> None:
    # New York, 2024-03-10: 02:00 EST jumps to 03:00 EDT at 07:00 UTC.
    assert ticks(daily("02:30", tz=NY), utc(2024, 3, 9, 12), 3) == [
        utc(2024, 3, 10, 7),  # 03:00 EDT
        utc(2024, 3, 11, 6, 30),
        utc(2024, 3, 12, 6, 30),
    ]
    # London, 2024-03-31: 01:00 GMT jumps to 02:00 BST at 01:00 UTC.
    assert ticks(daily("01:30", tz=LONDON), utc(2024, 3, 30, 12), 2) == [utc(2024, 3, 31, 1), utc(2024, 4, 1, 0, 30)]


def test_every_gap_time_collapses_into_one_tick() -> None:
    quarter = every_minutes(15, tz=NY).ticks_between(utc(2024, 3, 10, 6, 20), utc(2024, 3, 10, 7, 40))
    assert quarter == [
        utc(2024, 3, 10, 6, 30),
        utc(2024, 3, 10, 6, 45),
        utc(2024, 3, 10, 7),
        utc(2024, 3, 10, 7, 15),
        utc(2024, 3, 10, 7, 30),
    ]
    gap_hour = Cron.parse("0,15,30,45 2,3 * * *", tz=NY).ticks_between(utc(2024, 3, 10), utc(2024, 3, 10, 8))
    assert gap_hour == [utc(2024, 3, 10, 7), utc(2024, 3, 10, 7, 15), utc(2024, 3, 10, 7, 30), utc(2024, 3, 10, 7, 45)]


def test_a_daily_time_in_the_fall_back_fold_fires_at_its_first_occurrence_only() -> None:
    # New York, 2024-11-03: 02:00 EDT falls back to 01:00 EST at 06:00 UTC, so 01:30 happens twice.
    assert ticks(daily("01:30", tz=NY), utc(2024, 11, 2, 12), 2) == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]
    # London, 2024-10-27: 02:00 BST falls back to 01:00 GMT at 01:00 UTC.
    assert ticks(daily("01:30", tz=LONDON), utc(2024, 10, 26, 12), 2) == [
        utc(2024, 10, 27, 0, 30),
        utc(2024, 10, 28, 1, 30),
    ]
    # Asked from inside the repeated hour, the first occurrence is already past: no second run that day.
    assert daily("01:30", tz=NY).next_after(utc(2024, 11, 3, 6, 10)) == utc(2024, 11, 4, 6, 30)


def test_schedules_firing_every_hour_keep_real_time_cadence_through_the_fold() -> None:
    assert hourly(30, tz=NY).ticks_between(utc(2024, 11, 3, 4), utc(2024, 11, 3, 8)) == [
        utc(2024, 11, 3, 4, 30),  # 00:30 EDT
        utc(2024, 11, 3, 5, 30),  # 01:30 EDT
        utc(2024, 11, 3, 6, 30),  # 01:30 EST
        utc(2024, 11, 3, 7, 30),  # 02:30 EST
    ]
    start = utc(2024, 10, 26, 23, 50)
    quarter = every_minutes(15, tz=LONDON).ticks_between(start, utc(2024, 10, 27, 2, 10))
    assert quarter == [utc(2024, 10, 27) + n * timedelta(minutes=15) for n in range(9)]
    # From inside the first pass, the second pass of walls already seen is still ahead.
    assert hourly(30, tz=NY).next_after(utc(2024, 11, 3, 5, 40)) == utc(2024, 11, 3, 6, 30)


@pytest.mark.parametrize("zone", [NY, LONDON, LORD_HOWE])
def test_a_quarter_hour_schedule_ticks_every_fifteen_real_minutes_across_each_change(zone: str) -> None:
    for change in transitions(zone, 2024):
        got = every_minutes(15, tz=zone).ticks_between(change - timedelta(hours=3), change + timedelta(hours=3))
        assert got == [change - timedelta(hours=3) + n * timedelta(minutes=15) for n in range(1, 25)]


def test_lord_howe_shifts_by_half_an_hour() -> None:
    # 2024-04-07: 02:00 +11:00 falls back to 01:30 +10:30 at 15:00 UTC; 2024-10-06: 02:00 +10:30 jumps to 02:30 +11:00.
    assert transitions(LORD_HOWE, 2024) == [utc(2024, 4, 6, 15), utc(2024, 10, 5, 15, 30)]
    assert ticks(daily("01:45", tz=LORD_HOWE), utc(2024, 4, 6), 2) == [utc(2024, 4, 6, 14, 45), utc(2024, 4, 7, 15, 15)]
    assert ticks(daily("02:15", tz=LORD_HOWE), utc(2024, 10, 5), 2) == [
        utc(2024, 10, 5, 15, 30),
        utc(2024, 10, 6, 15, 15),
    ]


# --- ticks_between and previous_at_or_before -----------------------------------------------------


def test_ticks_between_is_start_exclusive_end_inclusive() -> None:
    c = hourly()
    assert c.ticks_between(utc(2024, 1, 1, 0), utc(2024, 1, 1, 3)) == [utc(2024, 1, 1, h) for h in (1, 2, 3)]
    assert c.ticks_between(utc(2024, 1, 1, 3), utc(2024, 1, 1, 3)) == []
    assert c.ticks_between(utc(2024, 1, 1, 5), utc(2024, 1, 1, 3)) == []


def test_ticks_between_with_a_limit_gives_the_earliest_ones() -> None:
    c = every_minutes(10)
    start, end = utc(2024, 1, 1), utc(2024, 1, 2)
    assert len(c.ticks_between(start, end)) == 144
    assert c.ticks_between(start, end, limit=3) == [
        utc(2024, 1, 1, 0, 10),
        utc(2024, 1, 1, 0, 20),
        utc(2024, 1, 1, 0, 30),
    ]
    assert c.ticks_between(start, end, limit=0) == []
    assert len(c.ticks_between(start, end, limit=1000)) == 144
    with pytest.raises(ValueError, match="limit"):
        c.ticks_between(start, end, limit=-1)


def test_previous_at_or_before_includes_the_instant_itself() -> None:
    c = daily("02:30")
    assert c.previous_at_or_before(utc(2024, 5, 2, 2, 30)) == utc(2024, 5, 2, 2, 30)
    assert c.previous_at_or_before(utc(2024, 5, 2, 2, 29, 59)) == utc(2024, 5, 1, 2, 30)
    assert Cron.parse("@yearly").previous_at_or_before(utc(2024, 12, 31, 23, 59)) == utc(2024, 1, 1)


def test_previous_at_or_before_looks_back_366_days_at_most() -> None:
    leap = Cron.parse("0 0 29 2 *")
    assert leap.previous_at_or_before(utc(2025, 2, 28)) == utc(2024, 2, 29)
    assert leap.previous_at_or_before(utc(2025, 3, 1, 0, 1)) is None
    assert Cron.parse("@yearly").previous_at_or_before(utc(2025, 12, 31, 23, 59)) == utc(2025, 1, 1)


def test_previous_at_or_before_follows_the_same_daylight_saving_rules() -> None:
    assert daily("01:30", tz=NY).previous_at_or_before(utc(2024, 11, 3, 6, 40)) == utc(2024, 11, 3, 5, 30)
    assert hourly(30, tz=NY).previous_at_or_before(utc(2024, 11, 3, 6, 40)) == utc(2024, 11, 3, 6, 30)
    assert hourly(45, tz=NY).previous_at_or_before(utc(2024, 11, 3, 6, 10)) == utc(2024, 11, 3, 5, 45)
    assert daily("02:30", tz=NY).previous_at_or_before(utc(2024, 3, 10, 7, 10)) == utc(2024, 3, 10, 7)


# --- helpers and describe -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "expression"),
    [
        (every_minute(), "* * * * *"),
        (every_minutes(15), "*/15 * * * *"),
        (every_minutes(7), "*/7 * * * *"),
        (hourly(), "0 * * * *"),
        (hourly(at_minute=5), "5 * * * *"),
        (every_hours(6, at_minute=30), "30 */6 * * *"),
        (daily(at="02:30"), "30 2 * * *"),
        (weekdays(at="09:00"), "0 9 * * 1-5"),
        (weekends(at="23:59"), "59 23 * * 0,6"),
        (weekly(day="Friday", at="17:00"), "0 17 * * 5"),
        (weekly(day="sun"), "0 0 * * 0"),
        (monthly(on=31, at="08:15"), "15 8 31 * *"),
    ],
)
def test_helpers_build_the_expected_expressions(schedule: Cron, expression: str) -> None:
    assert schedule.expression == expression
    assert schedule.tz == "UTC"


def test_helpers_take_the_zone() -> None:
    assert daily("02:30", tz=LONDON) == Cron("30 2 * * *", LONDON)


def test_every_minutes_restarts_its_cadence_each_hour() -> None:
    minutes = [t.minute for t in ticks(every_minutes(7), utc(2024, 1, 1, 0, 50), 3)]
    assert minutes == [56, 0, 7]


def test_monthly_skips_months_without_that_day() -> None:
    assert [t.month for t in ticks(monthly(31), utc(2024, 1, 1), 4)] == [1, 3, 5, 7]


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: every_minutes(0), "every_minutes(n=0)"),
        (lambda: every_minutes(60), "n takes a whole number from 1 to 59"),
        (lambda: every_minutes(True), "every_minutes(n=True)"),
        (lambda: hourly(60), "hourly(at_minute=60)"),
        (lambda: every_hours(24), "every_hours(n=24)"),
        (lambda: every_hours(2, at_minute=-1), "every_hours(at_minute=-1)"),
        (lambda: daily("24:00"), "daily(at='24:00')"),
        (lambda: daily("2:30"), "'HH:MM'"),
        (lambda: daily("02:60"), "daily(at='02:60')"),
        (lambda: weekdays(" 09:00"), "weekdays(at=' 09:00')"),
        (lambda: weekends("9am"), "weekends(at='9am')"),
        (lambda: weekly("funday"), "weekly(day='funday')"),
        (lambda: weekly("mon", "25:00"), "weekly(at='25:00')"),
        (lambda: monthly(0), "monthly(on=0)"),
        (lambda: monthly(32), "on takes a whole number from 1 to 31"),
        (lambda: daily("02:30", tz="Nowhere/Special"), "unknown time zone 'Nowhere/Special'"),
    ],
)
def test_helpers_refuse_bad_arguments_by_name(build: object, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build()  # type: ignore[operator]
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("schedule", "text"),
    [
        (every_minute(tz=NY), "every minute"),
        (every_minutes(15), "every 15 minutes"),
        (hourly(5), "hourly at :05 (UTC)"),
        (every_hours(6, 30), "every 6 hours at :30 (UTC)"),
        (daily("02:30", tz=LONDON), "daily at 02:30 (Europe/London)"),
        (weekdays("09:00"), "weekdays at 09:00 (UTC)"),
        (weekends("10:00"), "weekends at 10:00 (UTC)"),
        (weekly("fri", "17:00"), "weekly on Friday at 17:00 (UTC)"),
        (monthly(15, "08:00"), "monthly on day 15 at 08:00 (UTC)"),
        (cron("@yearly"), "yearly on 1 Jan at 00:00 (UTC)"),
        (every_minutes(7), "*/7 * * * * (UTC)"),
        (cron("*/5 9-17 * * mon-fri", tz=NY), "*/5 9-17 * * mon-fri (America/New_York)"),
    ],
)
def test_describe_says_it_in_words_or_falls_back_to_the_expression(schedule: Cron, text: str) -> None:
    assert schedule.describe() == text


# --- properties against brute force ---------------------------------------------------------------


@cache
def transitions(zone: str, year: int) -> list[datetime]:
    """The instants the zone's UTC offset changes in `year`, found minute by minute around each change."""
    tz = ZoneInfo(zone)
    found = []
    day = utc(year, 1, 1)
    while day.year == year:
        if day.astimezone(tz).utcoffset() != (day + timedelta(days=1)).astimezone(tz).utcoffset():
            minute = day
            while minute.astimezone(tz).utcoffset() == day.astimezone(tz).utcoffset():
                minute += MINUTE
            found.append(minute)
        day += timedelta(days=1)
    return found


FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


@st.composite
def field_items(draw: st.DrawFn, lo: int, hi: int) -> tuple[str, set[int]]:
    kind = draw(st.sampled_from(["*", "value", "range", "star-step", "range-step", "start-step"]))
    if kind == "*":
        return "*", set(range(lo, hi + 1))
    a = draw(st.integers(lo, hi))
    if kind == "value":
        return str(a), {a}
    n = draw(st.integers(1, hi - lo + 1))
    if kind == "star-step":
        return f"*/{n}", set(range(lo, hi + 1, n))
    if kind == "start-step":
        return f"{a}/{n}", set(range(a, hi + 1, n))
    b = draw(st.integers(a, hi))
    return (f"{a}-{b}", set(range(a, b + 1))) if kind == "range" else (f"{a}-{b}/{n}", set(range(a, b + 1, n)))


@st.composite
def expressions(draw: st.DrawFn, star_odds: tuple[float, ...]) -> tuple[str, list[set[int]], bool, bool]:
    """A random expression, with the value sets the test works out for itself; `star_odds` per field."""
    texts, sets = [], []
    for (lo, hi), odds in zip(FIELD_RANGES, star_odds, strict=True):
        if draw(st.integers(0, 99)) < odds * 100:
            texts.append("*")
            sets.append(set(range(lo, hi + 1)))
            continue
        items = draw(st.lists(field_items(lo, hi), min_size=1, max_size=3))
        texts.append(",".join(text for text, _ in items))
        sets.append(set().union(*(values for _, values in items)))
    sets[4] = {d % 7 for d in sets[4]}
    return " ".join(texts), sets, texts[2] == "*", texts[4] == "*"


def fields_match(sets: list[set[int]], dom_any: bool, dow_any: bool, wall: datetime) -> bool:
    dom_ok = wall.day in sets[2]
    dow_ok = (wall.weekday() + 1) % 7 in sets[4]
    day_ok = (dom_ok and dow_ok) if dom_any or dow_any else (dom_ok or dow_ok)
    return wall.minute in sets[0] and wall.hour in sets[1] and wall.month in sets[3] and day_ok


def never_fires(sets: list[set[int]], dow_any: bool) -> bool:
    longest = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return dow_any and not any(d <= longest[m] for m in sets[3] for d in sets[2])


def day_matches(sets: list[set[int]], dom_any: bool, dow_any: bool, day: datetime) -> bool:
    return day.month in sets[3] and fields_match([set(range(60)), set(range(24)), *sets[2:]], dom_any, dow_any, day)


instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)


@settings(max_examples=150, deadline=None)
@given(expression=expressions((0.3, 0.3, 0.4, 0.4, 0.4)), instant=instants)
def test_next_and_previous_agree_with_brute_force_in_utc(
    expression: tuple[str, list[set[int]], bool, bool], instant: datetime
) -> None:
    text, sets, dom_any, dow_any = expression
    if never_fires(sets, dow_any):
        with pytest.raises(ConfigurationError, match="never fires"):
            Cron.parse(text)
        return
    c = Cron.parse(text)

    def first_at_or_after(t: datetime, step: int) -> datetime | None:
        """Day by day (any matching day has a matching minute), then minute by minute inside the day."""
        for _ in range(9 * 366):
            if day_matches(sets, dom_any, dow_any, t):
                while t.day == (t + step * MINUTE).day or fields_match(sets, dom_any, dow_any, t):
                    if fields_match(sets, dom_any, dow_any, t):
                        return t
                    t += step * MINUTE
            t = t.replace(hour=0, minute=0) + timedelta(days=1) if step > 0 else t.replace(hour=0, minute=0) - MINUTE
        return None

    floor = instant.replace(second=0, microsecond=0)
    assert c.next_after(instant) == first_at_or_after(floor + MINUTE, 1)
    previous = first_at_or_after(floor, -1)
    expected = previous if previous is not None and previous >= instant - timedelta(days=366) else None
    assert c.previous_at_or_before(instant) == expected


def real_time_ticks(
    text: str, sets: list[set[int]], dom_any: bool, dow_any: bool, zone: str, start: datetime, end: datetime
) -> list[datetime]:
    """The promised ticks, found by walking real time minute by minute and reading the zone's clock."""
    tz = ZoneInfo(zone)
    every_hour = len(sets[1]) == 24
    found = []
    t = start.replace(second=0, microsecond=0) + MINUTE
    previous_wall = (t - MINUTE).astimezone(tz).replace(tzinfo=None)
    while t <= end:
        local = t.astimezone(tz)
        wall = local.replace(tzinfo=None, fold=0)
        here = fields_match(sets, dom_any, dow_any, wall) and (local.fold == 0 or every_hour)
        skipped = (previous_wall + MINUTE * k for k in range(1, (wall - previous_wall) // MINUTE))
        if here or any(fields_match(sets, dom_any, dow_any, w) for w in skipped):
            found.append(t)
        previous_wall, t = wall, t + MINUTE
    return found


@st.composite
def zoned_instants(draw: st.DrawFn) -> tuple[str, datetime]:
    zone = draw(st.sampled_from([NY, LONDON, LORD_HOWE, "UTC"]))
    changes = [c for year in range(2020, 2031) for c in transitions(zone, year)]
    if changes and draw(st.booleans()):
        anchor = draw(st.sampled_from(changes)) - timedelta(minutes=draw(st.integers(0, 240)))
        return zone, anchor + timedelta(seconds=draw(st.integers(0, 59)))
    return zone, draw(instants)


@settings(max_examples=150, deadline=None)
@given(expression=expressions((0.1, 0.6, 0.85, 0.85, 0.7)), where=zoned_instants())
def test_ticks_agree_with_a_real_time_walk_across_daylight_saving(
    expression: tuple[str, list[set[int]], bool, bool], where: tuple[str, datetime]
) -> None:
    text, sets, dom_any, dow_any = expression
    zone, start = where
    if never_fires(sets, dow_any):
        return
    end = start + timedelta(hours=4)
    expected = real_time_ticks(text, sets, dom_any, dow_any, zone, start, end)
    c, tz = Cron.parse(text, tz=zone), ZoneInfo(zone)
    assert c.ticks_between(start, end) == expected
    pairs = list(itertools.pairwise(expected))
    # Every tenth pair, and every pair a change of offset touches.
    for i, (earlier, later) in enumerate(pairs):
        rhythm_breaks = later - earlier != pairs[i - 1][1] - pairs[i - 1][0]
        shifted = earlier.astimezone(tz).utcoffset() != later.astimezone(tz).utcoffset() or later.astimezone(tz).fold
        if i % 10 == 0 or rhythm_breaks or shifted:
            assert c.previous_at_or_before(later - timedelta(seconds=1)) == earlier
    if expected:
        assert c.previous_at_or_before(end) == expected[-1]

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqsjobs.timing import MAX_VISIBILITY_SECONDS, backoff_seconds, delay_seconds


def test_a_backoff_list_gives_one_wait_per_attempt_and_repeats_its_last() -> None:
    assert [backoff_seconds([5, 30, 120], a) for a in (1, 2, 3, 4, 9)] == [5, 30, 120, 120, 120]


def test_backoff_may_be_a_number_or_a_function_of_the_attempt() -> None:
    assert backoff_seconds(7, 3) == 7
    assert backoff_seconds(lambda attempt: 2**attempt, 4) == 16


@given(wait=st.floats(min_value=0, max_value=10**7), attempt=st.integers(1, 50))
def test_backoff_never_exceeds_what_sqs_visibility_allows(wait: float, attempt: int) -> None:
    assert 0 <= backoff_seconds(wait, attempt) <= MAX_VISIBILITY_SECONDS


@given(wait=st.integers(2, 10_000))
def test_jitter_stays_between_half_and_the_full_wait(wait: int) -> None:
    assert wait / 2 - 1 <= backoff_seconds(wait, 1, jitter=True) <= wait


def test_delays_accept_seconds_timedeltas_and_aware_datetimes() -> None:
    now = 1_000_000.0
    assert delay_seconds(None, now) == 0
    assert delay_seconds(30, now) == 30
    assert delay_seconds(timedelta(minutes=20), now) == 1200
    assert delay_seconds(datetime.fromtimestamp(now + 90, UTC), now) == pytest.approx(90)
    assert delay_seconds(datetime.fromtimestamp(now - 90, UTC), now) == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        delay_seconds(datetime(2030, 1, 1), now)
    with pytest.raises(ValueError, match=">= 0"):
        delay_seconds(-1, now)

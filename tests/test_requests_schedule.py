"""requests_app.schedule: parsing, and the instants a schedule runs at (month ends included)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from requests_app.schedule import (
    Schedule,
    ScheduleError,
    last_slot_at_or_before,
    next_slot_after,
    parse,
    slots_between,
)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("text, expected", [
    ("daily 02:00", Schedule("daily", 2, 0)),
    ("  Daily   2:05 ", Schedule("daily", 2, 5)),
    ("weekly sun 23:59", Schedule("weekly", 23, 59, 6)),
    ("weekly MON 00:00", Schedule("weekly", 0, 0, 0)),
    ("monthly 31 04:30", Schedule("monthly", 4, 30, 31)),
    ("monthly 1 00:00", Schedule("monthly", 0, 0, 1)),
])
def test_schedules_parse_to_their_canonical_form(text, expected):
    assert parse(text) == expected
    assert parse(str(expected)) == expected


@pytest.mark.parametrize("text, fragment", [
    ("", "is not a schedule"),
    ("hourly 02:00", "is not a schedule"),
    ("daily 24:00", "not a time of day"),
    ("daily 02:60", "not a time of day"),
    ("daily 2", "is not a schedule"),
    ("weekly funday 02:00", "not a day"),
    ("weekly 02:00", "is not a schedule"),
    ("monthly 0 02:00", "not a day of the month"),
    ("monthly 32 02:00", "not a day of the month"),
    ("monthly mon 02:00", "is not a schedule"),
])
def test_bad_schedules_are_refused_with_the_reason(text, fragment):
    with pytest.raises(ScheduleError, match=fragment):
        parse(text)


def test_daily_slots():
    s = parse("daily 02:00")
    assert next_slot_after(s, utc(2026, 12, 1, 1, 59)) == utc(2026, 12, 1, 2, 0)
    assert next_slot_after(s, utc(2026, 12, 1, 2, 0)) == utc(2026, 12, 2, 2, 0)  # strictly after
    assert last_slot_at_or_before(s, utc(2026, 12, 1, 2, 0)) == utc(2026, 12, 1, 2, 0)
    assert last_slot_at_or_before(s, utc(2026, 12, 1, 1, 59)) == utc(2026, 11, 30, 2, 0)
    assert next_slot_after(s, utc(2026, 12, 31, 3, 0)) == utc(2027, 1, 1, 2, 0)


def test_weekly_slots():
    s = parse("weekly wed 08:15")  # 2 December 2026 is a Wednesday
    assert next_slot_after(s, utc(2026, 12, 1, 12, 0)) == utc(2026, 12, 2, 8, 15)
    assert next_slot_after(s, utc(2026, 12, 2, 8, 15)) == utc(2026, 12, 9, 8, 15)
    assert last_slot_at_or_before(s, utc(2026, 12, 2, 8, 14)) == utc(2026, 11, 25, 8, 15)


def test_monthly_31_runs_on_the_last_day_of_shorter_months():
    s = parse("monthly 31 02:00")
    assert next_slot_after(s, utc(2027, 1, 31, 2, 0)) == utc(2027, 2, 28, 2, 0)
    assert next_slot_after(s, utc(2028, 2, 1, 0, 0)) == utc(2028, 2, 29, 2, 0)  # leap year
    assert next_slot_after(s, utc(2027, 2, 28, 2, 0)) == utc(2027, 3, 31, 2, 0)
    assert next_slot_after(s, utc(2027, 4, 1, 0, 0)) == utc(2027, 4, 30, 2, 0)
    assert last_slot_at_or_before(s, utc(2027, 3, 30, 0, 0)) == utc(2027, 2, 28, 2, 0)
    # every month once: twelve slots in a year
    assert slots_between(s, utc(2027, 1, 1), utc(2027, 12, 31, 23, 59)) == 12


def test_missed_slots_are_counted():
    s = parse("daily 02:00")
    assert slots_between(s, utc(2026, 12, 1, 2, 0), utc(2026, 12, 4, 1, 0)) == 3
    assert slots_between(s, utc(2026, 12, 1, 2, 0), utc(2026, 12, 1, 2, 0)) == 1
    assert slots_between(s, utc(2026, 12, 1, 3, 0), utc(2026, 12, 2, 1, 0)) == 0


def test_a_naive_instant_is_refused():
    with pytest.raises(ValueError, match="naive"):
        next_slot_after(parse("daily 02:00"), datetime(2026, 12, 1))


schedules = st.one_of(
    st.builds(lambda h, m: Schedule("daily", h, m), st.integers(0, 23), st.integers(0, 59)),
    st.builds(lambda d, h, m: Schedule("weekly", h, m, d), st.integers(0, 6), st.integers(0, 23), st.integers(0, 59)),
    st.builds(lambda d, h, m: Schedule("monthly", h, m, d), st.integers(1, 31), st.integers(0, 23), st.integers(0, 59)),
)
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))


@given(schedules, instants)
def test_next_and_last_slots_bracket_any_instant(s, t):
    after, before = next_slot_after(s, t), last_slot_at_or_before(s, t)
    assert before <= t < after
    assert next_slot_after(s, before) == after  # no slot in between
    assert last_slot_at_or_before(s, after - timedelta(microseconds=1)) == before
    assert after.second == 0 and after.microsecond == 0
    assert (after.hour, after.minute) == (s.hour, s.minute)

"""A plan's schedule: its text form, and the instants it runs at (pure: no database, no clock).

    daily HH:MM          every day at HH:MM UTC
    weekly DAY HH:MM     every DAY (mon..sun) at HH:MM UTC
    monthly N HH:MM      every month on day N (1..31) at HH:MM UTC

Month ends: ``monthly N`` in a month that has fewer than N days runs on that month's last day
(``monthly 31`` runs on 30 April, 28 or 29 February), so a plan runs once every month, never
skipping one and never twice.

Invariants: every slot is a whole minute in UTC; ``next_slot_after(s, t) > t``;
``last_slot_at_or_before(s, t) <= t``; between two consecutive slots there is no other.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
KINDS = ("daily", "weekly", "monthly")

_TIME = r"(?P<hour>\d{1,2}):(?P<minute>\d{2})"
_PATTERNS = {
    "daily": re.compile(rf"daily\s+{_TIME}"),
    "weekly": re.compile(rf"weekly\s+(?P<day>[a-z]+)\s+{_TIME}"),
    "monthly": re.compile(rf"monthly\s+(?P<day>\d{{1,2}})\s+{_TIME}"),
}


class ScheduleError(ValueError):
    """The text is not a schedule; the message says what is accepted."""


@dataclass(frozen=True)
class Schedule:
    kind: str  # daily | weekly | monthly
    hour: int
    minute: int
    day: int = 0  # weekly: 0 (mon) .. 6 (sun); monthly: 1 .. 31; daily: 0

    def __str__(self) -> str:
        time = f"{self.hour:02d}:{self.minute:02d}"
        if self.kind == "daily":
            return f"daily {time}"
        if self.kind == "weekly":
            return f"weekly {DAYS[self.day]} {time}"
        return f"monthly {self.day} {time}"

    def describe(self) -> str:
        """For people: ``every day at 02:00 UTC``."""
        time = f"{self.hour:02d}:{self.minute:02d} UTC"
        if self.kind == "daily":
            return f"every day at {time}"
        if self.kind == "weekly":
            return f"every {calendar.day_name[self.day]} at {time}"
        suffix = "last day" if self.day == 31 else f"day {self.day}"
        return f"every month on {suffix} at {time}" + (" (or the month's last day)" if 28 < self.day < 31 else "")


USAGE = "Use 'daily HH:MM', 'weekly DAY HH:MM' (DAY mon..sun) or 'monthly N HH:MM' (N 1..31), in UTC."


def parse(text: str) -> Schedule:
    """``"weekly mon 02:30"`` → Schedule; ScheduleError with the accepted forms otherwise."""
    value = " ".join((text or "").strip().lower().split())
    kind = value.split(" ", 1)[0]
    pattern = _PATTERNS.get(kind)
    match = pattern.fullmatch(value) if pattern else None
    if match is None:
        raise ScheduleError(f"{text!r} is not a schedule. {USAGE}")
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise ScheduleError(f"{match['hour']}:{match['minute']} is not a time of day (00:00 to 23:59).")
    day = 0
    if kind == "weekly":
        if match["day"] not in DAYS:
            raise ScheduleError(f"{match['day']!r} is not a day; use one of {', '.join(DAYS)}.")
        day = DAYS.index(match["day"])
    elif kind == "monthly":
        day = int(match["day"])
        if not 1 <= day <= 31:
            raise ScheduleError(f"{day} is not a day of the month (1 to 31).")
    return Schedule(kind, hour, minute, day)


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("a naive datetime: give an aware one (UTC)")
    return t.astimezone(UTC)


def _month_slot(s: Schedule, year: int, month: int) -> datetime:
    day = min(s.day, calendar.monthrange(year, month)[1])
    return datetime(year, month, day, s.hour, s.minute, tzinfo=UTC)


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + n
    return index // 12, index % 12 + 1


def last_slot_at_or_before(s: Schedule, t: datetime) -> datetime:
    """The latest instant of ``s`` that is not after ``t``."""
    t = _utc(t)
    if s.kind == "monthly":
        year, month = t.year, t.month
        while True:
            slot = _month_slot(s, year, month)
            if slot <= t:
                return slot
            year, month = _add_months(year, month, -1)
    candidate = t.replace(hour=s.hour, minute=s.minute, second=0, microsecond=0)
    if s.kind == "daily":
        return candidate if candidate <= t else candidate - timedelta(days=1)
    candidate -= timedelta(days=(candidate.weekday() - s.day) % 7)
    return candidate if candidate <= t else candidate - timedelta(days=7)


def next_slot_after(s: Schedule, t: datetime) -> datetime:
    """The earliest instant of ``s`` strictly after ``t``."""
    t = _utc(t)
    if s.kind == "monthly":
        year, month = t.year, t.month
        while True:
            slot = _month_slot(s, year, month)
            if slot > t:
                return slot
            year, month = _add_months(year, month, 1)
    candidate = t.replace(hour=s.hour, minute=s.minute, second=0, microsecond=0)
    if s.kind == "daily":
        return candidate if candidate > t else candidate + timedelta(days=1)
    candidate += timedelta(days=(s.day - candidate.weekday()) % 7)
    return candidate if candidate > t else candidate + timedelta(days=7)


def slots_between(s: Schedule, start: datetime, end: datetime, limit: int = 10_000) -> int:
    """How many instants of ``s`` lie in [start, end] (at most ``limit``): the slots a scheduler
    that was down from ``start`` to ``end`` missed."""
    count, slot = 0, last_slot_at_or_before(s, start)
    if slot < _utc(start):
        slot = next_slot_after(s, slot)
    while slot <= _utc(end) and count < limit:
        count += 1
        slot = next_slot_after(s, slot)
    return count

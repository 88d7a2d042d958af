"""The portal's template filters: exact durations and archive totals."""

from __future__ import annotations

import datetime as dt

import pytest

from requests_app.templatetags.lf import duration, duration_text, total_size

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("seconds", "text"), [
    (0.2, "under 1 s"), (1, "1 s"), (19, "19 s"), (19.6, "20 s"), (60, "1 min"), (192, "3 min 12 s"),
    (3600, "1 h"), (3600 + 5 * 60 + 3, "1 h 5 min 3 s"), (26 * 3600 + 7, "26 h 7 s"),
])
def test_durations_are_exact_to_the_second(seconds, text):
    assert duration_text(seconds) == text
    assert duration(T0, T0 + dt.timedelta(seconds=seconds)) == text


def test_a_duration_with_an_unknown_end_is_empty():
    assert duration(T0, None) == "" and duration(None, T0) == ""


def test_total_size_adds_every_volume():
    assert total_size([{"key": "a.part001.zip", "size": 1000}, {"key": "a.part002.zip", "size": 24}]) == 1024
    assert total_size([]) == 0 and total_size(None) == 0

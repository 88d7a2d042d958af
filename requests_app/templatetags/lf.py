"""Template filters for how the portal writes sizes and durations."""

from __future__ import annotations

import datetime as dt

from django import template

register = template.Library()


@register.filter
def bytes(value) -> str:  # noqa: A001 - template filter name
    """1536 → '1.5 KB' (binary multiples, as mail administrators read sizes)."""
    try:
        size = float(value or 0)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def duration_text(seconds: float) -> str:
    """An exact duration to the second: '19 s', '3 min 12 s', '2 h 5 min', 'under 1 s'.

    Django's ``timesince`` rounds down to its largest unit ("0 minutes" for a 19 s run), which
    tells an administrator nothing about a short run and too little about a long one.
    """
    total = round(seconds)
    if total <= 0:
        return "under 1 s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((hours, "h"), (minutes, "min"), (secs, "s")) if n]
    return " ".join(parts)


@register.filter
def seconds(value) -> str:
    """``{{ 192|seconds }}`` → '3 min 12 s' (an estimate's exact text, as ``duration``)."""
    return duration_text(float(value or 0))


@register.filter
def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """``{{ req.started_at|duration:req.finished_at }}``; empty when either end is unknown."""
    if not start or not end:
        return ""
    return duration_text((end - start).total_seconds())


@register.filter
def total_size(files) -> int:
    """The sum of ``size`` over archive files (``[{"key": ..., "size": ...}, ...]``)."""
    return sum(int(f.get("size") or 0) for f in files or ())

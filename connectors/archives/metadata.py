"""What every archive records about each message, in the text form the archive-metadata contract fixes.

Both formats (the ZIP index ``index.csv`` and ZIP entry timestamps; the PST's LegacyFlo named
properties) and ``report.csv`` spell a message's metadata the same way, so a restore reads back
what a backup wrote whatever the format:

- flags: IMAP flags and keywords separated by one space (``\\Seen \\Flagged $Forwarded``), in the
  order the source served them;
- labels: Gmail label names separated by ``;``;
- internal date: ISO 8601 to the second with its offset (``2021-01-03T10:00:00+02:00``); a
  naive datetime is taken as UTC.

Pure functions, no I/O: the pipelines call them on the records they commit.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from typing import BinaryIO

INDEX_COLUMNS = ["entry", "folder", "source_id", "message_id", "internal_date", "flags", "labels",
                 "size", "sha256"]
FLAG_SEPARATOR = " "
LABEL_SEPARATOR = ";"
UNIX_TIME_MAX = 0x7FFFFFFF  # the UT extra field's mtime is a signed 32-bit count of seconds


def iso_date(when: dt.datetime | None) -> str:
    """``when`` as ISO 8601 with its offset, to the second ("" for none)."""
    if when is None:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.replace(microsecond=0).isoformat()


def parse_iso_date(text: str) -> dt.datetime | None:
    """The aware datetime ``iso_date`` wrote (None for "" or anything unreadable)."""
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def unix_time(text: str) -> int | None:
    """Seconds since 1970 (UTC) of an ``iso_date`` string, clamped to what a UT field holds."""
    when = parse_iso_date(text)
    if when is None:
        return None
    return min(max(int(when.timestamp()), 0), UNIX_TIME_MAX)


def flags_text(flags: Iterable[str]) -> str:
    return FLAG_SEPARATOR.join(f for f in flags if f)


def labels_text(labels: Iterable[str]) -> str:
    return LABEL_SEPARATOR.join(lb for lb in labels if lb)


def split_flags(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


def split_labels(text: str) -> tuple[str, ...]:
    return tuple(lb for lb in text.split(LABEL_SEPARATOR) if lb) if text else ()


def index_row(entry: str, folder: str, source_id: str, message_id: str, internal_date: str,
              flags: Sequence[str], labels: Sequence[str], size: int, sha256: str) -> list[str]:
    """One ``index.csv`` row, columns ``INDEX_COLUMNS``."""
    return [entry, folder, source_id, message_id, internal_date, flags_text(flags),
            labels_text(labels), str(size), sha256]


def index_row_bound(entry: str, folder: str, source_id: str, message_id: str,
                    flags: Sequence[str], labels: Sequence[str]) -> int:
    """The most bytes one ``index.csv`` row can take (CSV quoting at most doubles a field plus
    its two quotes; a date is at most 25 bytes, a size 20 digits, a SHA-256 64)."""
    texts = (entry, folder, source_id, message_id, flags_text(flags), labels_text(labels))
    return sum(2 * len(t.encode("utf-8")) + 2 for t in texts) + 25 + 20 + 64 + 8 + 2  # commas, CRLF


class IndexWriter:
    """``index.csv`` (UTF-8, header row, CRLF rows) written to a binary file as rows come."""

    def __init__(self, out: BinaryIO) -> None:
        self._text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        self._csv = csv.writer(self._text)
        self._csv.writerow(INDEX_COLUMNS)
        self.rows = 0

    def add(self, row: list[str]) -> None:
        self._csv.writerow(row)
        self.rows += 1

    def close(self) -> None:
        self._text.flush()
        self._text.detach()

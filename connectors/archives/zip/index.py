"""The per-volume metadata a ZIP carries (the archive-metadata contract), read back.

``index.csv`` / ``index.partNNN.csv`` (columns ``INDEX_COLUMNS``) give each message entry its
folder, source id, Message-ID, internal date, flags, labels, size and SHA-256. Archives written
before that contract carry only ``labels.csv`` / ``labels.partNNN.csv`` (entry, folder,
source_id, labels as a JSON list); both are read, the index winning where both exist.

Parsing is tolerant of what a spreadsheet round trip does to a CSV (a UTF-8 BOM, extra columns,
missing optional cells): a row without an ``entry`` is ignored, a bad date or size is treated
as unrecorded, never as an error, because the fallbacks (the message's own headers, the entry's
timestamp) still hold. Reserved names are never messages.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

INDEX_COLUMNS = ["entry", "folder", "source_id", "message_id", "internal_date", "flags", "labels", "size",
                 "sha256"]
_INDEX_NAME = re.compile(r"index(\.part\d{3,})?\.csv")
_LABELS_NAME = re.compile(r"labels(\.part\d{3,})?\.csv")


def is_index(name: str) -> bool:
    return bool(_INDEX_NAME.fullmatch(name))


def is_labels(name: str) -> bool:
    return bool(_LABELS_NAME.fullmatch(name))


def is_metadata(name: str) -> bool:
    """An entry the writer reserves for metadata (never a message)."""
    return is_index(name) or is_labels(name)


@dataclass(frozen=True)
class IndexRow:
    entry: str
    folder: str = ""
    source_id: str = ""
    message_id: str = ""
    internal_date: dt.datetime | None = None
    flags: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    size: int | None = None
    sha256: str = ""


def parse_date(text: str) -> dt.datetime | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _rows(data: bytes) -> Iterable[dict]:
    text = data.decode("utf-8-sig", "replace")
    return csv.DictReader(io.StringIO(text, newline=""))


def parse_index(data: bytes) -> dict[str, IndexRow]:
    """{entry name: row} of an index.csv's bytes."""
    out: dict[str, IndexRow] = {}
    for row in _rows(data):
        entry = (row.get("entry") or "").strip()
        if not entry:
            continue
        size_text = (row.get("size") or "").strip()
        labels = tuple(x for x in (row.get("labels") or "").split(";") if x)
        out[entry] = IndexRow(
            entry=entry, folder=row.get("folder") or "", source_id=row.get("source_id") or "",
            message_id=(row.get("message_id") or "").strip(),
            internal_date=parse_date(row.get("internal_date") or ""),
            flags=tuple((row.get("flags") or "").split()), labels=labels,
            size=int(size_text) if size_text.isdigit() else None,
            sha256=(row.get("sha256") or "").strip().lower())
    return out


def parse_labels(data: bytes) -> dict[str, IndexRow]:
    """{entry name: row} of an older archive's labels.csv (folder, source id and labels only)."""
    out: dict[str, IndexRow] = {}
    for row in _rows(data):
        entry = (row.get("entry") or "").strip()
        if not entry:
            continue
        try:
            labels = tuple(str(x) for x in json.loads(row.get("labels") or "[]"))
        except (ValueError, TypeError):
            labels = tuple(x for x in (row.get("labels") or "").split(";") if x)
        out[entry] = IndexRow(entry=entry, folder=row.get("folder") or "",
                              source_id=row.get("source_id") or "", labels=labels)
    return out


def merge(index: dict[str, IndexRow], labels: dict[str, IndexRow]) -> dict[str, IndexRow]:
    """The index's rows, plus labels-only rows for entries the index does not name."""
    merged = dict(labels)
    merged.update(index)
    return merged

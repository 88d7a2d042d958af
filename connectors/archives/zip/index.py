"""The per-volume metadata a ZIP carries (the archive-metadata contract), read back.

``index.csv`` / ``index.partNNN.csv`` (columns ``INDEX_COLUMNS``) give each message entry its
folder, source id, Message-ID, internal date, flags, labels, size and SHA-256. Archives written
before that contract carry only ``labels.csv`` / ``labels.partNNN.csv`` (entry, folder,
source_id, labels as a JSON list), read when a volume has no index. Rows are streamed
(``iter_index``, ``IndexLookup``): a volume's index is never held whole.

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
from collections.abc import Iterable, Iterator
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


class _ChunkStream(io.RawIOBase):
    """A readable stream over an iterator of byte chunks (an entry being inflated)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks, self._rest, self._at = chunks, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._at >= len(self._rest):
            try:
                self._rest, self._at = next(self._chunks), 0
            except StopIteration:
                return 0
        n = min(len(b), len(self._rest) - self._at)
        b[:n] = memoryview(self._rest)[self._at:self._at + n]
        self._at += n
        return n


def _rows(data: bytes | Iterator[bytes]) -> Iterator[dict]:
    """The CSV's rows as dicts, from its bytes or (streamed) from chunks of them."""
    chunks = iter((data,)) if isinstance(data, bytes) else data
    text = io.TextIOWrapper(io.BufferedReader(_ChunkStream(chunks)), encoding="utf-8-sig", errors="replace",
                            newline="")
    return csv.DictReader(text)


def iter_index(data: bytes | Iterator[bytes]) -> Iterator[IndexRow]:
    """The rows of an index.csv, in file order, from its bytes or chunks of them (streamed)."""
    for row in _rows(data):
        entry = (row.get("entry") or "").strip()
        if not entry:
            continue
        size_text = (row.get("size") or "").strip()
        labels = tuple(x for x in (row.get("labels") or "").split(";") if x)
        yield IndexRow(
            entry=entry, folder=row.get("folder") or "", source_id=row.get("source_id") or "",
            message_id=(row.get("message_id") or "").strip(),
            internal_date=parse_date(row.get("internal_date") or ""),
            flags=tuple((row.get("flags") or "").split()), labels=labels,
            size=int(size_text) if size_text.isdigit() else None,
            sha256=(row.get("sha256") or "").strip().lower())


def iter_labels(data: bytes | Iterator[bytes]) -> Iterator[IndexRow]:
    """The rows of an older archive's labels.csv (folder, source id and labels only)."""
    for row in _rows(data):
        entry = (row.get("entry") or "").strip()
        if not entry:
            continue
        try:
            labels = tuple(str(x) for x in json.loads(row.get("labels") or "[]"))
        except (ValueError, TypeError):
            labels = tuple(x for x in (row.get("labels") or "").split(";") if x)
        yield IndexRow(entry=entry, folder=row.get("folder") or "", source_id=row.get("source_id") or "",
                       labels=labels)


class IndexLookup:
    """Index rows by entry name, read from the stream only as far as they are asked for.

    The writer puts rows in archive order, so reading a volume's entries in order keeps at most
    a row or two pending and memory stays flat with the number of messages; entries asked for
    out of order (a foreign tool's index) still get their rows, the rows passed over waiting in
    ``pending`` meanwhile.
    """

    def __init__(self, rows: Iterable[IndexRow] = ()) -> None:
        self._rows = iter(rows)
        self.pending: dict[str, IndexRow] = {}

    def get(self, entry: str) -> IndexRow | None:
        row = self.pending.pop(entry, None)
        if row is not None:
            return row
        for row in self._rows:
            if row.entry == entry:
                return row
            self.pending[row.entry] = row
        return None

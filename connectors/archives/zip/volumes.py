"""How big a ZIP volume would be if it were closed now: what a split export asks before each entry.

A closed volume is its entries (local headers + payloads), one central directory header per
entry, the end records, a labels manifest when its messages carry labels, and always its index
(``index.csv`` / ``index.partNNN.csv``, one row per message: ``connectors.archives.metadata``).
The engine streams entries to S3 before the directory exists, so it must know in advance:
``VolumeBudget`` counts the directory exactly and bounds the end records, the labels manifest
and the index from above.

Invariant: a volume closed when ``fits`` said so is at most ``limit`` bytes; only an entry that
does not fit even into an empty volume (a message larger than the split size) makes a volume
bigger, and it is then the volume's only message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from connectors.archives.metadata import INDEX_COLUMNS
from connectors.archives.zip.writer import END_RECORDS_MAX, ZipEntry

# the labels manifest's local + central headers (ZIP64 extras and the longest name included)
# and its header row
_LABELS_NAME_MAX = len("labels.part99999.csv")
_LABELS_ENTRY_BYTES = (30 + 20) + (46 + 28) + 2 * _LABELS_NAME_MAX + len("entry,folder,source_id,labels\r\n")


_INDEX_NAME_MAX = len("index.part99999.csv")
_INDEX_ENTRY_BYTES = (30 + 20) + (46 + 28) + 2 * _INDEX_NAME_MAX + len(",".join(INDEX_COLUMNS) + "\r\n")


def labels_row_bound(name: str, folder: str, source_id: str, labels: Iterable[str]) -> int:
    """The most bytes one labels manifest row can take (CSV quoting at most doubles a field)."""
    fields = (name, folder, source_id, json.dumps(list(labels), ensure_ascii=False))
    return sum(2 * len(f.encode("utf-8")) + 2 for f in fields) + 3 + 2  # commas, CRLF


def _labels_bytes(rows: int) -> int:
    """The manifest's bytes in the volume for ``rows`` bytes of rows (deflate may add ~0.1%)."""
    return 0 if not rows else _LABELS_ENTRY_BYTES + rows + rows // 64 + 1024


def _index_bytes(rows: int) -> int:
    """The index's bytes in the volume for ``rows`` bytes of rows (present even with none)."""
    return _INDEX_ENTRY_BYTES + rows + rows // 64 + 1024


class VolumeBudget:
    """The size of the current volume's entries' central directory, labels and index, and its messages."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.directory = 0  # central directory headers of the entries so far
        self.label_rows = 0  # labels.csv rows so far (upper bound)
        self.index_rows = 0  # index.csv rows so far (upper bound)
        self.messages = 0

    def fits(self, entry: ZipEntry, label_row: int = 0, index_row: int = 0) -> bool:
        """Would the volume, closed right after ``entry``, stay within the limit?"""
        end = entry.offset + entry.local_header_size + entry.compressed_size
        closed = (end + self.directory + entry.central_header_size + END_RECORDS_MAX
                  + _labels_bytes(self.label_rows + label_row)
                  + _index_bytes(self.index_rows + index_row))
        return closed <= self.limit

    def must_split_before(self, entry: ZipEntry, label_row: int = 0, index_row: int = 0) -> bool:
        """Start a new volume first: ``entry`` does not fit and this one already holds a message."""
        return self.messages > 0 and not self.fits(entry, label_row, index_row)

    def add(self, entry: ZipEntry, label_row: int = 0, index_row: int = 0, *, message: bool) -> None:
        self.directory += entry.central_header_size
        self.label_rows += label_row
        self.index_rows += index_row
        self.messages += message

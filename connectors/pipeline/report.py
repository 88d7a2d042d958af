"""``FILE.report.csv`` and ``FILE.summary.json``: what the administrator checks after an export.

report.csv has one row per source message (exported, failed or skipped) plus one row per
folder that could not be read, columns ``REPORT_COLUMNS``; after the documented ones, ``entry``
(the ZIP entry name), ``archive`` (the key of the archive file holding the message: with a
split archive, its volume), then what the archive records about the message, spelt as in the
ZIP index (``connectors.archives.metadata``): ``flags``, ``labels``, ``internal_date``. Rows are streamed into a temp file, never held in memory.

Cells that a spreadsheet would run as a formula (starting with = + - @ or a tab) get a
leading apostrophe: subjects and addresses come from strangers' mail (CSV injection).

Invariant checked by ``FolderStats.reconciles``: source count = exported + failed + skipped.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

from connectors.archives import metadata
from connectors.pipeline.ledger import EXPORTED, FAILED, MESSAGE, SKIPPED, EntryRecord

REPORT_COLUMNS = ["folder", "source_id", "message_id", "date", "from", "to", "subject", "size",
                  "sha256", "status", "error", "entry", "archive", "flags", "labels", "internal_date"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class FolderStats:
    folder: str
    source_count: int = 0
    exported: int = 0
    failed: int = 0
    skipped: int = 0
    bytes: int = 0  # message bytes exported (as served by the source)
    error: str = ""  # the folder itself could not be read

    @property
    def reconciles(self) -> bool:
        return self.source_count == self.exported + self.failed + self.skipped

    def add(self, record: EntryRecord) -> None:
        if record.kind != MESSAGE:
            return
        if record.status == EXPORTED:
            self.exported += 1
            self.bytes += record.size
        elif record.status == FAILED:
            self.failed += 1
        elif record.status == SKIPPED:
            self.skipped += 1


@dataclass
class FolderError:
    folder: str
    error: str


@dataclass
class ArchiveFile:
    key: str
    size: int


@dataclass
class Totals:
    source_count: int = 0
    exported: int = 0
    failed: int = 0
    skipped: int = 0
    bytes: int = 0
    folders: int = 0
    folders_failed: int = 0

    @classmethod
    def of(cls, folders: Iterable[FolderStats]) -> Totals:
        t = cls()
        for f in folders:
            t.folders += 1
            t.folders_failed += bool(f.error)
            t.source_count += f.source_count
            t.exported += f.exported
            t.failed += f.failed
            t.skipped += f.skipped
            t.bytes += f.bytes
        return t


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_report(records: Iterable[EntryRecord], folder_errors: Iterable[FolderError],
                 out: BinaryIO, archive_keys: Mapping[int, str] | None = None,
                 status_names: Mapping[str, str] | None = None) -> int:
    """Write report.csv (UTF-8 with BOM so spreadsheets detect it) to ``out``; return the row count.

    ``archive_keys`` maps a record's ``volume`` to its archive's key (exported messages only);
    ``status_names`` renames statuses in the file (a restore's "exported" is "restored").
    """
    archive_keys = archive_keys or {}
    status_names = status_names or {}
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(REPORT_COLUMNS)
    rows = 0
    for r in records:
        if r.kind != MESSAGE:
            continue
        writer.writerow([_cell(v) for v in (
            r.folder, r.source_id, r.message_id, r.date, r.from_, r.to, r.subject, r.size,
            r.sha256, status_names.get(r.status, r.status), r.error, r.name,
            archive_keys.get(r.volume, "") if r.status == EXPORTED else "",
            metadata.flags_text(r.imap_flags), metadata.labels_text(r.labels),
            r.internal_date)])
        rows += 1
    for fe in folder_errors:
        writer.writerow([_cell(fe.folder), "", "", "", "", "", "", "", "", FAILED,
                         _cell(f"folder could not be read: {fe.error}"), "", "", "", "", ""])
        rows += 1
    text.flush()
    text.detach()
    return rows


@dataclass
class Summary:
    """summary.json's content (``to_json``); built by the engine from its ExportResult."""

    file: str
    format: str
    state: str
    error: str = ""
    folders: list[FolderStats] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    timings: dict = field(default_factory=dict)
    archives: list[ArchiveFile] = field(default_factory=list)
    report_key: str = ""
    source: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)  # a series run: series, parent archive, cursor

    def to_dict(self) -> dict:
        data = asdict(self)
        if not self.series:
            data.pop("series")
        data["reconciled"] = all(f.reconciles for f in self.folders)
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2).encode("utf-8")


def labels_manifest(records: Iterable[EntryRecord], out: BinaryIO) -> int:
    """``labels.csv`` for Gmail: entry, folder, source_id, labels (a JSON list). Returns rows."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(["entry", "folder", "source_id", "labels"])
    rows = 0
    for r in records:
        if r.kind == MESSAGE and r.status == EXPORTED and r.labels:
            writer.writerow([r.name, r.folder, r.source_id,
                             json.dumps(list(r.labels), ensure_ascii=False)])
            rows += 1
    text.flush()
    text.detach()
    return rows



def index_manifest(records: Iterable[EntryRecord], out: BinaryIO) -> int:
    """A volume's ``index.csv`` (``connectors.archives.metadata``): one row per exported message
    of ``records``, in archive order. Returns rows."""
    index = metadata.IndexWriter(out)
    for r in records:
        if r.kind == MESSAGE and r.status == EXPORTED:
            index.add(metadata.index_row(r.name, r.folder, r.source_id, r.message_id, r.internal_date,
                                         r.imap_flags, r.labels, r.size, r.sha256))
    index.close()
    return index.rows

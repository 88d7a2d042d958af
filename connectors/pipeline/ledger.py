"""What an export remembers between runs: the Ledger protocol, its records, and two ledgers.

The portal implements ``Ledger`` on its database (one MigrationRequest's checkpoint); tests and
the benchmark use ``MemoryLedger`` and the file-backed ``SqliteLedger`` (which survives a
SIGKILL of the process using it).

Exactly-once rests on one rule: ``commit_part`` stores a part *and* the records of everything
whose bytes are in it in ONE transaction, parts in order. A resumed export trusts only what
was committed: committed source ids are skipped, committed parts are kept, and the ZIP
central directory is rebuilt from committed records; everything else is produced again.

Split ZIP exports (``FILE.part001.zip``, ``FILE.part002.zip``...) keep ONE upload in progress
at a time, the current volume's: ``begin_volume`` records the completed volume (its final key
and size) and the next volume's upload in one transaction, forgets the finished volume's parts
and keeps every record. Records carry their ``volume``; their offsets are within that volume.

The archive a committed export left in the bucket outlives the export (``reset``, a new
``begin_upload``): ``archive_keys`` and the pending ``Publication`` are what a later export of
the same request may replace or delete, and nothing else (``connectors.pipeline.archivekeys``).

Threading: the engine calls every Ledger method from the thread that called ``run_backup``
(database connections are per thread in Django).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol, runtime_checkable

# EntryRecord.kind
MESSAGE, DIRECTORY, MANIFEST = "message", "directory", "manifest"
# EntryRecord.status (messages)
EXPORTED, FAILED, SKIPPED = "exported", "failed", "skipped"


@dataclass
class EntryRecord:
    """One committed fact about the archive.

    kind "message": a source message — status "exported" (its bytes are the ZIP entry ``name``),
    "failed" or "skipped" (no bytes; ``error`` says why). kind "directory": a folder's directory
    entry (``source_id`` ""). kind "manifest": a file the engine adds (``labels.csv``).
    ZIP fields (name .. flags) are what the central directory needs; for PST they stay 0
    (``flags`` there is the ZIP general-purpose bit flag). What the archive records about the
    message itself (``connectors.archives.metadata``): ``imap_flags`` (IMAP flags and keywords as
    the source served them), ``labels`` (Gmail), ``internal_date`` (ISO 8601 with offset, "" when
    the source gave none) — a ZIP's index and entry timestamps are rebuilt from them on resume.
    """

    kind: str
    folder: str
    source_id: str = ""
    status: str = EXPORTED
    # archive entry
    name: str = ""
    offset: int = 0
    crc32: int = 0
    compressed_size: int = 0
    size: int = 0  # bytes of the message as served (uncompressed)
    method: int = 0
    dos_time: int = 0
    dos_date: int = 0
    flags: int = 0
    volume: int = 1  # archive file number (PST parts, ZIP volumes); offset is within it
    # report
    sequence: int = 0  # per-folder NNNNNN of the entry name
    message_id: str = ""
    date: str = ""
    from_: str = ""
    to: str = ""
    subject: str = ""
    sha256: str = ""
    error: str = ""
    labels: tuple[str, ...] = ()
    imap_flags: tuple[str, ...] = ()
    internal_date: str = ""


@dataclass(frozen=True)
class PartRecord:
    """One uploaded part of the archive's multipart upload."""

    number: int
    etag: str
    size: int
    final: bool = False  # holds the central directory: the archive (volume) is fully uploaded
    next_volume: bool = False  # a final part whose volume is full: another volume follows


@dataclass(frozen=True)
class Volume:
    """A completed file of a split archive, under its final key."""

    number: int
    key: str
    size: int
    parts: int = 0


@dataclass
class UploadState:
    """The multipart upload in progress (or just completed) for this export: the current
    volume's (``volume``), after the completed ``volumes`` of a split archive."""

    key: str
    upload_id: str
    format: str
    parts: list[PartRecord] = field(default_factory=list)
    archive_complete: bool = False
    archive_size: int = 0
    archive_etag: str = ""
    volume: int = 1
    volumes: list[Volume] = field(default_factory=list)


@dataclass(frozen=True)
class Move:
    """A staged file (``source``) to put in place under its final key (``target``)."""

    source: str
    target: str
    size: int


@dataclass
class Publication:
    """What remains of a commit (``connectors.pipeline.archivekeys``): staged files to move into place,
    then the previous archive's keys the new one does not reuse, to delete."""

    moves: list[Move] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.moves or self.stale)

    def to_json(self) -> dict:
        return {"moves": [[m.source, m.target, m.size] for m in self.moves], "stale": list(self.stale)}

    @classmethod
    def from_json(cls, data: dict | None) -> Publication | None:
        if not data:
            return None
        return cls([Move(*m) for m in data.get("moves", [])], list(data.get("stale", [])))



@dataclass
class Progress:
    """Counters for the UI, reported at most about once a second."""

    phase: str = "listing"  # listing | transferring | finishing
    folders_total: int = 0
    folders_done: int = 0
    messages_total: int = 0
    messages_done: int = 0  # exported + failed + skipped, including earlier runs
    messages_failed: int = 0
    messages_skipped: int = 0
    bytes_done: int = 0  # message bytes read from the source in this run
    archive_bytes: int = 0  # archive bytes committed
    current_folder: str = ""
    # Per folder, for the report page while the run goes on. Filled once per folder or per report,
    # never per message: the source count found by listing, and [exported, failed, skipped, bytes]
    # of messages this run handled whose records the ledger does not hold yet (a PST export keeps
    # its records until the end; a ZIP export's reach the ledger with each part, so it leaves this empty).
    folder_counts: dict[str, int] = field(default_factory=dict)
    folder_outcomes: dict[str, list[int]] = field(default_factory=dict)


@runtime_checkable
class Ledger(Protocol):
    def load_upload(self) -> UploadState | None:
        """The recorded upload with its committed parts (in order), or None."""

    def begin_upload(self, key: str, upload_id: str, format: str) -> None:
        """Record a new multipart upload of volume 1 (no parts, no records, no volumes yet)."""

    def begin_volume(self, done: Volume, key: str, upload_id: str) -> None:
        """The current volume is complete (stored as ``done``): remember it, forget its parts,
        keep all records, and record the upload of volume ``done.number + 1`` (no parts yet)."""

    def commit_part(self, part: PartRecord, records: Sequence[EntryRecord]) -> None:
        """Atomically store ``part`` and ``records``; called for part N only after N-1."""

    def commit_records(self, records: Iterable[EntryRecord]) -> None:
        """Atomically store ``records``, which belong to no part: an engine that uploads whole
        files (PST) commits every record once all its files are complete."""

    def mark_archive_complete(self, size: int, etag: str) -> None:
        """CompleteMultipartUpload succeeded: the archive object exists."""

    def reset(self) -> None:
        """Forget the upload, its parts and all records (failed/cancelled export, fresh start).
        Keeps ``archive_keys`` and the pending publication: they outlive every export."""

    def archive_keys(self) -> list[str]:
        """Final keys of the archive this ledger's last committed export left in the bucket
        ([] before the first commit): the only earlier files a later export may replace or delete."""

    def commit_archive(self, keys: Sequence[str], publication: Publication | None) -> None:
        """Atomically: ``keys`` become ``archive_keys`` and ``publication`` the pending one."""

    def publication(self) -> Publication | None:
        """The commit's publication not yet carried out in full, or None."""

    def publication_done(self, remaining: Publication | None) -> None:
        """Record what is left of the pending publication (None: all of it is done)."""

    def committed_source_ids(self, folder: str) -> set[str]:
        """Source ids of every committed record of ``folder`` ("" marks its directory entry)."""

    def last_sequence(self, folder: str) -> int:
        """Highest committed entry sequence number in ``folder`` (0 if none)."""

    def iter_records(self, volume: int | None = None) -> Iterator[EntryRecord]:
        """Every committed record (of ``volume`` only, if given), in commit order."""

    def report_progress(self, progress: Progress) -> None:
        """Store the latest counters (the UI polls them)."""

    def cancel_requested(self) -> bool:
        """True once the user asked to cancel; the engine aborts the upload and stops."""


class MemoryLedger:
    """In-process ledger (tests, one-shot CLI use). Lost with the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.upload: UploadState | None = None
        self.records: list[EntryRecord] = []
        self.progress: Progress | None = None
        self.progress_reports = 0
        self.cancel = False
        self.commits = 0
        self.archives: list[str] = []
        self.pending: Publication | None = None

    def load_upload(self) -> UploadState | None:
        with self._lock:
            if self.upload is None:
                return None
            u = self.upload
            return UploadState(u.key, u.upload_id, u.format, list(u.parts), u.archive_complete,
                               u.archive_size, u.archive_etag, u.volume, list(u.volumes))

    def begin_upload(self, key: str, upload_id: str, format: str) -> None:
        with self._lock:
            self.upload = UploadState(key, upload_id, format)
            self.records = []

    def commit_part(self, part: PartRecord, records: Sequence[EntryRecord]) -> None:
        with self._lock:
            assert self.upload is not None, "commit_part before begin_upload"
            expected = (self.upload.parts[-1].number + 1) if self.upload.parts else 1
            if part.number != expected:
                raise ValueError(f"part {part.number} committed out of order (expected {expected})")
            self.upload.parts.append(part)
            self.records.extend(records)
            self.commits += 1

    def commit_records(self, records: Iterable[EntryRecord]) -> None:
        records = list(records)
        with self._lock:
            self.records.extend(records)
            self.commits += 1

    def begin_volume(self, done: Volume, key: str, upload_id: str) -> None:
        with self._lock:
            if self.upload is None or done.number != self.upload.volume:
                raise ValueError(f"volume {done.number} is not the current volume")
            self.upload = UploadState(key, upload_id, self.upload.format, volume=done.number + 1,
                                      volumes=[*self.upload.volumes, done])

    def mark_archive_complete(self, size: int, etag: str) -> None:
        with self._lock:
            assert self.upload is not None
            self.upload.archive_complete, self.upload.archive_size = True, size
            self.upload.archive_etag = etag

    def reset(self) -> None:
        with self._lock:
            self.upload, self.records = None, []

    def archive_keys(self) -> list[str]:
        with self._lock:
            return list(self.archives)

    def commit_archive(self, keys: Sequence[str], publication: Publication | None) -> None:
        with self._lock:
            self.archives, self.pending = list(keys), publication

    def publication(self) -> Publication | None:
        with self._lock:
            return self.pending

    def publication_done(self, remaining: Publication | None) -> None:
        with self._lock:
            self.pending = remaining

    def committed_source_ids(self, folder: str) -> set[str]:
        with self._lock:
            return {r.source_id for r in self.records if r.folder == folder and r.kind != MANIFEST}

    def last_sequence(self, folder: str) -> int:
        with self._lock:
            return max((r.sequence for r in self.records if r.folder == folder), default=0)

    def iter_records(self, volume: int | None = None) -> Iterator[EntryRecord]:
        with self._lock:
            snapshot = [r for r in self.records if volume is None or r.volume == volume]
        return iter(snapshot)

    def report_progress(self, progress: Progress) -> None:
        self.progress = progress
        self.progress_reports += 1

    def cancel_requested(self) -> bool:
        return self.cancel


_RECORD_FIELDS = [f.name for f in fields(EntryRecord)]
_COLUMNS = ", ".join(f'"{name}"' for name in _RECORD_FIELDS)


class SqliteLedger:
    """A ledger in one SQLite file: survives SIGKILL (each commit is one fsynced transaction).

    ``request_cancel()`` may be called from any process holding the same path.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        columns = ", ".join(f'"{name}" {"INTEGER" if name in _INT_FIELDS else "TEXT"}'
                            for name in _RECORD_FIELDS)
        self._db.executescript(f"""
            CREATE TABLE IF NOT EXISTS upload (id INTEGER PRIMARY KEY CHECK (id = 1), key TEXT,
                upload_id TEXT, format TEXT, archive_complete INTEGER DEFAULT 0,
                archive_size INTEGER DEFAULT 0, archive_etag TEXT DEFAULT '',
                volume INTEGER DEFAULT 1);
            CREATE TABLE IF NOT EXISTS parts (number INTEGER PRIMARY KEY, etag TEXT, size INTEGER,
                final INTEGER, next_volume INTEGER DEFAULT 0);
            CREATE TABLE IF NOT EXISTS volumes (number INTEGER PRIMARY KEY, key TEXT, size INTEGER,
                parts INTEGER);
            CREATE TABLE IF NOT EXISTS records (pos INTEGER PRIMARY KEY AUTOINCREMENT,
                part INTEGER, {columns});
            CREATE INDEX IF NOT EXISTS records_folder ON records (folder, source_id);
            CREATE INDEX IF NOT EXISTS records_volume ON records (volume);
            CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT);
        """)
        self.commits = 0

    def close(self) -> None:
        self._db.close()

    def _tx(self):
        return _Transaction(self._db)

    def load_upload(self) -> UploadState | None:
        row = self._db.execute("SELECT key, upload_id, format, archive_complete, archive_size, "
                               "archive_etag, volume FROM upload WHERE id = 1").fetchone()
        if row is None:
            return None
        parts = [PartRecord(n, e, s, bool(f), bool(nv)) for n, e, s, f, nv in self._db.execute(
            "SELECT number, etag, size, final, next_volume FROM parts ORDER BY number")]
        volumes = [Volume(*v) for v in self._db.execute(
            "SELECT number, key, size, parts FROM volumes ORDER BY number")]
        return UploadState(row[0], row[1], row[2], parts, bool(row[3]), row[4], row[5], row[6], volumes)

    def begin_upload(self, key: str, upload_id: str, format: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM parts")
            db.execute("DELETE FROM records")
            db.execute("DELETE FROM volumes")
            db.execute("INSERT OR REPLACE INTO upload (id, key, upload_id, format) VALUES (1, ?, ?, ?)",
                       (key, upload_id, format))

    def commit_part(self, part: PartRecord, records: Sequence[EntryRecord]) -> None:
        placeholders = ", ".join("?" for _ in range(len(_RECORD_FIELDS) + 1))
        with self._tx() as db:
            last = db.execute("SELECT COALESCE(MAX(number), 0) FROM parts").fetchone()[0]
            if part.number != last + 1:
                raise ValueError(f"part {part.number} committed out of order (expected {last + 1})")
            db.execute("INSERT INTO parts (number, etag, size, final, next_volume) VALUES (?, ?, ?, ?, ?)",
                       (part.number, part.etag, part.size, int(part.final), int(part.next_volume)))
            db.executemany(
                f"INSERT INTO records (part, {_COLUMNS}) VALUES ({placeholders})",
                [(part.number, *_record_row(r)) for r in records])
        self.commits += 1

    def commit_records(self, records: Iterable[EntryRecord]) -> None:
        placeholders = ", ".join("?" for _ in range(len(_RECORD_FIELDS) + 1))
        with self._tx() as db:
            db.executemany(f"INSERT INTO records (part, {_COLUMNS}) VALUES ({placeholders})",
                           ((0, *_record_row(r)) for r in records))
        self.commits += 1

    def begin_volume(self, done: Volume, key: str, upload_id: str) -> None:
        with self._tx() as db:
            current = db.execute("SELECT volume FROM upload WHERE id = 1").fetchone()
            if current is None or current[0] != done.number:
                raise ValueError(f"volume {done.number} is not the current volume")
            db.execute("INSERT INTO volumes (number, key, size, parts) VALUES (?, ?, ?, ?)",
                       (done.number, done.key, done.size, done.parts))
            db.execute("DELETE FROM parts")
            db.execute("UPDATE upload SET key = ?, upload_id = ?, volume = ?, archive_complete = 0, "
                       "archive_size = 0, archive_etag = '' WHERE id = 1", (key, upload_id, done.number + 1))

    def mark_archive_complete(self, size: int, etag: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE upload SET archive_complete = 1, archive_size = ?, archive_etag = ? "
                       "WHERE id = 1", (size, etag))

    def reset(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM upload")
            db.execute("DELETE FROM parts")
            db.execute("DELETE FROM records")
            db.execute("DELETE FROM volumes")

    def _state(self, name: str):
        row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def archive_keys(self) -> list[str]:
        return self._state("archives") or []

    def commit_archive(self, keys: Sequence[str], publication: Publication | None) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO state (name, value) VALUES ('archives', ?)", (json.dumps(list(keys)),))
            db.execute("INSERT OR REPLACE INTO state (name, value) VALUES ('publication', ?)",
                       (json.dumps(publication.to_json() if publication else None),))

    def publication(self) -> Publication | None:
        return Publication.from_json(self._state("publication"))

    def publication_done(self, remaining: Publication | None) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO state (name, value) VALUES ('publication', ?)",
                       (json.dumps(remaining.to_json() if remaining else None),))

    def committed_source_ids(self, folder: str) -> set[str]:
        return {row[0] for row in self._db.execute(
            "SELECT source_id FROM records WHERE folder = ? AND kind != ?", (folder, MANIFEST))}

    def last_sequence(self, folder: str) -> int:
        return self._db.execute("SELECT COALESCE(MAX(sequence), 0) FROM records WHERE folder = ?",
                                (folder,)).fetchone()[0]

    def iter_records(self, volume: int | None = None) -> Iterator[EntryRecord]:
        cursor = self._db.cursor()  # a separate cursor streams rows without loading them all
        if volume is None:
            cursor.execute(f"SELECT {_COLUMNS} FROM records ORDER BY pos")
        else:
            cursor.execute(f"SELECT {_COLUMNS} FROM records WHERE volume = ? ORDER BY pos", (volume,))
        for row in cursor:
            yield _record_from_row(row)

    def report_progress(self, progress: Progress) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO state (name, value) VALUES ('progress', ?)",
                       (json.dumps(asdict(progress)),))

    def load_progress(self) -> Progress | None:
        row = self._db.execute("SELECT value FROM state WHERE name = 'progress'").fetchone()
        return Progress(**json.loads(row[0])) if row else None

    def request_cancel(self) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO state (name, value) VALUES ('cancel', '1')")

    def cancel_requested(self) -> bool:
        row = self._db.execute("SELECT value FROM state WHERE name = 'cancel'").fetchone()
        return bool(row and row[0] == "1")


_INT_FIELDS = {"offset", "crc32", "compressed_size", "size", "method", "dos_time", "dos_date",
               "flags", "volume", "sequence"}


_LIST_FIELDS = ("labels", "imap_flags")


def _record_row(record: EntryRecord) -> tuple:
    values = []
    for name in _RECORD_FIELDS:
        value = getattr(record, name)
        values.append(json.dumps(list(value), ensure_ascii=False) if name in _LIST_FIELDS else value)
    return tuple(values)


def _record_from_row(row: Sequence) -> EntryRecord:
    data = dict(zip(_RECORD_FIELDS, row, strict=True))
    for name in _LIST_FIELDS:
        data[name] = tuple(json.loads(data[name] or "[]"))
    data["internal_date"] = data["internal_date"] or ""
    return EntryRecord(**data)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")

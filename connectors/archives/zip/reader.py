"""Reading a ZIP archive in the bucket back: restore's ``ArchiveReader`` and the "Browse archive" API.

A ZIP is read where it lies, with ranged GETs (``connectors.storage.s3.ranged``): the end
records, then the central directory (parsed header by header, ``directory``), then the
volume's ``index.csv`` (``index``) row by row alongside each entry's bytes, in archive order —
stored, or deflated and inflated as they stream in. Memory holds one directory record, one
index row and one message at a time (flat with the number of messages), never the archive.

What an archive is, from the key a user gives (``resolve_volumes``, i.e.
``connectors.archives.keys.resolve``): ``FILE.zip``; a split archive's first volume
``FILE.part001.zip`` or its base name ``FILE`` (volumes found by listing the prefix, all of
001..N required); every run of an incremental series by its base name; any other ZIP object
(a foreign one). A caller that resolved the key already passes the volumes' keys (``keys``).

What each message is (the archive-metadata contract, ``/work`` docs): its index row when the
volume has one (folder, source id, Message-ID, internal date, flags, labels, size, SHA-256);
without one (older and foreign archives) the folder is the entry's directory (an entry at the
root goes to INBOX), flags none, and the internal date the ``Date:`` header's, else the entry's
timestamp (UT extra field, else DOS time).

Invariants:
- every selected entry ending ``.eml`` gives exactly one ``ArchivedMessage`` or one
  ``ArchiveFailure`` (damaged data, CRC or size mismatch, bytes not matching the recorded
  SHA-256, encryption, an unknown compression method): nothing is dropped silently and nothing
  damaged is handed on as if it were good;
- any other file entry gives a skipped ``ArchiveFailure`` naming why; directory entries and the
  reserved metadata entries (``index*.csv``, ``labels*.csv``) give nothing;
- ``ArchivedMessage.entry`` is ``VOLUME_KEY!ENTRY_NAME``, stable across reads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from connectors import mimeinfo
from connectors.archives import ArchivedMessage, ArchiveFailure, ArchiveReader, Selection
from connectors.archives.keys import ArchiveNotFound, Volume, resolve  # noqa: F401 - ArchiveNotFound: re-exported
from connectors.archives.zip import index as zindex
from connectors.archives.zip.directory import (
    LOCAL_FIXED,
    TAIL_BYTES,
    CentralEntry,
    ZipFormatError,
    central_entries,
    data_offset,
    find_end,
)
from connectors.storage.s3.ranged import READ_AHEAD, RangedObject

STORED, DEFLATED = 0, 8
ROOT_FOLDER = "INBOX"
INDEX_CHUNK = 256 * 1024  # the index is read alongside the messages: small GETs, small inflate outputs


def resolve_volumes(client, bucket: str, key: str) -> list[Volume]:
    """The archive's volumes, in order, from a key as a user gives it (``connectors.archives.keys``)."""
    return resolve(client, bucket, key, "zip")


def folder_of(name: str) -> str:
    """The folder an index-less entry belongs to: its directory, '/' between levels; INBOX at the root."""
    levels = [p for p in name.replace("\\", "/").split("/")[:-1] if p not in ("", ".", "..")]
    return "/".join(levels) or ROOT_FOLDER


def subject_of(name: str) -> str:
    """The subject part of a LegacyFlo entry name (``000012_Hello_world.eml`` → ``Hello_world``)."""
    stem = name.rsplit("/", 1)[-1]
    stem = stem[:-4] if stem.lower().endswith(".eml") else stem
    head, sep, rest = stem.partition("_")
    return rest if sep and head.isdigit() else stem


def _skip_reason(entry: CentralEntry) -> str | None:
    """Why a file entry is not a message (None when it is one)."""
    name = entry.name
    if name.startswith("__MACOSX/") or name.rsplit("/", 1)[-1].startswith("._"):
        return "macOS resource fork, not a message"
    if not name.lower().endswith(".eml"):
        return "not an .eml message file"
    return None


class DamagedEntry(Exception):
    pass


class ZipVolume:
    """One ZIP file in the bucket: its end records, its directory and index streamed on demand,
    and each entry's bytes. Holds only the metadata entries' records, never one per message."""

    def __init__(self, client, bucket: str, volume: Volume, *, read_ahead: int = READ_AHEAD) -> None:
        self.key = volume.key
        self.obj = RangedObject(client, bucket, volume.key, size=volume.size, read_ahead=read_ahead)
        size = self.obj.size
        tail_start = max(0, size - TAIL_BYTES)
        tail = self.obj.read_at(tail_start, size - tail_start)
        self.end = find_end(tail, size, self.obj.read_at)
        self.metadata = [e for e in self.directory() if not e.is_dir and zindex.is_metadata(e.name)]
        self.has_index = any(zindex.is_index(e.name) for e in self.metadata)

    def directory(self) -> Iterator[CentralEntry]:
        """The central directory's records, in directory order (= archive order for LegacyFlo's
        ZIPs), parsed as they stream in."""
        window = _Window(self.obj, self.end.cd_offset, self.end.cd_size)
        return central_entries(io.BufferedReader(window, buffer_size=max(self.obj.read_ahead, 8192)), self.end)

    def index(self) -> zindex.IndexLookup:
        """A fresh lookup over this volume's index rows (labels.csv's in an older archive without one)."""
        if self.has_index:
            entries, parse = [e for e in self.metadata if zindex.is_index(e.name)], zindex.iter_index
        else:
            entries, parse = [e for e in self.metadata if zindex.is_labels(e.name)], zindex.iter_labels

        def rows():
            for entry in entries:
                try:
                    yield from parse(self.iter_bytes(entry, INDEX_CHUNK, hold_stream=False))
                except DamagedEntry as exc:
                    raise ZipFormatError(f"{self.key}: its {entry.name} is damaged ({exc})") from exc

        return zindex.IndexLookup(rows())

    def find(self, name: str) -> CentralEntry | None:
        for entry in self.directory():
            if entry.name == name:
                return entry
        return None

    def iter_bytes(self, entry: CentralEntry, chunk: int = 1024 * 1024, *, hold_stream: bool = True
                   ) -> Iterator[bytes]:
        """The entry's uncompressed bytes, chunk by chunk; ``DamagedEntry`` (after yielding what
        was good) when they do not inflate, or do not match the directory's size and CRC.

        ``hold_stream`` False reads each chunk with its own GET instead of one streamed GET: for
        an entry read slowly alongside others (the index, row by row as messages go by)."""
        if entry.encrypted:
            raise DamagedEntry("the entry is encrypted")
        if entry.method not in (STORED, DEFLATED):
            raise DamagedEntry(f"compression method {entry.method} is not supported (only stored and deflate)")
        try:
            start = data_offset(entry, self.obj.read_at(entry.offset, LOCAL_FIXED))
        except ZipFormatError as exc:
            raise DamagedEntry(str(exc)) from exc
        if start + entry.compressed_size > self.obj.size:
            raise DamagedEntry("the entry runs past the end of the file")
        n = entry.compressed_size
        if n < self.obj.read_ahead:
            pieces: Iterator[bytes] = iter((self.obj.read_at(start, n),))
        elif hold_stream:
            pieces = self.obj.iter_range(start, n, chunk)
        else:
            pieces = (b"".join(self.obj.iter_range(start + at, min(chunk, n - at))) for at in range(0, n, chunk))
        inflater = zlib.decompressobj(-15) if entry.method == DEFLATED else None
        crc, total = 0, 0
        for piece in pieces:
            for out in _inflate(inflater, piece, chunk) if inflater is not None else (piece,):
                total += len(out)
                if total > entry.size:
                    raise DamagedEntry("the entry holds more bytes than its directory header says")
                crc = zlib.crc32(out, crc)
                if out:
                    yield out
            if inflater is not None and inflater.eof:
                break
        if inflater is not None and not inflater.eof:
            raise DamagedEntry("the compressed data ends early")
        if total != entry.size:
            raise DamagedEntry(f"the entry holds {total} bytes, its directory header says {entry.size}")
        if crc & 0xFFFFFFFF != entry.crc32:
            raise DamagedEntry("the entry's CRC-32 does not match its bytes")

    def read(self, entry: CentralEntry) -> bytes:
        """The entry's bytes, gathered in one buffer (BytesIO hands it over without a copy)."""
        out = io.BytesIO()
        for piece in self.iter_bytes(entry):
            out.write(piece)
        return out.getvalue()


def _inflate(inflater, data: bytes, out_chunk: int = 4 * 1024 * 1024) -> Iterator[bytes]:
    """Inflate ``data`` in outputs of at most ``out_chunk`` bytes (a deflate bomb never
    balloons memory: the caller stops at the directory's size)."""
    while data and not inflater.eof:
        try:
            out = inflater.decompress(data, out_chunk)
        except zlib.error as exc:
            raise DamagedEntry(f"the compressed data is damaged ({exc})") from exc
        data = inflater.unconsumed_tail
        yield out


class _Window(io.RawIOBase):
    """``length`` bytes of a RangedObject from ``start``, as a stream (the central directory)."""

    def __init__(self, obj: RangedObject, start: int, length: int) -> None:
        super().__init__()
        self.obj, self.pos, self.end = obj, start, start + length

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.obj.read_at(self.pos, min(len(b), self.end - self.pos))
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)


@dataclass(frozen=True)
class BrowseEntry:
    """One message as the Browse page lists it (from the directory and index, no message bytes)."""

    id: str  # VOLUME_KEY!ENTRY_NAME, what ``read_entry`` takes
    name: str
    folder: str
    subject: str
    size: int
    date: dt.datetime | None
    flags: tuple[str, ...]
    volume: str


@dataclass
class FolderSummary:
    folder: str
    messages: int = 0
    bytes: int = 0


class ZipArchiveReader(ArchiveReader):
    """Every message of a ZIP archive (one file or split volumes) in the bucket; see the module docstring.

    ``client`` must be the bucket's own client (``connectors.storage.s3.client.make_client``).
    """

    def __init__(self, client, bucket: str, key: str, *, keys: list[str] | None = None,
                 read_ahead: int = READ_AHEAD) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.read_ahead = read_ahead
        # Volumes already resolved (restore): their sizes come from a HEAD when each is opened
        self._volumes: list[Volume] | None = [Volume(k, None) for k in keys] if keys else None

    @property
    def volumes(self) -> list[Volume]:
        if self._volumes is None:
            self._volumes = resolve_volumes(self.client, self.bucket, self.key)
        return self._volumes

    def open_volume(self, volume: Volume) -> ZipVolume:
        try:
            return ZipVolume(self.client, self.bucket, volume, read_ahead=self.read_ahead)
        except ZipFormatError as exc:
            raise ZipFormatError(f"{volume.key}: {exc}") from exc

    # ---- restore -------------------------------------------------------------------------------
    def messages(self, selection: Selection | None = None) -> Iterator[ArchivedMessage | ArchiveFailure]:
        selection = selection or Selection()
        folders = selection.folder_filter()
        for volume in self.volumes:
            zv = self.open_volume(volume)
            index = zv.index()
            for entry in zv.directory():
                if entry.is_dir or zindex.is_metadata(entry.name):
                    continue
                row = index.get(entry.name)
                folder = (row.folder if row and row.folder else "") or folder_of(entry.name)
                if folders and not folders.accepts(folder):
                    continue
                entry_id = f"{volume.key}!{entry.name}"
                reason = _skip_reason(entry)
                if reason is not None:
                    yield ArchiveFailure(folder, entry_id, reason, status="skipped")
                    continue
                if row and row.internal_date and not selection.accepts_date(row.internal_date):
                    continue
                result = self._message(zv, entry, row, folder, entry_id)
                if isinstance(result, ArchivedMessage) and not selection.accepts_date(result.internal_date):
                    continue
                yield result

    def _message(self, zv: ZipVolume, entry: CentralEntry, row: zindex.IndexRow | None, folder: str,
                 entry_id: str) -> ArchivedMessage | ArchiveFailure:
        try:
            raw = zv.read(entry)
        except DamagedEntry as exc:
            return ArchiveFailure(folder, entry_id, f"damaged entry: {exc}")
        digest = hashlib.sha256(raw).hexdigest()
        if row is not None and row.size is not None and row.size != len(raw):
            return ArchiveFailure(folder, entry_id, f"the entry holds {len(raw)} bytes, the archive's "
                                                    f"index recorded {row.size}")
        if row is not None and row.sha256 and row.sha256 != digest:
            return ArchiveFailure(folder, entry_id, "the entry's bytes do not match the SHA-256 the "
                                                    "archive's index recorded")
        info = mimeinfo.extract(raw)
        when = (row.internal_date if row else None) or zindex.parse_date(info.date) or entry.timestamp
        return ArchivedMessage(
            folder=folder, raw=raw, source_id=row.source_id if row else "", internal_date=when,
            flags=row.flags if row else (), labels=row.labels if row else (), sha256=digest,
            entry=entry_id, message_id=(row.message_id if row and row.message_id else info.message_id),
            extra={"volume": zv.key, "name": entry.name, "indexed": bool(row and zv.has_index)})

    # ---- browse --------------------------------------------------------------------------------
    def browse(self, folder: str | None = None) -> Iterator[BrowseEntry]:
        """Every message entry (of ``folder`` only, when given), from the directories and
        indexes alone: no message bytes are read."""
        for volume in self.volumes:
            zv = self.open_volume(volume)
            index = zv.index()
            for entry in zv.directory():
                if entry.is_dir or zindex.is_metadata(entry.name) or _skip_reason(entry):
                    continue
                row = index.get(entry.name)
                path = (row.folder if row and row.folder else "") or folder_of(entry.name)
                if folder is not None and path != folder:
                    continue
                yield BrowseEntry(f"{volume.key}!{entry.name}", entry.name, path, subject_of(entry.name),
                                  entry.size, (row.internal_date if row else None) or entry.timestamp,
                                  row.flags if row else (), volume.key)

    def folders(self) -> list[FolderSummary]:
        """Every folder with its message count and bytes, in archive order; empty folders
        (directory entries without messages) included."""
        out: dict[str, FolderSummary] = {}
        for volume in self.volumes:
            zv = self.open_volume(volume)
            index = zv.index()
            for entry in zv.directory():
                if entry.is_dir:
                    path = entry.name.rstrip("/")
                    if path:
                        out.setdefault(path, FolderSummary(path))
                    continue
                if zindex.is_metadata(entry.name) or _skip_reason(entry):
                    continue
                row = index.get(entry.name)
                path = (row.folder if row and row.folder else "") or folder_of(entry.name)
                summary = out.setdefault(path, FolderSummary(path))
                summary.messages += 1
                summary.bytes += entry.size
        return list(out.values())

    def _locate(self, entry_id: str) -> tuple[ZipVolume, CentralEntry]:
        for volume in self.volumes:
            prefix = volume.key + "!"
            if entry_id.startswith(prefix):
                zv = self.open_volume(volume)
                entry = zv.find(entry_id[len(prefix):])
                if entry is not None and not entry.is_dir:
                    return zv, entry
        raise KeyError(f"no entry {entry_id!r} in this archive")

    def iter_entry(self, entry_id: str) -> Iterator[bytes]:
        """One entry's bytes, streamed (``KeyError`` for an id not in the archive;
        ``DamagedEntry`` when its data is damaged)."""
        zv, entry = self._locate(entry_id)
        return zv.iter_bytes(entry)

    def read_entry(self, entry_id: str) -> bytes:
        return b"".join(self.iter_entry(entry_id))

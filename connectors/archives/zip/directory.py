"""Reading a ZIP's end records and central directory: the reader's pure pieces (APPNOTE 6.3).

Bytes in, records out: ``find_end`` takes the archive's last bytes and returns where the
central directory is (ZIP64 end record and locator followed when a field overflows);
``central_entries`` parses the directory from any binary stream, one header at a time, so
only the records (a few dozen bytes an entry) are kept; ``data_offset`` finds an entry's data
after its local header. Nothing here does I/O of its own.

Invariants: the central directory is the truth about an entry's sizes, CRC and offset (local
headers of streamed ZIPs carry zeros and a data descriptor); values that say "see the ZIP64
extra field" (0xFFFF / 0xFFFFFFFF) are taken from it; a multi-disk ZIP (foreign split ``.z01``
sets) is refused with ``ZipFormatError`` rather than misread.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

U16, U32 = 0xFFFF, 0xFFFFFFFF
EOCD_SIG, EOCD64_SIG, LOCATOR_SIG = 0x06054B50, 0x06064B50, 0x07064B50
CENTRAL_SIG, LOCAL_SIG = 0x02014B50, 0x04034B50
EOCD_SIZE, LOCATOR_SIZE, EOCD64_SIZE = 22, 20, 56
TAIL_BYTES = EOCD_SIZE + U16 + LOCATOR_SIZE + EOCD64_SIZE  # the end records with the longest comment
FLAG_ENCRYPTED, FLAG_UTF8 = 0x0001, 0x0800
EXTRA_ZIP64, EXTRA_UT = 0x0001, 0x5455


class ZipFormatError(ValueError):
    """The bytes are not a ZIP this reader can read; ``str(exc)`` says why, for the user."""


@dataclass(frozen=True)
class EndRecord:
    cd_offset: int
    cd_size: int
    count: int


@dataclass(frozen=True)
class CentralEntry:
    """One central directory header."""

    name: str
    method: int
    flags: int
    crc32: int
    compressed_size: int
    size: int
    offset: int  # of the local header
    dos_time: int
    dos_date: int
    mtime: dt.datetime | None  # the extended-timestamp (UT) extra field's mtime, UTC
    is_dir: bool

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)

    @property
    def dos_datetime(self) -> dt.datetime | None:
        """The DOS timestamp (written in UTC by LegacyFlo; local time of unknown zone by others)."""
        d, t = self.dos_date, self.dos_time
        try:
            return dt.datetime(1980 + (d >> 9), (d >> 5) & 0xF, d & 0x1F, t >> 11, (t >> 5) & 0x3F,
                               min(59, (t & 0x1F) * 2), tzinfo=dt.UTC)
        except ValueError:
            return None

    @property
    def timestamp(self) -> dt.datetime | None:
        """The entry's time: the UT field when present, else the DOS time."""
        return self.mtime or self.dos_datetime


def find_end(tail: bytes, archive_size: int, read_at) -> EndRecord:
    """Where the central directory is, from the archive's last ``len(tail)`` bytes.

    ``read_at(offset, length)`` reads elsewhere in the archive (the ZIP64 end record may sit
    before ``tail``).
    """
    tail_start = archive_size - len(tail)
    at = tail.rfind(struct.pack("<I", EOCD_SIG))
    while at >= 0:  # the signature may occur inside the comment: the real one's comment fits exactly
        if at + EOCD_SIZE <= len(tail):
            comment_len = struct.unpack_from("<H", tail, at + 20)[0]
            if at + EOCD_SIZE + comment_len == len(tail):
                break
        at = tail.rfind(struct.pack("<I", EOCD_SIG), 0, at)
    if at < 0:
        raise ZipFormatError("no end of central directory record: the file is not a ZIP archive, "
                             "or it is truncated")
    (_sig, disk, cd_disk, _n_disk, count, cd_size, cd_offset, _clen) = struct.unpack_from("<IHHHHIIH", tail, at)
    eocd_pos = tail_start + at
    locator_pos = eocd_pos - LOCATOR_SIZE
    locator = b""
    if locator_pos >= 0:
        if locator_pos >= tail_start:
            locator = tail[locator_pos - tail_start:at]
        else:
            locator = read_at(locator_pos, LOCATOR_SIZE)
    if len(locator) == LOCATOR_SIZE and struct.unpack_from("<I", locator)[0] == LOCATOR_SIG:
        _sig, _disk, eocd64_pos, disks = struct.unpack("<IIQI", locator)
        if disks > 1:
            raise ZipFormatError("this ZIP is a multi-disk set (.z01, .z02...): join it into one file first")
        record = read_at(eocd64_pos, EOCD64_SIZE)
        if len(record) < EOCD64_SIZE or struct.unpack_from("<I", record)[0] != EOCD64_SIG:
            raise ZipFormatError("the ZIP64 end of central directory record is missing or damaged")
        (_sig, _rsize, _made, _need, disk, cd_disk, _n_disk, count, cd_size, cd_offset) = \
            struct.unpack("<IQHHIIQQQQ", record)
        end_of_cd = eocd64_pos
    else:
        end_of_cd = eocd_pos
    if disk or cd_disk:
        raise ZipFormatError("this ZIP is part of a multi-disk set (.z01, .z02...): join it into one file first")
    if cd_offset + cd_size > end_of_cd:
        # data before the archive (a self-extractor stub) shifts every offset; we do not guess
        raise ZipFormatError("the central directory's offset points past its end records: damaged ZIP")
    return EndRecord(cd_offset, cd_size, count)


def _extra_fields(extra: bytes) -> Iterator[tuple[int, bytes]]:
    at = 0
    while at + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, at)
        yield tag, extra[at + 4:at + 4 + size]
        at += 4 + size


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ZipFormatError("the central directory is truncated")
    return data


def central_entries(stream: BinaryIO, end: EndRecord) -> Iterator[CentralEntry]:
    """Parse ``end.count`` central directory headers from ``stream`` (positioned at the directory)."""
    for _ in range(end.count):
        fixed = _read_exact(stream, 46)
        (sig, _made, _need, flags, method, dos_time, dos_date, crc, comp, size, name_len, extra_len,
         comment_len, disk, _iattr, eattr, offset) = struct.unpack("<IHHHHHHIIIHHHHHII", fixed)
        if sig != CENTRAL_SIG:
            raise ZipFormatError("the central directory is damaged (bad header signature)")
        raw_name = _read_exact(stream, name_len)
        extra = _read_exact(stream, extra_len)
        _read_exact(stream, comment_len)
        name = raw_name.decode("utf-8", "replace") if flags & FLAG_UTF8 else raw_name.decode("cp437")
        mtime = None
        for tag, body in _extra_fields(extra):
            if tag == EXTRA_ZIP64:
                values = list(struct.unpack_from(f"<{len(body) // 8}Q", body))
                if size == U32 and values:
                    size = values.pop(0)
                if comp == U32 and values:
                    comp = values.pop(0)
                if offset == U32 and values:
                    offset = values.pop(0)
            elif tag == EXTRA_UT and len(body) >= 5 and body[0] & 1:
                stamp = struct.unpack_from("<i", body, 1)[0]
                mtime = dt.datetime.fromtimestamp(stamp, dt.UTC)
        is_dir = name.endswith("/") or bool(eattr & 0x10 and size == 0)
        yield CentralEntry(name, method, flags, crc, comp, size, offset, dos_time, dos_date, mtime, is_dir)


LOCAL_FIXED = 30


def data_offset(entry: CentralEntry, local_fixed: bytes) -> int:
    """Where ``entry``'s data starts, from the first 30 bytes of its local header."""
    if len(local_fixed) < LOCAL_FIXED or struct.unpack_from("<I", local_fixed)[0] != LOCAL_SIG:
        raise ZipFormatError(f"{entry.name}: the local header is missing or damaged")
    name_len, extra_len = struct.unpack_from("<HH", local_fixed, 26)
    return entry.offset + LOCAL_FIXED + name_len + extra_len

"""The ZIP format's pure pieces: what they make is readable by zipfile and unzip, with UTF-8 names
and ZIP64 where needed."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import subprocess
import zipfile

import pytest

from connectors.archives.zip import writer as zipwriter
from connectors.archives.zip.writer import ZipEntry


class ZipOut:
    """The pieces joined in the simplest order: each entry's local header and bytes, then the
    central directory (``close``), written to ``out`` from ``offset`` on."""

    def __init__(self, out, *, level: int = zipwriter.DEFAULT_LEVEL, offset: int = 0) -> None:
        self.out, self.level, self.offset, self.entries = out, level, offset, []

    def add_file(self, name: str, data: bytes, when: dt.datetime | None = None) -> None:
        self._emit(*zipwriter.file_entry(name, self.offset, data, when, self.level))

    def add_directory(self, name: str) -> None:
        self._emit(zipwriter.directory_entry(name, self.offset), b"")

    def _emit(self, entry: ZipEntry, payload: bytes) -> None:
        header = zipwriter.local_header(entry)
        self.out.write(header + payload)
        self.offset += len(header) + len(payload)
        self.entries.append(entry)

    def close(self) -> int:
        """The central directory; the archive's total size."""
        self.offset += zipwriter.central_directory(self.entries, self.offset, self.out)
        return self.offset


def _unzip_test(path, *members: str) -> str:
    if not shutil.which("unzip"):
        return ""
    run = subprocess.run(["unzip", "-tqq", str(path), *members], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    listing = subprocess.run(["unzip", "-lv", str(path)], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    return listing.stdout


def test_entries_round_trip_with_utf8_names_methods_and_dates(tmp_path):
    path = tmp_path / "a.zip"
    with open(path, "wb") as out:
        writer = ZipOut(out)
        writer.add_directory("Leer")
        writer.add_file("INBOX/000001_Grüße 日本語.eml", b"Subject: hi\r\n\r\n" + b"text " * 2000,
                        dt.datetime(2024, 6, 3, 10, 20, 30, tzinfo=dt.UTC))
        writer.add_file("INBOX/000002_random.eml", os.urandom(5000))  # stored: deflate cannot help
        writer.add_file("INBOX/000003_empty.eml", b"")
        size = writer.close()
    assert size == path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        infos = {i.filename: i for i in archive.infolist()}
    assert list(infos) == ["Leer/", "INBOX/000001_Grüße 日本語.eml", "INBOX/000002_random.eml",
                           "INBOX/000003_empty.eml"]
    assert all(i.flag_bits & 0x800 for i in infos.values())
    assert infos["INBOX/000001_Grüße 日本語.eml"].compress_type == zipfile.ZIP_DEFLATED
    assert infos["INBOX/000001_Grüße 日本語.eml"].date_time == (2024, 6, 3, 10, 20, 30)
    assert infos["INBOX/000002_random.eml"].compress_type == zipfile.ZIP_STORED
    assert infos["Leer/"].is_dir() and infos["Leer/"].date_time == (1980, 1, 1, 0, 0, 0)
    _unzip_test(path)


def test_dos_dates_are_clamped_and_utc():
    assert zipwriter.dos_datetime(dt.datetime(1970, 5, 5)) == zipwriter.dos_datetime(dt.datetime(1980, 1, 1))
    t, d = zipwriter.dos_datetime(dt.datetime(2024, 1, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))))
    assert (d >> 9) + 1980 == 2023 and (t >> 11) == 23  # 2023-12-31 23:00 UTC


def test_more_than_65535_entries_use_the_zip64_end_records():
    out = io.BytesIO()
    writer = ZipOut(out)
    for i in range(70_000):
        writer.add_file(f"d/{i}.eml", b"x")
    writer.close()
    data = out.getvalue()
    assert b"PK\x06\x06" in data[-200:] and b"PK\x06\x07" in data[-200:]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert len(archive.infolist()) == 70_000
        assert archive.read("d/69999.eml") == b"x"


def test_offsets_past_4_gib_go_into_zip64_extra_fields():
    """An archive whose entries claim to start past 4 GiB (as if 5 GB of entries preceded them);
    zipfile treats the difference as prepended data and must still find every entry, which
    only works if the 64-bit offsets are where APPNOTE says."""
    out = io.BytesIO()
    writer = ZipOut(out, offset=5_000_000_000)
    writer.add_file("late/1.eml", b"first " * 100)
    writer.add_file("late/2.eml", b"second " * 100)
    writer.close()
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
        assert archive.read("late/2.eml") == b"second " * 100
        assert archive.testzip() is None
    assert zipwriter.central_header(ZipEntry("x", 5_000_000_000, 0, 0, 0, 0, 0, 33)).count(b"\x01\x00\x08\x00") == 1


@pytest.mark.slow
def test_a_real_archive_over_4_gib_passes_zipfile_and_unzip(tmp_path):
    """A 4.1 GiB stored entry (a sparse file of zeros) then a small one past the 4 GiB mark."""
    big = 4 * 1024**3 + 123_456
    zero = bytes(64 * 1024 * 1024)
    crc = 0
    left = big
    while left:
        n = min(left, len(zero))
        crc = zipwriter.crc32_update(zero[:n] if n < len(zero) else zero, crc)
        left -= n
    path = tmp_path / "big.zip"
    entries = []
    with open(path, "wb") as out:
        first = ZipEntry("huge.bin", 0, crc, big, big, zipwriter.STORED, 0, 33)
        out.write(zipwriter.local_header(first))
        out.seek(big, os.SEEK_CUR)
        entries.append(first)
        offset = out.tell()
        second, payload = zipwriter.file_entry("after.eml", offset, b"tail " * 1000, None)
        out.write(zipwriter.local_header(second) + payload)
        entries.append(second)
        zipwriter.central_directory(entries, out.tell(), out)
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("huge.bin").file_size == big
        assert archive.read("after.eml") == b"tail " * 1000
    listing = _unzip_test(path, "after.eml")  # unzip reads the ZIP64 directory, tests one member
    assert str(big) in listing

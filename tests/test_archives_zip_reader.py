"""Reading ZIP archives back from a real S3 server (rclone) with ranged GETs (connectors.archives.zip.reader).

Archives come from the current writer (run_backup on a scripted source), are hand-built with
``zipfile`` per the archive-metadata contract (index.csv / index.partNNN.csv), or are foreign
ZIPs of .eml files; damaged, split and ZIP64 archives included.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import struct
import tracemalloc
import zipfile
from collections import deque

import pytest

from connectors.archives import ArchivedMessage, Selection
from connectors.archives.zip import writer as zipwriter
from connectors.archives.zip.directory import ZipFormatError
from connectors.archives.zip.reader import ArchiveNotFound, ZipArchiveReader, resolve_volumes
from connectors.pipeline.ledger import MemoryLedger
from connectors.pipeline.run import run_backup
from connectors.pipeline.spec import COMPLETED, ExportSpec
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import ScriptedSource, fast_tuning

UTC = dt.UTC


def message(n: int, date: str = "Tue, 05 Mar 2024 10:00:00 +0000", mid: bool = True) -> bytes:
    head = f"Subject: message {n}\r\nDate: {date}\r\n"
    if mid:
        head += f"Message-ID: <{n}@example.com>\r\n"
    return (head + f"\r\nbody {n} " + "x" * (n * 37 % 500) + "\r\n").encode()


def put(s3, key: str, data: bytes) -> None:
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=data)


def index_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, ["entry", "folder", "source_id", "message_id", "internal_date", "flags",
                                  "labels", "size", "sha256"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def build_zip(entries: list[tuple[str, bytes]], *, index: list[dict] | None = None, index_name="index.csv",
              method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
        if index is not None:
            zf.writestr(index_name, index_csv(index))
    return buf.getvalue()


def row(entry: str, folder: str, raw: bytes, **kw) -> dict:
    base = {"entry": entry, "folder": folder, "source_id": kw.pop("source_id", "7:1"), "message_id": "",
            "internal_date": "", "flags": "", "labels": "", "size": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest()}
    base.update(kw)
    return base


def read_all(reader, selection=None):
    messages, failures = [], []
    for item in reader.messages(selection):
        (messages if isinstance(item, ArchivedMessage) else failures).append(item)
    return messages, failures


def test_an_archive_the_backup_wrote_reads_back_byte_for_byte(s3):
    folders = {"INBOX": [(f"1:{n}", message(n), ()) for n in range(1, 40)],
               "Projekte/日本語": [(f"2:{n}", message(100 + n), ("Work", "VIP")) for n in range(5)],
               "Leer": []}
    result = run_backup(ScriptedSource(folders), s3.client(),
                        ExportSpec(bucket=s3.bucket, prefix="x", file_name="alice"), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    reader = ZipArchiveReader(s3.client(), s3.bucket, "x/alice.zip")
    messages, failures = read_all(reader)
    assert failures == []
    got = sorted((m.folder, m.raw) for m in messages)
    want = sorted((folder, raw) for folder, items in folders.items() for _sid, raw, _ in items)
    assert got == want
    assert all(m.entry.startswith("x/alice.zip!") for m in messages)
    assert {m.message_id for m in messages if m.folder == "INBOX"} == {f"<{n}@example.com>" for n in range(1, 40)}
    assert {m.labels for m in messages if m.folder != "INBOX"} == {("Work", "VIP")}  # labels.csv of older archives
    assert {f.folder: f.messages for f in reader.folders()} == {"INBOX": 39, "Projekte/日本語": 5,
                                                                "Leer": 0}
    # the same archive by its base name
    assert [v.key for v in resolve_volumes(s3.client(), s3.bucket, "x/alice")] == ["x/alice.zip"]


def test_index_csv_gives_folder_flags_labels_dates_and_source_ids(s3):
    a, b, c = message(1), message(2, mid=False), message(3)
    entries = [("INBOX/000001_message_1.eml", a), ("Sent_1/000001_message_2.eml", b),
               ("INBOX/000002_message_3.eml", c)]
    index = [row(entries[0][0], "INBOX", a, flags="\\Seen \\Flagged $Forwarded", message_id="<1@example.com>",
                 internal_date="2024-03-05T11:22:33+02:00", source_id="42:7"),
             row(entries[1][0], "Sent/1", b, labels="Important;Old stuff", internal_date="2019-01-02T03:04:05+00:00"),
             row(entries[2][0], "INBOX", c)]
    put(s3, "m/a.zip", build_zip(entries, index=index))
    messages, failures = read_all(ZipArchiveReader(s3.client(), s3.bucket, "m/a.zip"))
    assert failures == []
    by_raw = {m.raw: m for m in messages}
    assert by_raw[a].flags == ("\\Seen", "\\Flagged", "$Forwarded")
    assert by_raw[a].internal_date == dt.datetime(2024, 3, 5, 9, 22, 33, tzinfo=UTC)
    assert by_raw[a].source_id == "42:7" and by_raw[a].message_id == "<1@example.com>"
    assert by_raw[b].folder == "Sent/1"  # the index's folder, not the entry's (mapped) directory
    assert by_raw[b].labels == ("Important", "Old stuff") and by_raw[b].message_id == ""
    assert by_raw[c].internal_date == dt.datetime(2024, 3, 5, 10, 0, tzinfo=UTC)  # no date recorded: Date:
    assert by_raw[c].flags == ()
    # selection on the index's folders and dates, before any message bytes are read
    messages, _ = read_all(ZipArchiveReader(s3.client(), s3.bucket, "m/a.zip"),
                           Selection(since=dt.date(2020, 1, 1)))
    assert sorted(m.raw for m in messages) == sorted([a, c])
    messages, _ = read_all(ZipArchiveReader(s3.client(), s3.bucket, "m/a.zip"),
                           Selection(folders=("sent",)))
    assert [m.raw for m in messages] == [b]
    messages, _ = read_all(ZipArchiveReader(s3.client(), s3.bucket, "m/a.zip"),
                           Selection(exclude_folders=("Sent",), before=dt.date(2024, 3, 5)))
    assert messages == []


def test_a_sha256_mismatch_and_a_damaged_entry_are_failures_and_the_rest_is_read(s3):
    good, tampered, damaged = message(1), message(2), message(3) * 50
    entries = [("INBOX/1.eml", good), ("INBOX/2.eml", tampered), ("INBOX/3.eml", damaged)]
    index = [row("INBOX/1.eml", "INBOX", good), row("INBOX/2.eml", "INBOX", b"other bytes", size=len(tampered)),
             row("INBOX/3.eml", "INBOX", damaged)]
    data = bytearray(build_zip(entries, index=index))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("INBOX/3.eml")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 5, start + 15):
        data[i] ^= 0x55  # damage the compressed data in the middle of the entry
    put(s3, "d.zip", bytes(data))
    messages, failures = read_all(ZipArchiveReader(s3.client(), s3.bucket, "d.zip"))
    assert [m.raw for m in messages] == [good]
    assert {f.entry: f.status for f in failures} == {"d.zip!INBOX/2.eml": "failed", "d.zip!INBOX/3.eml": "failed"}
    errors = {f.entry: f.error for f in failures}
    assert "SHA-256" in errors["d.zip!INBOX/2.eml"]
    assert "damaged" in errors["d.zip!INBOX/3.eml"]


def ut_extra(when: dt.datetime) -> bytes:
    return struct.pack("<HHBi", 0x5455, 5, 1, int(when.timestamp()))


def test_a_foreign_zip_of_eml_files(s3):
    dated, undated = message(1), b"Subject: no date\r\n\r\nhello\r\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Mail/Inbox/", b"")
        zf.writestr("Mail/Inbox/one.EML", dated)
        info = zipfile.ZipInfo("Mail/Sent Items/two.eml", date_time=(2011, 6, 7, 8, 9, 10))
        info.extra = ut_extra(dt.datetime(2012, 1, 2, 3, 4, 5, tzinfo=UTC))
        zf.writestr(info, undated, compress_type=zipfile.ZIP_STORED)
        zf.writestr("plain.eml", message(5))
        zf.writestr("Mail/notes.txt", b"not mail")
        zf.writestr("__MACOSX/Mail/Inbox/._one.EML", b"\x00\x05\x16\x07")
    put(s3, "foreign/export.ZIP", buf.getvalue())
    reader = ZipArchiveReader(s3.client(), s3.bucket, "foreign/export.ZIP")
    messages, failures = read_all(reader)
    got = {m.folder: m for m in messages}
    assert set(got) == {"Mail/Inbox", "Mail/Sent Items", "INBOX"}
    assert got["Mail/Inbox"].raw == dated and got["Mail/Inbox"].flags == ()
    assert got["Mail/Inbox"].internal_date == dt.datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
    assert got["Mail/Sent Items"].internal_date == dt.datetime(2012, 1, 2, 3, 4, 5, tzinfo=UTC)  # UT field
    assert {(f.entry.split("!", 1)[1], f.status) for f in failures} == {
        ("Mail/notes.txt", "skipped"), ("__MACOSX/Mail/Inbox/._one.EML", "skipped")}
    assert all(f.error for f in failures)
    listed = {e.folder: e for e in reader.browse()}
    assert listed["Mail/Inbox"].subject == "one" and listed["Mail/Inbox"].size == len(dated)
    assert reader.read_entry(listed["Mail/Sent Items"].id) == undated
    with pytest.raises(KeyError):
        reader.read_entry("foreign/export.ZIP!Mail/notes.tx")


def test_split_volumes_by_first_volume_or_base_name_and_a_missing_volume(s3):
    one, two, three = message(1), message(2), message(3)
    put(s3, "s/u.part001.zip", build_zip([("INBOX/1.eml", one)], index=[row("INBOX/1.eml", "INBOX", one)],
                                         index_name="index.part001.csv"))
    put(s3, "s/u.part002.zip", build_zip([("INBOX/2.eml", two), ("Sent/1.eml", three)],
                                         index=[row("INBOX/2.eml", "INBOX", two, flags="\\Seen"),
                                                row("Sent/1.eml", "Sent", three)],
                                         index_name="index.part002.csv"))
    put(s3, "s/u.report.csv", b"folder\r\n")
    for key in ("s/u", "s/u.part001.zip", "s/u.zip"):
        messages, failures = read_all(ZipArchiveReader(s3.client(), s3.bucket, key))
        assert [m.raw for m in messages] == [one, two, three] and failures == []
        assert [m.entry for m in messages] == ["s/u.part001.zip!INBOX/1.eml", "s/u.part002.zip!INBOX/2.eml",
                                               "s/u.part002.zip!Sent/1.eml"]
        assert messages[1].flags == ("\\Seen",)
    put(s3, "s/u.part004.zip", build_zip([("INBOX/9.eml", one)]))
    with pytest.raises(ArchiveNotFound, match="u.part003.zip missing"):
        resolve_volumes(s3.client(), s3.bucket, "s/u")
    with pytest.raises(ArchiveNotFound, match="No archive"):
        resolve_volumes(s3.client(), s3.bucket, "s/nothing")


def test_a_split_backup_reads_back_across_volumes(s3):
    folders = {"INBOX": [(f"1:{n}", message(n) + os.urandom(3000).hex().encode(), ()) for n in range(30)]}
    result = run_backup(ScriptedSource(folders), s3.client(),
                        ExportSpec(bucket=s3.bucket, prefix="sp", file_name="bob", split_bytes=32 * 1024),
                        MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    assert len(result.archives) > 2
    messages, failures = read_all(ZipArchiveReader(s3.client(), s3.bucket, "sp/bob"))
    assert failures == []
    assert [m.raw for m in messages] == [raw for _sid, raw, _ in folders["INBOX"]]


def forced_zip64_end(count: int, cd_offset: int, cd_size: int) -> bytes:
    """ZIP64 end record + locator, and an end record whose fields all say "see ZIP64" (as when
    more than 65,535 entries or 4 GiB), whatever the real values."""
    zip64_at = cd_offset + cd_size
    return (struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 0x32D, 45, 0, 0, count, count, cd_size, cd_offset)
            + struct.pack("<IIQI", 0x07064B50, 0, zip64_at, 1)
            + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))


def test_zip64_end_records_and_a_large_directory_in_flat_memory(s3):
    out = io.BytesIO()
    entries = []
    rows = []
    count = 20_000
    for n in range(count):
        raw = b"Subject: %d\r\n\r\nx\r\n" % n
        name = f"INBOX/{n:06d}.eml"
        entry, payload = zipwriter.file_entry(name, out.tell(), raw, None)
        out.write(zipwriter.local_header(entry))
        out.write(payload)
        entries.append(entry)
        rows.append(row(name, "Posteingang" if n % 2 else "INBOX", raw, flags="\\Seen"))
    entry, payload = zipwriter.file_entry("index.csv", out.tell(), index_csv(rows), None)
    out.write(zipwriter.local_header(entry))
    out.write(payload)
    entries.append(entry)
    cd_offset = out.tell()
    for entry in entries:
        out.write(zipwriter.central_header(entry))
    out.write(forced_zip64_end(len(entries), cd_offset, out.tell() - cd_offset))
    assert zipfile.ZipFile(io.BytesIO(out.getvalue())).testzip() is None  # valid for zipfile too
    put(s3, "big/many.zip", out.getvalue())
    del out, entries, rows
    reader = ZipArchiveReader(s3.client(), s3.bucket, "big/many.zip")
    tracemalloc.start()
    try:
        counts = {f.folder: f.messages for f in reader.folders()}  # directory and index, streamed
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts == {"INBOX": count // 2, "Posteingang": count // 2}
    assert peak < 3 * 1024 * 1024, peak  # flat: no record per entry is kept (held, 20,000 take ~12 MB)
    last = deque(reader.browse("Posteingang"), maxlen=1)[0]
    assert last.flags == ("\\Seen",) and reader.read_entry(last.id) == b"Subject: %d\r\n\r\nx\r\n" % (count - 1)


def test_zip64_extra_fields_in_the_central_directory_are_followed(s3):
    """A directory header whose sizes and offset say "see the ZIP64 extra field" (as for >4 GiB)."""
    raw = message(1)
    name = b"INBOX/1.eml"
    crc = zipwriter.crc32(raw)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0x800, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                        len(name), 20) + name + struct.pack("<HHQQ", 1, 16, len(raw), len(raw))
    body = b"prefix-junk" + local + raw
    offset = len(b"prefix-junk")
    extra = struct.pack("<HHQQQ", 1, 24, len(raw), len(raw), offset)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x32D, 45, 0x800, 0, 0, 0x21, crc, 0xFFFFFFFF,
                          0xFFFFFFFF, len(name), len(extra), 0, 0, 0, 0o100644 << 16, 0xFFFFFFFF) + name + extra
    data = body + central + zipwriter.end_of_central_directory(1, len(body), len(central))
    put(s3, "z64.zip", data)
    messages, failures = read_all(ZipArchiveReader(s3.client(), s3.bucket, "z64.zip"))
    assert [m.raw for m in messages] == [raw] and failures == []


def test_not_a_zip_is_a_clear_error(s3):
    put(s3, "bad.zip", b"this is not a zip file at all" * 10)
    with pytest.raises(ZipFormatError, match="bad.zip: no end of central directory"):
        list(ZipArchiveReader(s3.client(), s3.bucket, "bad.zip").messages())


def test_a_30_mb_entry_streams_without_holding_the_archive(s3):
    big = b"Subject: big\r\n\r\n" + os.urandom(15 * 1024 * 1024).hex().encode()  # 30 MB, deflates to ~15
    other = os.urandom(20 * 1024 * 1024)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("INBOX/big.eml", big)
        zf.writestr("INBOX/other.eml", other, compress_type=zipfile.ZIP_STORED)
    data = buf.getvalue()
    put(s3, "huge.zip", data)
    del buf, data, other
    reader = ZipArchiveReader(s3.client(), s3.bucket, "huge.zip")
    entry = next(e for e in reader.browse() if e.name == "INBOX/big.eml")
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        for piece in reader.iter_entry(entry.id):
            digest.update(piece)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == hashlib.sha256(big).hexdigest()
    assert peak < 12 * 1024 * 1024, peak  # a few chunks, not the 30 MB entry, not the 50 MB archive

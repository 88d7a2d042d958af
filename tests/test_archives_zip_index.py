"""The ZIP reader's pure pieces: index.csv rows (connectors.archives.zip.index) and end records
(connectors.archives.zip.directory), bytes in and records out."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import pytest

from connectors.archives.zip.directory import TAIL_BYTES, ZipFormatError, central_entries, find_end
from connectors.archives.zip.index import IndexLookup, is_metadata, iter_index, iter_labels


def test_index_rows_survive_a_spreadsheet_round_trip():
    text = ("\ufeffentry,folder,source_id,message_id,internal_date,flags,labels,size,sha256,extra\r\n"
            "a.eml,INBOX,1:2,<m@x>,2024-01-02T03:04:05+01:00,\\Seen  $Label1,A;B,12,ABC,zzz\r\n"
            ",INBOX,,,,,,,\r\n"
            "b.eml,Sent,,,not a date,,,twelve,\r\n")
    chunks = iter([text.encode()[:7], text.encode()[7:50], text.encode()[50:]])  # streamed in pieces
    rows = list(iter_index(chunks))
    assert [r.entry for r in rows] == ["a.eml", "b.eml"]
    a, b = rows
    assert a.internal_date == dt.datetime(2024, 1, 2, 2, 4, 5, tzinfo=dt.UTC)
    assert a.flags == ("\\Seen", "$Label1") and a.labels == ("A", "B") and a.size == 12 and a.sha256 == "abc"
    assert b.internal_date is None and b.size is None and b.flags == ()


def test_older_labels_csv_rows():
    rows = list(iter_labels(b'entry,folder,source_id,labels\r\nx.eml,INBOX,id1,"[""Work"", ""\xc3\xa9t\xc3\xa9""]"\r\n'))
    assert rows[0].labels == ("Work", "été") and rows[0].source_id == "id1"


def test_index_lookup_keeps_only_rows_passed_over():
    rows = list(iter_index(b"entry,folder\r\n1.eml,A\r\n2.eml,B\r\n3.eml,C\r\n"))
    lookup = IndexLookup(rows)
    assert lookup.get("1.eml").folder == "A" and lookup.pending == {}
    assert lookup.get("3.eml").folder == "C" and set(lookup.pending) == {"2.eml"}
    assert lookup.get("2.eml").folder == "B" and lookup.pending == {}
    assert lookup.get("missing.eml") is None


def test_reserved_names():
    assert is_metadata("index.csv") and is_metadata("index.part012.csv") and is_metadata("labels.part001.csv")
    assert not is_metadata("INBOX/index.csv") and not is_metadata("index.csv.eml")


def _zip(comment: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("INBOX/1.eml", b"Subject: x\r\n\r\n")
        zf.comment = comment
    return buf.getvalue()


def test_end_record_found_behind_a_comment_that_holds_its_signature():
    data = _zip(comment=b"PK\x05\x06 fake end record inside the comment")
    tail = data[-TAIL_BYTES:]
    end = find_end(tail, len(data), lambda off, n: data[off:off + n])
    entries = list(central_entries(io.BytesIO(data[end.cd_offset:]), end))
    assert [e.name for e in entries] == ["INBOX/1.eml"] and end.count == 1


def test_truncated_and_multi_disk_zips_are_refused():
    data = _zip()
    with pytest.raises(ZipFormatError, match="not a ZIP archive, or it is truncated"):
        find_end(data[:-30], len(data) - 30, lambda off, n: data[off:off + n])
    multi = bytearray(data)
    multi[-22 + 4:-22 + 6] = (1).to_bytes(2, "little")  # "this is disk 1"
    with pytest.raises(ZipFormatError, match="multi-disk"):
        find_end(bytes(multi), len(multi), lambda off, n: bytes(multi[off:off + n]))

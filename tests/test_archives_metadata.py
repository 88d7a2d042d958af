"""What every archive records per message (issue 13, /work contract "archive metadata"), end to end.

Dovecot holds messages with \\Seen, \\Flagged, \\Answered, $Forwarded and custom keywords at
chosen INTERNALDATEs; the engine backs them up to rclone's S3 as ZIP (one file, split volumes)
and PST; what the archives hold is read back with zipfile, ``zipinfo -v`` (the UT field),
libpff (pypff) and pst-extractor — readers that share no code with the writers.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import random
import re
import shutil
import subprocess
import zipfile

import pytest
from imapclient import IMAPClient

from connectors.archives import metadata
from connectors.pipeline.ledger import MemoryLedger
from connectors.pipeline.run import run_backup
from connectors.pipeline.spec import COMPLETED, ExportSpec
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import (
    INDEX_COLUMNS,
    PASSWORD,
    USER,
    fast_tuning,
    imap_source,
    read_report,
    truth_of,
    ut_mtime,
    verify_export,
)
from tests.pst_corpus import assert_every_reader_opens, read_pst_with_pst_extractor, read_pst_with_pypff

pytestmark = pytest.mark.timeout(300)

PLUS2 = dt.timezone(dt.timedelta(hours=2))
MINUS5 = dt.timezone(dt.timedelta(hours=-5))
# subject -> (folder, flags, INTERNALDATE)
MESSAGES = {
    "seen flagged answered": ("INBOX", ("\\Seen", "\\Flagged", "\\Answered"), dt.datetime(2021, 1, 3, 10, 0, 7, tzinfo=PLUS2)),
    "forwarded with keywords": ("INBOX", ("\\Seen", "$Forwarded", "Projekt_X", "urgent"), dt.datetime(2019, 7, 14, 23, 59, 59, tzinfo=MINUS5)),
    "unread": ("INBOX", (), dt.datetime(2024, 2, 29, 12, 30, 0, tzinfo=dt.UTC)),
    "flagged only": ("Archiv/2020", ("\\Flagged",), dt.datetime(2020, 12, 31, 23, 0, 1, tzinfo=dt.UTC)),
    "before 1980": ("Archiv/2020", ("\\Seen",), dt.datetime(1975, 5, 1, 8, 0, 0, tzinfo=dt.UTC)),
}


def _raw(subject: str, n: int) -> bytes:
    return (f"From: Sender {n} <s{n}@example.com>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <meta-{n}@example.com>\r\nDate: Mon, 1 Jan 2018 00:00:00 +0000\r\n\r\n"
            f"body of {subject}\r\n").encode() + base64.encodebytes(random.Random(n).randbytes(150 * n))


def _fill(dovecot, copies: int = 1) -> dict[str, tuple[str, tuple[str, ...], dt.datetime]]:
    """Append MESSAGES (each ``copies`` times, subjects numbered) with their flags and dates."""
    made = {}
    with IMAPClient("127.0.0.1", dovecot.port, ssl=False) as client:
        client.plain_login(USER, PASSWORD)
        client.create_folder("Archiv")
        client.create_folder("Archiv/2020")
        n = 0
        for copy in range(copies):
            for subject, (folder, flags, when) in MESSAGES.items():
                n += 1
                name = f"{subject} {copy}" if copies > 1 else subject
                client.append(folder, _raw(name, n), flags, when)
                made[name] = (folder, flags, when)
    return made


def _spec(s3, fmt: str = "zip", **kwargs) -> ExportSpec:
    return ExportSpec(bucket=s3.bucket, prefix="meta", file_name="alice", format=fmt, **kwargs)


def _index(archive: zipfile.ZipFile, name: str = "index.csv") -> dict[str, dict]:
    rows = list(csv.DictReader(io.StringIO(archive.read(name).decode("utf-8"))))
    return {row["entry"]: row for row in rows}


def test_zip_index_and_entry_times_hold_flags_keywords_and_internal_dates(dovecot, s3):
    made = _fill(dovecot)
    truth = truth_of(dovecot)
    with imap_source(dovecot) as source:
        result = run_backup(source, s3.client(), _spec(s3), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    verify_export(s3, "meta/alice", truth)  # every message: index row = server's FLAGS, INTERNALDATE
    path = s3.path("meta/alice.zip")
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        assert infos[-1].filename == "index.csv"
        assert archive.read("index.csv").decode().splitlines()[0] == ",".join(INDEX_COLUMNS)
        index = _index(archive)
        report = {r["subject"]: r for r in read_report(s3, "meta/alice.report.csv")}
        assert sorted(index) == sorted(r["entry"] for r in report.values())
        for subject, (folder, flags, when) in made.items():
            row = index[report[subject]["entry"]]
            assert row["folder"] == folder
            assert set(row["flags"].split()) == set(flags), subject
            assert dt.datetime.fromisoformat(row["internal_date"]) == when, subject  # the instant
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", row["internal_date"])
            assert re.fullmatch(r"\d+:\d+", row["source_id"]) and row["labels"] == ""
            assert row["message_id"].startswith("<meta-")
            info = archive.getinfo(row["entry"])
            utc = when.astimezone(dt.UTC)
            if utc.year >= 1980:
                assert info.date_time == (utc.year, utc.month, utc.day, utc.hour, utc.minute,
                                          utc.second // 2 * 2), subject
            else:  # DOS time cannot go before 1980; the UT field can
                assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert ut_mtime(info.extra) == int(when.timestamp()), subject
    for subject, (_folder, flags, when) in made.items():
        assert set(report[subject]["flags"].split()) == set(flags)
        assert dt.datetime.fromisoformat(report[subject]["internal_date"]) == when
        assert report[subject]["labels"] == ""


@pytest.mark.skipif(shutil.which("zipinfo") is None, reason="zipinfo (unzip package) not installed")
def test_zipinfo_reads_the_ut_field_as_the_internal_date(dovecot, s3):
    _fill(dovecot)
    with imap_source(dovecot) as source:
        assert run_backup(source, s3.client(), _spec(s3), MemoryLedger(), fast_tuning()).state == COMPLETED
    out = subprocess.run(["zipinfo", "-v", str(s3.path("meta/alice.zip"))], capture_output=True,
                         text=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"}, check=True).stdout
    blocks = {}
    for block in out.split("Central directory entry #")[1:]:
        name = block.splitlines()[3].strip()  # "1:", dashes, blank, the name
        blocks[name] = block
    flagged = next(b for n, b in blocks.items() if n.endswith("seen flagged answered.eml"))
    # 2021-01-03 10:00:07 +02:00 = 08:00:07 UTC; the DOS time has two-second steps, UT has not
    assert re.search(r"\(UT extra field modtime\): 2021 Jan 0?3 08:00:07 UTC", flagged), flagged
    old = next(b for n, b in blocks.items() if n.endswith("before 1980.eml"))
    assert re.search(r"\(UT extra field modtime\): 1975 May 0?1 08:00:00 UTC", old), old


def test_split_volumes_each_end_with_their_own_index(dovecot, s3):
    made = _fill(dovecot, copies=12)
    truth = truth_of(dovecot)
    split = 24 * 1024
    with imap_source(dovecot) as source:
        result = run_backup(source, s3.client(), _spec(s3, split_bytes=split), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    facts = verify_export(s3, "meta/alice", truth, split_bytes=split)
    assert len(facts["volumes"]) >= 3
    seen = 0
    for number, key in enumerate(facts["volumes"], start=1):
        with zipfile.ZipFile(s3.path(key)) as archive:
            name = f"index.part{number:03d}.csv"
            assert archive.infolist()[-1].filename == name
            index = _index(archive, name)
            messages = [n for n in archive.namelist() if n.endswith(".eml")]
            assert sorted(index) == sorted(messages)  # exactly this volume's messages
            seen += len(index)
    assert seen == len(made)


def test_pst_properties_hold_read_flag_follow_up_last_verb_keywords_and_legacyflo_names(dovecot, s3, tmp_path):
    made = _fill(dovecot)
    with imap_source(dovecot) as source:
        result = run_backup(source, s3.client(), _spec(s3, "pst"), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    pst = tmp_path / "alice.pst"
    pst.write_bytes(s3.path("meta/alice.pst").read_bytes())
    (tmp_path / "readers").mkdir()
    assert_every_reader_opens(pst, tmp_path / "readers", len(made))
    report = {r["subject"]: r for r in read_report(s3, "meta/alice.report.csv")}
    libpff = {m.subject: m for folder in read_pst_with_pypff(pst).values() for m in folder}
    extractor = {m.subject: m for folder in read_pst_with_pst_extractor(pst).values() for m in folder}
    for subject, (folder, flags, when) in made.items():
        read, other = libpff[subject], extractor[subject]
        assert read.folder == other.folder == folder
        assert bool(read.flags & 0x1) == ("\\Seen" in flags) == other.read, subject
        assert read.delivered.replace(tzinfo=dt.UTC) == when.astimezone(dt.UTC) == other.delivered, subject
        props = read.properties
        assert (_long(props.get(0x1090)) == 2) == ("\\Flagged" in flags) == (other.metadata["flag_status"] == 2)
        verb = 102 if "\\Answered" in flags else 104 if "$Forwarded" in flags else None
        assert _long(props.get(0x1081)) == verb, subject
        assert (other.metadata["last_verb"] or None) == verb
        keywords = {f for f in flags if not f.startswith(("\\", "$"))}
        found = other.metadata["keywords"] or []
        assert set(found) == keywords and len(found) == len(keywords), subject
        meta = other.metadata
        assert meta["source_id"] == report[subject]["source_id"] and re.fullmatch(r"\d+:\d+", meta["source_id"])
        assert meta["sha256"] == report[subject]["sha256"]
        assert set(meta["imap_flags"].split()) == set(flags)
        # libpff sees the same named values, at the ids pst-extractor resolved through the map
        strings = {_utf16(v) for t, v in props.values() if t == 0x001F}
        assert {meta["source_id"], meta["sha256"]} <= strings
        multi = [v for t, v in props.values() if t == 0x101F]
        assert multi == ([_multiple_strings(found)] if keywords else [])


def _multiple_strings(values: list[str]) -> bytes:
    """PtypMultipleString as [MS-PST] §2.3.3.4.2 lays it out (written here independently)."""
    encoded = [v.encode("utf-16-le") for v in values]
    offsets, at = [], 4 + 4 * len(encoded)
    for item in encoded:
        offsets.append(at)
        at += len(item)
    return b"".join(x.to_bytes(4, "little") for x in [len(encoded), *offsets]) + b"".join(encoded)


def _long(entry) -> int | None:
    if entry is None or entry[1] is None:
        return None
    return int.from_bytes(entry[1], "little")


def _utf16(data: bytes | None) -> str:
    return (data or b"").decode("utf-16-le")


def test_iso_dates_and_unix_times_follow_the_contract():
    when = dt.datetime(2021, 1, 3, 10, 0, 7, 123456, tzinfo=PLUS2)
    assert metadata.iso_date(when) == "2021-01-03T10:00:07+02:00"
    assert metadata.iso_date(dt.datetime(2021, 1, 3, 10, 0)) == "2021-01-03T10:00:00+00:00"
    assert metadata.iso_date(None) == "" and metadata.unix_time("") is None
    assert metadata.unix_time("2021-01-03T10:00:07+02:00") == int(when.replace(microsecond=0).timestamp())
    assert metadata.unix_time("1969-12-31T00:00:00+00:00") == 0
    assert metadata.unix_time("2200-01-01T00:00:00+00:00") == 0x7FFFFFFF
    assert metadata.split_labels(metadata.labels_text(["Work", "Ünï"])) == ("Work", "Ünï")
    assert metadata.split_flags(metadata.flags_text(["\\Seen", "$Forwarded"])) == ("\\Seen", "$Forwarded")

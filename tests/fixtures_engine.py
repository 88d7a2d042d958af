"""Fixtures and checks shared by the engine's tests (``from tests.fixtures_engine import *``).

Real parts only: Dovecot from tests/servers/dovecot.py, S3 from ``rclone serve s3`` (one per
session, a fresh bucket per test), the mailbox from tests/mailgen.py.

``truth_of(dovecot, user)`` reads every message back through a plain imapclient FETCH — a
code path independent of connectors.sources.imap.client — and ``verify_export`` checks an exported archive
against it: each source message in exactly one entry of one archive file (volume), byte for
byte; every ZIP valid for zipfile and ``unzip -t``; report rows and summary totals reconciled;
each volume's index (``index.csv`` / ``index.partNNN.csv``, its last entry) listing exactly its
messages with the report's folder, source id, SHA-256 and size, the entries' DOS and UT
timestamps at the internal date, and — when the truth knows them (``Truth.meta``, read with
FLAGS and INTERNALDATE) — the flags and internal date the server holds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import datetime as dt
import re
import shutil
import struct
import subprocess
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.model import Folder, Message, MessageFailure
from connectors.pipeline.ledger import MemoryLedger
from connectors.pipeline.spec import Tuning
from connectors.sources import Source
from connectors.storage.s3.client import make_client
from connectors.storage.s3.sink import RetryPolicy
from connectors.storage.s3.target import S3Target
from legacyflo.localservices import start_rclone_s3
from tests.servers.dovecot import DovecotServer

__all__ = ["RecordingLedger", "s3_server", "s3", "dovecot", "S3Env", "Truth", "truth_of", "verify_export",
           "fast_tuning", "multipart_uploads", "bucket_keys", "read_report", "read_summary",
           "archive_keys_of", "iso_date", "ut_mtime", "check_entry_times", "INDEX_COLUMNS",
           "USER", "PASSWORD", "ACCESS_KEY", "SECRET_KEY", "imap_source"]

USER, PASSWORD = "alice", "s3cret-pässword"
ACCESS_KEY, SECRET_KEY = "enginetestaccess01", "enginetestsecret000001"


class RecordingLedger(MemoryLedger):
    """Keeps every progress report, not only the last."""

    def __init__(self) -> None:
        super().__init__()
        self.reports = []

    def report_progress(self, progress) -> None:
        super().report_progress(progress)
        self.reports.append(progress)


class ScriptedSource(Source):
    """Serves fixed messages; ``script`` maps source ids to failures or omissions."""

    def __init__(self, folders: dict[str, list[tuple[str, bytes, tuple[str, ...]]]],
                 script: dict[str, str] | None = None) -> None:
        self.folders, self.script = folders, script or {}

    def list_folders(self):
        return [Folder(path, path) for path in self.folders]

    def list_message_ids(self, folder, *, since=None, before=None):
        return [sid for sid, _raw, _labels in self.folders[folder.path]]

    def fetch_messages(self, folder, ids):
        wanted = set(ids)
        for sid, raw, labels in self.folders[folder.path]:
            if sid not in wanted:
                continue
            action = self.script.get(sid)
            if action == "fail":
                yield MessageFailure(folder.path, sid, "server said NO")
            elif action == "skip":
                yield MessageFailure(folder.path, sid, "deleted meanwhile", status="skipped")
            elif action == "omit":
                continue
            elif action == "twice":
                yield Message(folder.path, sid, raw, labels=labels)
                yield Message(folder.path, sid, raw, labels=labels)
            else:
                yield Message(folder.path, sid, raw, labels=labels)


def numbered_message(n: int) -> bytes:
    return f"Subject: message {n}\r\nMessage-ID: <{n}@x>\r\n\r\nbody {n}\r\n".encode()


def fast_tuning(**overrides) -> Tuning:
    """Small parts (rclone accepts parts under 5 MiB) so small mailboxes make many parts."""
    values = dict(part_bytes=64 * 1024, min_part_bytes=64 * 1024, spill_bytes=256 * 1024,
                  queue_bytes=2 * 1024 * 1024, progress_interval=0.05, cancel_interval=0.05,
                  retry=RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2))
    values.update(overrides)
    return Tuning(**values)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("rclone-s3")
    server = start_rclone_s3(data, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    server.extra["data"] = data
    yield server
    server.stop()


@dataclass
class S3Env:
    url: str
    bucket: str
    data_dir: Path

    def client(self, url: str | None = None, **kwargs):
        target = S3Target(self.bucket, "us-east-1", url or self.url, ACCESS_KEY, SECRET_KEY)
        kwargs.setdefault("max_attempts", 2)
        return make_client(target, allow_private=True, **kwargs)

    def path(self, key: str) -> Path:
        return self.data_dir / self.bucket / key


@pytest.fixture
def s3(s3_server):
    """A fresh bucket on the session's rclone S3 server."""
    bucket = "t" + uuid.uuid4().hex[:12]
    data_dir = s3_server.extra["data"]
    env = S3Env(s3_server.url, bucket, data_dir)
    env.client().create_bucket(Bucket=bucket)  # rclone does not see directories made behind its back
    yield env
    shutil.rmtree(data_dir / bucket, ignore_errors=True)


@pytest.fixture
def dovecot():
    with DovecotServer({USER: PASSWORD}) as server:
        yield server


def imap_source(dc: DovecotServer, **kwargs):
    from connectors.sources.imap.client import ImapSource

    kwargs.setdefault("security", "none")
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("connect_timeout", 5)
    port = kwargs.pop("port", dc.port)
    return ImapSource("127.0.0.1", port, username=kwargs.pop("username", USER),
                      password=kwargs.pop("password", PASSWORD), allow_private=True, **kwargs)


# ---- the truth: what the server serves ---------------------------------------------------------

@dataclass
class Truth:
    messages: dict[tuple[str, str], bytes]  # (folder path, "uidvalidity:uid") -> bytes
    folders: list[str]  # every folder path, selectable or not
    # (folder path, source id) -> (flags as a set, internal date ISO 8601, labels); None: unknown
    meta: dict[tuple[str, str], tuple[frozenset, str, tuple[str, ...]]] | None = None

    def digests(self) -> dict[tuple[str, str], str]:
        return {k: hashlib.sha256(v).hexdigest() for k, v in self.messages.items()}


def truth_of(dc: DovecotServer, user: str = USER, password: str = PASSWORD) -> Truth:
    from imapclient import IMAPClient

    from connectors.sources.imap.client import folder_path

    messages: dict[tuple[str, str], bytes] = {}
    folders = []
    prefix = "INBOX." if dc.layout == "mithi" else ""
    sep = "." if dc.layout == "mithi" else "/"
    meta: dict[tuple[str, str], tuple[frozenset, str, tuple[str, ...]]] = {}
    with IMAPClient("127.0.0.1", dc.port, ssl=False) as client:
        client.normalise_times = False  # INTERNALDATE with the server's offset
        client.plain_login(user, password)  # UTF-8 password
        for flags, _delim, name in client.list_folders():
            path = folder_path(name, sep, prefix)
            folders.append(path)
            if b"\\Noselect" in flags:
                continue
            info = client.select_folder(name, readonly=True)
            if not info[b"EXISTS"]:
                continue
            uidvalidity = info[b"UIDVALIDITY"]
            for uid, data in client.fetch(client.search("ALL"), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]).items():
                key = (path, f"{uidvalidity}:{uid}")
                messages[key] = data[b"BODY[]"]
                flags = frozenset(f.decode() if isinstance(f, bytes) else f for f in data[b"FLAGS"]) - {"\\Recent"}
                meta[key] = (flags, iso_date(data[b"INTERNALDATE"]), ())
    return Truth(messages, folders, meta)


def iso_date(when: dt.datetime) -> str:
    """The contract's spelling of an internal date, written here independently of the engine."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.replace(microsecond=0).isoformat()


INDEX_COLUMNS = ["entry", "folder", "source_id", "message_id", "internal_date", "flags", "labels", "size", "sha256"]
_MANIFEST = re.compile(r"(labels|index)(\.part\d{3,})?\.csv")


def ut_mtime(extra: bytes) -> int | None:
    """The modification time of an extended-timestamp (0x5455) extra field, if any."""
    at = 0
    while at + 4 <= len(extra):
        header, size = struct.unpack_from("<HH", extra, at)
        if header == 0x5455 and size >= 5 and extra[at + 4] & 1:
            return struct.unpack_from("<i", extra, at + 5)[0]
        at += 4 + size
    return None


def _local_extra(path: Path, info: zipfile.ZipInfo) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(30)
        name_len, extra_len = struct.unpack_from("<HH", head, 26)
        fh.seek(info.header_offset + 30 + name_len)
        return fh.read(extra_len)


def check_entry_times(path: Path, info: zipfile.ZipInfo, internal_date: str) -> None:
    """The entry's DOS time (local and central) and UT mtime (local and central) = the internal date."""
    if not internal_date:
        assert info.date_time == (1980, 1, 1, 0, 0, 0), info
        assert ut_mtime(info.extra) is None
        return
    when = dt.datetime.fromisoformat(internal_date).astimezone(dt.UTC)
    if 1980 <= when.year <= 2107:
        assert info.date_time == (when.year, when.month, when.day, when.hour, when.minute,
                                  when.second - when.second % 2), (info.filename, info.date_time, internal_date)
    expected = min(max(int(when.timestamp()), 0), 0x7FFFFFFF)
    assert ut_mtime(info.extra) == expected, (info.filename, info.extra)
    assert ut_mtime(_local_extra(path, info)) == expected, info.filename


# ---- reading what the engine wrote --------------------------------------------------------------

def bucket_keys(s3: S3Env) -> list[str]:
    root = s3.data_dir / s3.bucket
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def multipart_uploads(client, bucket: str) -> list[dict]:
    try:
        return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except client.exceptions.NoSuchUpload:  # rclone's answer for "none"
        return []


def read_report(s3: S3Env, key: str) -> list[dict]:
    text = s3.path(key).read_text(encoding="utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def read_summary(s3: S3Env, key: str) -> dict:
    return json.loads(s3.path(key).read_text(encoding="utf-8"))


def archive_keys_of(s3: S3Env, base_key: str) -> list[str]:
    """Objects in the bucket named like an archive of ``base_key``: .zip or .partNNN.zip."""
    pattern = re.compile(re.escape(base_key) + r"(\.part\d{3,})?\.zip")
    return [k for k in bucket_keys(s3) if pattern.fullmatch(k)]


def verify_export(s3: S3Env, base_key: str, truth: Truth, *, folders: list[str] | None = None,
                  expect_failed: int = 0, split_bytes: int | None = None) -> dict:
    """Check the archive of ``base_key`` and its report/summary against ``truth``.

    The archive is ``base_key``.zip, or its volumes ``base_key``.part001.zip, .part002.zip...
    exactly as summary.json lists them (and nothing else of that name is in the bucket); each
    is a valid ZIP, at most ``split_bytes`` unless it holds one message only. ``folders``: the
    folder paths that were exported (default: all of truth's). Returns {"report": rows,
    "summary": dict, "entries": {entry name: sha256}, "dirs": set, "volumes": {key: [names]}}.
    """
    wanted = set(folders if folders is not None else truth.folders)
    expected = {k: v for k, v in truth.digests().items() if k[0] in wanted}
    report = read_report(s3, base_key + ".report.csv")
    summary = read_summary(s3, base_key + ".summary.json")
    keys = [a["key"] for a in summary["archives"]]
    if len(keys) == 1:
        assert keys == [base_key + ".zip"], keys
    else:
        assert keys == [f"{base_key}.part{n:03d}.zip" for n in range(1, len(keys) + 1)], keys
    assert archive_keys_of(s3, base_key) == sorted(keys), f"bucket holds {bucket_keys(s3)}"
    entry_digest: dict[tuple[str, str], str] = {}  # (archive key, entry name) -> sha256
    entry_infos: dict[tuple[str, str], zipfile.ZipInfo] = {}
    index_rows: dict[tuple[str, str], dict] = {}  # (archive key, entry name) -> its index row
    dirs: set[str] = set()
    volumes: dict[str, list[str]] = {}
    for key, listed in zip(keys, summary["archives"], strict=True):
        zip_path = s3.path(key)
        assert zip_path.exists(), f"no archive at {key}; bucket holds {bucket_keys(s3)}"
        assert listed["size"] == zip_path.stat().st_size, key
        if shutil.which("unzip"):
            check = subprocess.run(["unzip", "-tqq", str(zip_path)], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
        with zipfile.ZipFile(zip_path) as archive:
            assert archive.testzip() is None
            infos = archive.infolist()
            names = [i.filename for i in infos]
            assert len(names) == len(set(names)), "duplicate entry names"
            for info in infos:
                assert info.flag_bits & 0x800, f"{info.filename}: UTF-8 flag not set"
                assert not info.filename.startswith("/") and ".." not in info.filename.split("/")
                if not info.is_dir():
                    entry_digest[(key, info.filename)] = hashlib.sha256(archive.read(info)).hexdigest()
                    entry_infos[(key, info.filename)] = info
            dirs |= {i.filename.rstrip("/") for i in infos if i.is_dir()}
            index_name = "index.csv" if len(keys) == 1 else f"index.part{len(volumes) + 1:03d}.csv"
            last = max(infos, key=lambda i: i.header_offset)
            assert last.filename == index_name and infos[-1] is last, f"{key}: {last.filename} is last"
            rows = list(csv.reader(io.StringIO(archive.read(index_name).decode("utf-8"))))
            assert rows[0] == INDEX_COLUMNS, rows[0]
            for row in rows[1:]:
                item = dict(zip(INDEX_COLUMNS, row, strict=True))
                assert (key, item["entry"]) not in index_rows, f"{item['entry']} indexed twice"
                index_rows[(key, item["entry"])] = item
        volumes[key] = names
        if split_bytes is not None and zip_path.stat().st_size > split_bytes:
            assert sum(n.endswith(".eml") for n in names) == 1, f"{key} is over the split size"
    all_names = [name for names in volumes.values() for name in names if not name.endswith("/")]
    assert len(all_names) == len(set(all_names)), "an entry name repeats across volumes"
    seen: dict[tuple[str, str], str] = {}
    exported_entries = set()
    for row in report:
        key = (row["folder"], row["source_id"])
        assert key not in seen, f"{key} reported twice"
        seen[key] = row["status"]
        if row["status"] == "exported":
            where = (row["archive"], row["entry"])
            assert where in entry_digest, f"{row['entry']} missing from {row['archive']!r}"
            assert entry_digest[where] == row["sha256"], f"{row['entry']}: sha256 differs"
            assert row["sha256"] == expected.get(key), f"{key}: archive bytes differ from the source"
            assert int(row["size"]) == len(truth.messages[key])
            exported_entries.add(where)
            indexed = index_rows.get(where)
            assert indexed is not None, f"{row['entry']} is not in {row['archive']}'s index"
            assert (indexed["folder"], indexed["source_id"], indexed["sha256"], indexed["size"]) == (
                row["folder"], row["source_id"], row["sha256"], row["size"]), (indexed, row)
            assert indexed["message_id"] == row["message_id"].lstrip("'")
            for column in ("flags", "labels", "internal_date"):
                assert row[column].lstrip("'") == indexed[column], (column, indexed, row)
            check_entry_times(s3.path(where[0]), entry_infos[where], indexed["internal_date"])
            if truth.meta is not None:
                flags, internal_date, labels = truth.meta[key]
                assert set(indexed["flags"].split()) == set(flags), (key, indexed["flags"], flags)
                assert indexed["internal_date"] == internal_date, (key, indexed, internal_date)
                assert indexed["labels"] == ";".join(labels), (key, indexed["labels"], labels)
        else:
            assert row["archive"] == "", row
    missing = set(expected) - set(seen)
    assert not missing, f"source messages missing from the report: {sorted(missing)[:5]}"
    extra = set(seen) - set(expected)
    assert not extra, f"report rows for unknown messages: {sorted(extra)[:5]}"
    failed = [k for k, s in seen.items() if s != "exported"]
    assert len(failed) == expect_failed, f"not exported: {failed}"
    stray = {w for w in entry_digest if not _MANIFEST.fullmatch(w[1])} - exported_entries
    assert not stray, f"entries no report row accounts for: {sorted(stray)[:5]}"
    assert set(index_rows) == exported_entries, "index rows and exported messages differ"
    for folder in wanted:
        assert folder in dirs, f"no directory entry for {folder}"
    by_folder = {f["folder"]: f for f in summary["folders"]}
    for folder in wanted:
        stats = by_folder[folder]
        assert stats["source_count"] == stats["exported"] + stats["failed"] + stats["skipped"]
        assert stats["source_count"] == sum(1 for k in expected if k[0] == folder)
    assert summary["reconciled"] is True
    assert summary["totals"]["exported"] == len(expected) - expect_failed
    return {"report": report, "summary": summary, "dirs": dirs, "volumes": volumes,
            "entries": {name: digest for (_key, name), digest in entry_digest.items()}}

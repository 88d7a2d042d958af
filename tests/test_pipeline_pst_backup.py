"""PST exports: Dovecot → connectors.archives.pst → rclone S3, read back with libpff; kill → fresh restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from connectors.pipeline.ledger import MemoryLedger, SqliteLedger
from connectors.pipeline.run import run_backup
from connectors.pipeline.spec import CANCELLED, COMPLETED, ExportSpec
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import (
    USER,
    RecordingLedger,
    bucket_keys,
    fast_tuning,
    imap_source,
    multipart_uploads,
    read_report,
    read_summary,
    truth_of,
)
from tests.mailgen import generate_mailbox, write_maildir
from tests.pst_corpus import assert_every_reader_opens, read_pst_with_pst_extractor

pypff = pytest.importorskip("pypff")
ROOT = Path(__file__).resolve().parent.parent


def pst_counts(path: Path) -> dict[str, int]:
    """Folder path below "Top of Outlook data file" → number of messages, read by libpff; and
    pst-extractor (java-libpst's port) must find the same, readpst and pffexport open it."""
    import tempfile

    counts = _pypff_counts(path)
    extracted = read_pst_with_pst_extractor(path)
    assert {folder: len(messages) for folder, messages in extracted.items()} == counts
    with tempfile.TemporaryDirectory() as scratch:
        assert_every_reader_opens(path, Path(scratch), sum(counts.values()))
    return counts


def _pypff_counts(path: Path) -> dict[str, int]:
    pst = pypff.file()
    pst.open(str(path))
    try:
        top = next(f for f in pst.get_root_folder().sub_folders if f.name == "Top of Outlook data file")
        out: dict[str, int] = {}

        def walk(folder, prefix: str) -> None:
            out[prefix] = folder.number_of_sub_messages
            for sub in folder.sub_folders:
                walk(sub, f"{prefix}/{sub.name}" if prefix else sub.name)

        walk(top, "")
        return out
    finally:
        pst.close()


def test_pst_export_holds_every_message_and_reports_it(dovecot, s3):
    write_maildir(dovecot, USER, generate_mailbox("test"))
    truth = truth_of(dovecot)
    with imap_source(dovecot) as source:
        result = run_backup(source, s3.client(), ExportSpec(bucket=s3.bucket, prefix="pst", file_name="alice",
                                                            format="pst"), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    assert bucket_keys(s3) == ["pst/alice.pst", "pst/alice.report.csv", "pst/alice.summary.json"]
    counts = pst_counts(s3.path("pst/alice.pst"))
    for folder in truth.folders:
        assert counts.get(folder, 0) == sum(1 for k in truth.messages if k[0] == folder), folder
    rows = read_report(s3, "pst/alice.report.csv")
    digests = truth.digests()
    assert len(rows) == len(truth.messages)
    assert all(row["status"] == "exported" and row["sha256"] == digests[(row["folder"], row["source_id"])]
               and row["entry"] == "pst/alice.pst" for row in rows)
    summary = read_summary(s3, "pst/alice.summary.json")
    assert summary["reconciled"] and summary["archives"][0]["key"] == "pst/alice.pst"
    assert multipart_uploads(s3.client(), s3.bucket) == []


def test_split_pst_files_are_numbered(dovecot, s3):
    write_maildir(dovecot, USER, generate_mailbox("flat", count=60, size=30_000))
    with imap_source(dovecot) as source:
        result = run_backup(source, s3.client(), ExportSpec(bucket=s3.bucket, file_name="big", format="pst",
                                                            split_bytes=700_000), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    keys = [a.key for a in result.archives]
    assert len(keys) >= 2 and keys[0] == "big.part001.pst" and keys[1] == "big.part002.pst"
    assert sum(pst_counts(s3.path(k)).get("INBOX", 0) for k in keys) == 60
    entries = {row["entry"] for row in read_report(s3, "big.report.csv")}
    assert entries == set(keys)


class CommitNotingLedger(RecordingLedger):
    """Notes how many progress reports came before the records were committed."""

    reports_before_commit: int | None = None

    def commit_records(self, records) -> None:
        self.reports_before_commit = len(self.reports)
        super().commit_records(records)


def test_progress_carries_folder_counts_and_outcomes_while_writing(dovecot, s3):
    """A PST export's records stay in a local file until every file is uploaded: until then the
    report page's per-folder figures travel with the progress counters; once the records are in
    the ledger, the progress carries no outcomes (the live table never counts a message twice)."""
    write_maildir(dovecot, USER, generate_mailbox("test"))
    truth = truth_of(dovecot)
    expected = Counter(folder for folder, _sid in truth.messages)
    ledger = CommitNotingLedger()
    with imap_source(dovecot) as source:
        result = run_backup(source, s3.client(), ExportSpec(bucket=s3.bucket, file_name="live", format="pst"),
                            ledger, fast_tuning(progress_interval=0))
    assert result.state == COMPLETED, result.error
    listed = ledger.reports[0]
    assert listed.messages_done == 0 and {f: n for f, n in listed.folder_counts.items() if n} == dict(expected)
    total = sum(expected.values())
    mid_run = [r for r in ledger.reports if 0 < r.messages_done < total]
    assert mid_run
    for report in mid_run:  # the outcomes account for exactly the messages handled so far
        assert sum(sum(v[:3]) for v in report.folder_outcomes.values()) == report.messages_done
    # a folder is seen complete while the run is still at work on others
    assert any(v[0] == expected[f] > 0 for r in mid_run for f, v in r.folder_outcomes.items())
    before, after = ledger.reports[:ledger.reports_before_commit], ledger.reports[ledger.reports_before_commit:]
    final = [r for r in before if r.folder_outcomes][-1].folder_outcomes
    assert {f: v[0] for f, v in final.items() if v[0]} == dict(expected) and all(v[3] > 0 for v in final.values() if v[0])
    assert before[-1].folder_outcomes == {} and after and all(r.folder_outcomes == {} for r in after)
    assert Counter(r.folder for r in ledger.records if r.status == "exported") == expected


class CancelAfterFirstFile(MemoryLedger):
    completed = 0

    def mark_archive_complete(self, size: int, etag: str) -> None:
        super().mark_archive_complete(size, etag)
        self.completed += 1

    def cancel_requested(self) -> bool:
        return self.completed >= 1


def test_cancelled_pst_export_leaves_nothing(dovecot, s3):
    """Cancelled after the first of several files was complete in the bucket: that one is
    deleted too, and the upload of the second is aborted."""
    write_maildir(dovecot, USER, generate_mailbox("flat", count=40, size=30_000))
    ledger = CancelAfterFirstFile()
    with imap_source(dovecot) as source:
        result = run_backup(source, s3.client(), ExportSpec(bucket=s3.bucket, file_name="c", format="pst",
                                                            split_bytes=600_000), ledger,
                            fast_tuning(upload_threads=1))
    assert result.state == CANCELLED and ledger.completed == 1
    assert bucket_keys(s3) == [] and multipart_uploads(s3.client(), s3.bucket) == []


CHILD = """
import json, os, signal, sys
from connectors.pipeline.spec import ExportSpec
from connectors.pipeline.run import run_backup
from connectors.sources.imap.client import ImapSource
from connectors.pipeline.ledger import SqliteLedger
from connectors.storage.s3.client import make_client
from connectors.storage.s3.target import S3Target
from tests.fixtures_engine import ACCESS_KEY, PASSWORD, SECRET_KEY, USER, fast_tuning

cfg = json.loads(sys.argv[1])

class Killing(SqliteLedger):
    def report_progress(self, progress):
        super().report_progress(progress)
        if cfg["kill"] and progress.archive_bytes > 0:  # parts are on their way while writing
            os.kill(os.getpid(), signal.SIGKILL)

client = make_client(S3Target(cfg["bucket"], "us-east-1", cfg["url"], ACCESS_KEY, SECRET_KEY), allow_private=True)
with ImapSource("127.0.0.1", cfg["port"], "none", USER, PASSWORD, allow_private=True) as source:
    result = run_backup(source, client, ExportSpec(bucket=cfg["bucket"], file_name="k", format="pst"),
                        Killing(cfg["ledger"]), fast_tuning(upload_threads=1))
print(json.dumps({"state": result.state, "error": result.error}))
"""


def test_killed_pst_export_restarts_from_scratch(tmp_path, dovecot, s3):
    # ~12 MB of PST: parts are sent while the file is written once it is past PstWriter.SETTLED_LAG
    write_maildir(dovecot, USER, generate_mailbox("flat", count=400, size=30_000))
    truth = truth_of(dovecot)
    cfg = {"bucket": s3.bucket, "url": s3.url, "port": dovecot.port, "ledger": str(tmp_path / "l.sqlite")}

    def child(kill: bool) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", CHILD, json.dumps({**cfg, "kill": kill})], cwd=ROOT,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    killed = child(True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(multipart_uploads(s3.client(), s3.bucket)) == 1  # kept for the next run to abort
    done = child(False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1])["state"] == COMPLETED
    assert multipart_uploads(s3.client(), s3.bucket) == []
    assert pst_counts(s3.path("k.pst"))["INBOX"] == len(truth.messages) == 400
    ledger = SqliteLedger(tmp_path / "l.sqlite")
    assert ledger.load_upload().archive_complete


def test_a_pst_sent_ahead_of_its_header_to_an_aws_like_store_is_the_file(dovecot, moto, tmp_path, monkeypatch):
    """AWS S3 (moto here, with its 5 MiB part rule) keeps parts in any order, so by default the
    whole PST goes up while it is written and part 1, the header, last of all."""
    from connectors.archives.pst import check_pst
    from connectors.storage.s3.growing import UNLIMITED_AHEAD, default_max_ahead
    from connectors.storage.s3.sink import MultipartSink

    assert default_max_ahead("") == UNLIMITED_AHEAD
    order = []
    upload_part = MultipartSink.upload_part

    def recording_upload_part(self, number, part, size):
        order.append(number)
        return upload_part(self, number, part, size)

    monkeypatch.setattr(MultipartSink, "upload_part", recording_upload_part)
    write_maildir(dovecot, USER, generate_mailbox("flat", count=500, size=60_000))
    client = moto.client()
    client.create_bucket(Bucket="pst-ahead")
    with imap_source(dovecot) as source:
        result = run_backup(source, client, ExportSpec(bucket="pst-ahead", file_name="ahead", format="pst"),
                            MemoryLedger(), fast_tuning(part_bytes=5 * 1024 * 1024, min_part_bytes=5 * 1024 * 1024,
                                                        max_ahead_bytes=UNLIMITED_AHEAD))
    assert result.state == COMPLETED, result.error
    assert order.index(1) >= 2, order  # parts went up before the header was written
    local = tmp_path / "ahead.pst"
    client.download_file("pst-ahead", "ahead.pst", str(local))
    assert local.stat().st_size == result.archives[0].size
    assert check_pst(local) == []
    assert sum(pst_counts(local).values()) == 500

"""The export engine end to end: real Dovecot → engine → real S3 (rclone; moto for AWS rules)."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import pytest

from connectors.pipeline.ledger import MemoryLedger
from connectors.pipeline.run import run_backup
from connectors.pipeline.spec import (
    CANCELLED,
    COMPLETED,
    FAILED_STATE,
    ExportSpec,
    Tuning,
)
from connectors.storage.s3.sink import RetryPolicy
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import (
    USER,
    RecordingLedger,
    ScriptedSource,
    bucket_keys,
    fast_tuning,
    imap_source,
    multipart_uploads,
    numbered_message,
    read_report,
    truth_of,
    verify_export,
)
from tests.mailgen import generate_mailbox, write_maildir
from tests.servers.faults import S3FaultProxy


def spec(s3, name="alice", **kwargs) -> ExportSpec:
    return ExportSpec(bucket=s3.bucket, prefix="exports/2024", file_name=name, **kwargs)


def test_generated_mailbox_is_archived_byte_for_byte(dovecot, s3):
    write_maildir(dovecot, USER, generate_mailbox("test", big=True))
    truth = truth_of(dovecot)
    ledger = MemoryLedger()
    client = s3.client()
    with imap_source(dovecot) as source:
        result = run_backup(source, client, spec(s3), ledger, fast_tuning())
    assert result.state == COMPLETED, result.error
    facts = verify_export(s3, "exports/2024/alice", truth)
    assert bucket_keys(s3) == ["exports/2024/alice.report.csv", "exports/2024/alice.summary.json",
                               "exports/2024/alice.zip"]
    assert multipart_uploads(client, s3.bucket) == []
    # the empty folder and the \Noselect parent are directory entries
    assert {"Leer", "Projekte", "Projekte/日本語", "Archive/2023/Q1 ½"} <= facts["dirs"]
    # awkward headers are decoded in the report, the 30 MB message is there
    by_subject = {row["subject"]: row for row in facts["report"]}
    assert "Grüße aus München 🍺 und mehr" in by_subject
    assert by_subject["Überweisung für März — 日本語 ✓"]["to"] == "François <f@example.fr>"
    assert by_subject["no date and no sender"]["from"] == ""
    assert int(by_subject["30 MB attachment"]["size"]) > 30 * 1024 * 1024
    assert sum(row["message_id"] == "<duplicate@example.com>" for row in facts["report"]) == 5
    names = [row["entry"] for row in facts["report"]]
    assert all(name.startswith(row["folder"] + "/") for name, row in zip(names, facts["report"], strict=True))
    assert any(name.startswith("INBOX/") and "etc_passwd" in name for name in names)
    # progress, result and summary agree
    assert ledger.progress.phase == "done"
    assert ledger.progress.messages_done == ledger.progress.messages_total == len(truth.messages)
    assert result.totals.exported == len(truth.messages) and result.parts >= 3
    assert result.archives[0].size == s3.path("exports/2024/alice.zip").stat().st_size
    assert facts["summary"]["archives"][0]["key"] == "exports/2024/alice.zip"


def test_include_exclude_and_date_window(dovecot, s3):
    mailbox = generate_mailbox("test")
    write_maildir(dovecot, USER, mailbox)
    since, before = dt.date(2020, 1, 1), dt.date(2023, 1, 1)
    with imap_source(dovecot) as source:
        result = run_backup(source, s3.client(), spec(s3, include=["projekte", "INBOX"],
                            exclude=["Projekte/日本語"], since=since, before=before),
                            MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED
    assert {f.folder for f in result.folders} == {"INBOX", "Projekte", "Projekte/Ünïcødé & Co"}
    report = read_report(s3, "exports/2024/alice.report.csv")
    expected = [m for m in mailbox.messages() if m.folder in ("INBOX", "Projekte/Ünïcødé & Co")
                and since <= m.internal_date.date() < before]
    assert len(report) == len(expected) > 0
    with zipfile.ZipFile(s3.path("exports/2024/alice.zip")) as archive:
        folders = {n.rsplit("/", 1)[0] for n in archive.namelist() if n != "index.csv"}
    assert folders <= {"INBOX", "Projekte", "Projekte/Ünïcødé & Co"}


@pytest.mark.parametrize("drop", [False, True], ids=["500", "dropped-connection"])
def test_s3_failures_on_upload_part_are_retried(dovecot, s3, drop):
    write_maildir(dovecot, USER, generate_mailbox("test"))
    truth = truth_of(dovecot)
    with S3FaultProxy(s3.url, fail_upload_parts=3, drop_instead=drop) as proxy:
        with imap_source(dovecot) as source:
            result = run_backup(source, s3.client(proxy.url), spec(s3), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    assert proxy.injected == 3
    verify_export(s3, "exports/2024/alice", truth)


def test_s3_failing_for_good_fails_cleanly(dovecot, s3):
    write_maildir(dovecot, USER, generate_mailbox("test"))
    ledger = MemoryLedger()
    with S3FaultProxy(s3.url, fail_upload_parts=1000) as proxy:
        client = s3.client(proxy.url)
        with imap_source(dovecot) as source:
            result = run_backup(source, client, spec(s3), ledger, fast_tuning(
                retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01)))
        operations = [op for op, _status in proxy.operations()]
    assert result.state == FAILED_STATE
    assert "UploadPart" in result.error and "InternalError" in result.error
    assert "AbortMultipartUpload" in operations
    assert multipart_uploads(s3.client(), s3.bucket) == []
    assert bucket_keys(s3) == []
    assert ledger.load_upload() is None


class CancelAfterCommits(MemoryLedger):
    def __init__(self, commits: int) -> None:
        super().__init__()
        self.after = commits

    def cancel_requested(self) -> bool:
        return self.commits >= self.after


def test_cancel_aborts_the_upload(dovecot, s3):
    write_maildir(dovecot, USER, generate_mailbox("flat", count=400, size=5000))
    ledger = CancelAfterCommits(2)
    client = s3.client()
    with imap_source(dovecot) as source:
        result = run_backup(source, client, spec(s3), ledger, fast_tuning())
    assert result.state == CANCELLED
    assert ledger.commits >= 2
    assert multipart_uploads(client, s3.bucket) == []
    assert bucket_keys(s3) == []
    assert ledger.load_upload() is None and ledger.progress.phase == CANCELLED


def test_moto_enforces_aws_part_rules_and_the_engine_meets_them(dovecot):
    """AWS semantics rclone does not check: every part but the last ≥ 5 MiB (EntityTooSmall)."""
    from moto.server import ThreadedMotoServer

    from connectors.storage.s3.client import make_client
    from connectors.storage.s3.target import S3Target
    from legacyflo.localservices import free_port

    write_maildir(dovecot, USER, generate_mailbox("flat", count=300, size=60_000))
    truth = truth_of(dovecot)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = make_client(S3Target("moto-bucket", "eu-west-1", f"http://127.0.0.1:{port}",
                                      "testing-access-key", "testing-secret-key"), allow_private=True)
        client.create_bucket(Bucket="moto-bucket",
                             CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        # the rule has teeth: a 1 MiB part that is not the last one is refused
        upload = client.create_multipart_upload(Bucket="moto-bucket", Key="probe")["UploadId"]
        etags = [client.upload_part(Bucket="moto-bucket", Key="probe", UploadId=upload, PartNumber=n,
                                    Body=b"x" * 1024 * 1024)["ETag"] for n in (1, 2)]
        with pytest.raises(client.exceptions.ClientError, match="EntityTooSmall"):
            client.complete_multipart_upload(Bucket="moto-bucket", Key="probe", UploadId=upload,
                                             MultipartUpload={"Parts": [
                                                 {"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags, strict=True)]})
        client.abort_multipart_upload(Bucket="moto-bucket", Key="probe", UploadId=upload)
        with imap_source(dovecot) as source:
            result = run_backup(source, client, ExportSpec(bucket="moto-bucket", file_name="alice"),
                                MemoryLedger(), Tuning(part_bytes=5 * 1024 * 1024))
        assert result.state == COMPLETED, result.error
        assert result.parts >= 3
        body = client.get_object(Bucket="moto-bucket", Key="alice.zip")["Body"].read()
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert archive.testzip() is None
            files = [i for i in archive.infolist() if not i.is_dir()]
        assert len(files) == len(truth.messages) + 1  # and index.csv
        assert files[-1].filename == "index.csv"
        assert client.list_multipart_uploads(Bucket="moto-bucket").get("Uploads", []) == []
    finally:
        server.stop()


# ---- engine behaviour with a scripted source (the real IMAP source is tested elsewhere) -----------

def test_progress_reports_each_folders_source_count_once_listed(s3):
    source = ScriptedSource({"INBOX": [(str(n), numbered_message(n), ()) for n in range(1, 9)],
                             "Archive/2023": [(str(n), numbered_message(n), ()) for n in range(20, 23)], "Empty": []})
    ledger = RecordingLedger()
    assert run_backup(source, s3.client(), spec(s3), ledger, fast_tuning()).state == COMPLETED
    listed = ledger.reports[0]  # the first report: listing is over, nothing is transferred yet
    assert (listed.phase, listed.messages_done, listed.messages_total) == ("listing", 0, 11)
    assert listed.folder_counts == {"INBOX": 8, "Archive/2023": 3, "Empty": 0}
    assert not any(r.folder_outcomes for r in ledger.reports)  # a ZIP's records reach the ledger part by part


def test_gmail_labels_go_to_a_manifest_and_each_message_is_stored_once(s3):
    source = ScriptedSource({"[Gmail]/All Mail": [
        ("1:10", numbered_message(10), ("\\Inbox", "Work/Projekt Ä")),
        ("1:11", numbered_message(11), ("\\Sent",)),
        ("1:12", numbered_message(12), ()),
    ]})
    result = run_backup(source, s3.client(), spec(s3), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED
    with zipfile.ZipFile(s3.path("exports/2024/alice.zip")) as archive:
        manifest = archive.read("labels.csv").decode()
        emls = [n for n in archive.namelist() if n.endswith(".eml")]
    assert len(emls) == 3
    assert manifest.splitlines()[0] == "entry,folder,source_id,labels"
    assert '[Gmail]/All Mail/000001_message 10.eml,[Gmail]/All Mail,1:10,"[""\\\\Inbox"", ""Work/Projekt Ä""]"' in manifest
    assert len(manifest.splitlines()) == 3  # header + two labelled messages


def test_empty_mailbox_makes_a_valid_empty_archive(s3):
    result = run_backup(ScriptedSource({"INBOX": []}), s3.client(), spec(s3), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED
    with zipfile.ZipFile(s3.path("exports/2024/alice.zip")) as archive:
        assert archive.namelist() == ["INBOX/", "index.csv"]
        assert archive.read("index.csv") == (",".join(INDEX_COLUMNS) + "\r\n").encode()
    assert read_report(s3, "exports/2024/alice.report.csv") == []


def test_report_upload_failure_keeps_the_archive_and_a_retry_only_writes_the_report(dovecot, s3):
    write_maildir(dovecot, USER, generate_mailbox("test"))
    truth = truth_of(dovecot)
    ledger = MemoryLedger()
    tuning = fast_tuning(retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01))
    with S3FaultProxy(s3.url, fail_puts_ending=".report.csv", fail_puts=1000) as proxy:
        with imap_source(dovecot) as source:
            first = run_backup(source, s3.client(proxy.url), spec(s3), ledger, tuning)
    assert first.state == FAILED_STATE and "is complete, but its report could not be written" in first.error
    assert ledger.load_upload().archive_complete
    commits = ledger.commits
    with imap_source(dovecot) as source:
        second = run_backup(source, s3.client(), spec(s3), ledger, tuning)
    assert second.state == COMPLETED and second.resumed and ledger.commits == commits
    verify_export(s3, "exports/2024/alice", truth)


class OwnershipLost(Exception):
    pass


class LosingLedger(MemoryLedger):
    """Like the portal's ledger when another worker took the request over."""

    def commit_part(self, part, records):
        if self.commits == 2:
            raise OwnershipLost("another worker owns this export now")
        super().commit_part(part, records)


def test_a_failing_ledger_stops_the_engine_and_nothing_is_cleaned_up(dovecot, s3):
    write_maildir(dovecot, USER, generate_mailbox("flat", count=200, size=5000))
    ledger = LosingLedger()
    client = s3.client()
    with imap_source(dovecot) as source:
        with pytest.raises(OwnershipLost):
            run_backup(source, client, spec(s3), ledger, fast_tuning())
    upload = ledger.load_upload()
    assert upload is not None and len(upload.parts) == 2  # the ledger was not reset...
    assert [u["UploadId"] for u in multipart_uploads(client, s3.bucket)] == [upload.upload_id]  # ...nor the upload aborted
    client.abort_multipart_upload(Bucket=s3.bucket, Key=upload.key, UploadId=upload.upload_id)

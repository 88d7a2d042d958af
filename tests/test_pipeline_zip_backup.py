"""The export engine end to end: real Dovecot → engine → real S3 (rclone; moto for AWS rules)."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import pytest

from connectors.model import Folder, Message, MessageFailure
from connectors.pipeline.zip_backup import (
    CANCELLED,
    COMPLETED,
    COMPLETED_WITH_ERRORS,
    FAILED_STATE,
    ExportSpec,
    MemoryLedger,
    Tuning,
    run_export,
)
from connectors.sources import Source
from connectors.storage.s3.sink import RetryPolicy
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
        result = run_export(source, client, spec(s3), ledger, fast_tuning())
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
        result = run_export(source, s3.client(), spec(s3, include=["projekte", "INBOX"],
                            exclude=["Projekte/日本語"], since=since, before=before),
                            MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED
    assert {f.folder for f in result.folders} == {"INBOX", "Projekte", "Projekte/Ünïcødé & Co"}
    report = read_report(s3, "exports/2024/alice.report.csv")
    expected = [m for m in mailbox.messages() if m.folder in ("INBOX", "Projekte/Ünïcødé & Co")
                and since <= m.internal_date.date() < before]
    assert len(report) == len(expected) > 0
    with zipfile.ZipFile(s3.path("exports/2024/alice.zip")) as archive:
        folders = {n.rsplit("/", 1)[0] for n in archive.namelist()}
    assert folders <= {"INBOX", "Projekte", "Projekte/Ünïcødé & Co"}


@pytest.mark.parametrize("drop", [False, True], ids=["500", "dropped-connection"])
def test_s3_failures_on_upload_part_are_retried(dovecot, s3, drop):
    write_maildir(dovecot, USER, generate_mailbox("test"))
    truth = truth_of(dovecot)
    with S3FaultProxy(s3.url, fail_upload_parts=3, drop_instead=drop) as proxy:
        with imap_source(dovecot) as source:
            result = run_export(source, s3.client(proxy.url), spec(s3), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    assert proxy.injected == 3
    verify_export(s3, "exports/2024/alice", truth)


def test_s3_failing_for_good_fails_cleanly(dovecot, s3):
    write_maildir(dovecot, USER, generate_mailbox("test"))
    ledger = MemoryLedger()
    with S3FaultProxy(s3.url, fail_upload_parts=1000) as proxy:
        client = s3.client(proxy.url)
        with imap_source(dovecot) as source:
            result = run_export(source, client, spec(s3), ledger, fast_tuning(
                retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01)))
        operations = [op for op, _status in proxy.operations()]
    assert result.state == FAILED_STATE
    assert "UploadPart" in result.error and "InternalError" in result.error
    assert "AbortMultipartUpload" in operations
    assert multipart_uploads(s3.client(), s3.bucket) == []
    assert bucket_keys(s3) == []
    assert ledger.load_upload() is None


@pytest.mark.parametrize("case", ["wrong-password", "unreachable"])
def test_source_errors_leave_nothing_behind(dovecot, s3, case):
    client = s3.client()
    kwargs = {"password": "wrong"} if case == "wrong-password" else {"port": 1}
    with imap_source(dovecot, connect_attempts=1, **kwargs) as source:
        result = run_export(source, client, spec(s3), MemoryLedger(), fast_tuning())
    assert result.state == FAILED_STATE
    if case == "wrong-password":
        assert "refused the login of 'alice'" in result.error and "wrong" not in result.error.split("login")[0]
        assert "s3cret" not in result.error
    else:
        assert "refused the connection" in result.error
    assert bucket_keys(s3) == []
    assert multipart_uploads(client, s3.bucket) == []


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
        result = run_export(source, client, spec(s3), ledger, fast_tuning())
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
            result = run_export(source, client, ExportSpec(bucket="moto-bucket", file_name="alice"),
                                MemoryLedger(), Tuning(part_bytes=5 * 1024 * 1024))
        assert result.state == COMPLETED, result.error
        assert result.parts >= 3
        body = client.get_object(Bucket="moto-bucket", Key="alice.zip")["Body"].read()
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert archive.testzip() is None
            files = [i for i in archive.infolist() if not i.is_dir()]
        assert len(files) == len(truth.messages)
        assert client.list_multipart_uploads(Bucket="moto-bucket").get("Uploads", []) == []
    finally:
        server.stop()


# ---- engine behaviour with a scripted source (the real IMAP source is tested elsewhere) -----------

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


def _msg(n: int) -> bytes:
    return f"Subject: message {n}\r\nMessage-ID: <{n}@x>\r\n\r\nbody {n}\r\n".encode()


def test_unreadable_messages_are_reported_never_lost(s3):
    source = ScriptedSource({"INBOX": [(str(n), _msg(n), ()) for n in range(1, 9)]},
                            {"2": "fail", "3": "skip", "4": "omit", "5": "twice"})
    result = run_export(source, s3.client(), spec(s3), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED_WITH_ERRORS
    inbox = result.folders[0]
    assert (inbox.source_count, inbox.exported, inbox.failed, inbox.skipped) == (8, 5, 2, 1)
    rows = {row["source_id"]: row for row in read_report(s3, "exports/2024/alice.report.csv")}
    assert rows["2"]["status"] == "failed" and rows["2"]["error"] == "server said NO"
    assert rows["3"]["status"] == "skipped"
    assert rows["4"]["status"] == "failed" and "did not return" in rows["4"]["error"]
    with zipfile.ZipFile(s3.path("exports/2024/alice.zip")) as archive:
        assert sum(name.endswith(".eml") for name in archive.namelist()) == 5  # "5" stored once
    assert read_summary(s3, "exports/2024/alice.summary.json")["state"] == COMPLETED_WITH_ERRORS


def test_progress_reports_each_folders_source_count_once_listed(s3):
    source = ScriptedSource({"INBOX": [(str(n), _msg(n), ()) for n in range(1, 9)],
                             "Archive/2023": [(str(n), _msg(n), ()) for n in range(20, 23)], "Empty": []})
    ledger = RecordingLedger()
    assert run_export(source, s3.client(), spec(s3), ledger, fast_tuning()).state == COMPLETED
    listed = ledger.reports[0]  # the first report: listing is over, nothing is transferred yet
    assert (listed.phase, listed.messages_done, listed.messages_total) == ("listing", 0, 11)
    assert listed.folder_counts == {"INBOX": 8, "Archive/2023": 3, "Empty": 0}
    assert not any(r.folder_outcomes for r in ledger.reports)  # a ZIP's records reach the ledger part by part


def test_gmail_labels_go_to_a_manifest_and_each_message_is_stored_once(s3):
    source = ScriptedSource({"[Gmail]/All Mail": [
        ("1:10", _msg(10), ("\\Inbox", "Work/Projekt Ä")),
        ("1:11", _msg(11), ("\\Sent",)),
        ("1:12", _msg(12), ()),
    ]})
    result = run_export(source, s3.client(), spec(s3), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED
    with zipfile.ZipFile(s3.path("exports/2024/alice.zip")) as archive:
        manifest = archive.read("labels.csv").decode()
        emls = [n for n in archive.namelist() if n.endswith(".eml")]
    assert len(emls) == 3
    assert manifest.splitlines()[0] == "entry,folder,source_id,labels"
    assert '[Gmail]/All Mail/000001_message 10.eml,[Gmail]/All Mail,1:10,"[""\\\\Inbox"", ""Work/Projekt Ä""]"' in manifest
    assert len(manifest.splitlines()) == 3  # header + two labelled messages


def test_empty_mailbox_makes_a_valid_empty_archive(s3):
    result = run_export(ScriptedSource({"INBOX": []}), s3.client(), spec(s3), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED
    with zipfile.ZipFile(s3.path("exports/2024/alice.zip")) as archive:
        assert archive.namelist() == ["INBOX/"]
    assert read_report(s3, "exports/2024/alice.report.csv") == []


def test_report_upload_failure_keeps_the_archive_and_a_retry_only_writes_the_report(dovecot, s3):
    write_maildir(dovecot, USER, generate_mailbox("test"))
    truth = truth_of(dovecot)
    ledger = MemoryLedger()
    tuning = fast_tuning(retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01))
    with S3FaultProxy(s3.url, fail_puts_ending=".report.csv", fail_puts=1000) as proxy:
        with imap_source(dovecot) as source:
            first = run_export(source, s3.client(proxy.url), spec(s3), ledger, tuning)
    assert first.state == FAILED_STATE and "is complete, but its report could not be written" in first.error
    assert ledger.load_upload().archive_complete
    commits = ledger.commits
    with imap_source(dovecot) as source:
        second = run_export(source, s3.client(), spec(s3), ledger, tuning)
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
            run_export(source, client, spec(s3), ledger, fast_tuning())
    upload = ledger.load_upload()
    assert upload is not None and len(upload.parts) == 2  # the ledger was not reset...
    assert [u["UploadId"] for u in multipart_uploads(client, s3.bucket)] == [upload.upload_id]  # ...nor the upload aborted
    client.abort_multipart_upload(Bucket=s3.bucket, Key=upload.key, UploadId=upload.upload_id)


def test_folder_vanishing_mid_fetch_reports_its_remaining_messages(s3):
    from connectors.model import FolderUnavailable

    class Vanishing(ScriptedSource):
        def fetch_messages(self, folder, ids):
            for n, message in enumerate(super().fetch_messages(folder, ids)):
                if folder.path == "INBOX" and n == 3:
                    raise FolderUnavailable("The folder 'INBOX' cannot be opened: NO Mailbox doesn't exist")
                yield message

    source = Vanishing({"INBOX": [(str(n), _msg(n), ()) for n in range(10)],
                        "Sent": [("s1", _msg(99), ())]})
    result = run_export(source, s3.client(), spec(s3), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED_WITH_ERRORS
    inbox = next(f for f in result.folders if f.folder == "INBOX")
    assert (inbox.source_count, inbox.exported, inbox.failed) == (10, 3, 7)
    assert next(f for f in result.folders if f.folder == "Sent").exported == 1
    rows = [r for r in read_report(s3, "exports/2024/alice.report.csv") if r["status"] == "failed"]
    assert len(rows) == 7 and "became unreadable" in rows[0]["error"]


@pytest.mark.parametrize("archive_format", ["zip", "pst"])
def test_report_reads_the_headers_of_messages_with_cr_lf_or_mixed_line_endings(dovecot, s3, archive_format):
    """Dovecot serves each message's bytes as stored: CRLF, bare LF, bare CR (old Mac mail) and a
    mix of them. Every one keeps its subject and Message-ID in report.csv; a ZIP entry stays
    byte-exact."""
    from tests.mailgen import GeneratedMessage, Mailbox

    when = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    raws = {f"<{name}@endings>": ending.join([
        f"Subject: =?UTF-8?Q?{name}_=C3=BC?=".encode(), b"  folded", f"Message-ID: <{name}@endings>".encode(),
        b"From: Ann <ann@example.com>", b"", b"Subject: not this one", b""])
        for name, ending in (("crlf", b"\r\n"), ("lf", b"\n"), ("cr", b"\r"))}
    raws["<mixed@endings>"] = (b"Subject: mixed\r =?ISO-8859-1?Q?f=FCr?=\nMessage-ID: <mixed@endings>\r\n"
                               b"From: ann@example.com\r\rSubject: not this one\r\n")
    messages = [GeneratedMessage("INBOX", raw, when) for raw in raws.values()]
    write_maildir(dovecot, USER, Mailbox("endings", 0, ["INBOX"], _factory=lambda: iter(messages)))
    with imap_source(dovecot) as source:
        result = run_export(source, s3.client(), spec(s3, format=archive_format), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    rows = {row["message_id"]: row for row in read_report(s3, "exports/2024/alice.report.csv")}
    assert set(rows) == set(raws)
    assert {rows[f"<{n}@endings>"]["subject"] for n in ("crlf", "lf", "cr")} == {
        "crlf ü folded", "lf ü folded", "cr ü folded"}
    assert rows["<mixed@endings>"]["subject"] == "mixed für"
    assert all(row["from"].endswith("ann@example.com>") or row["from"] == "ann@example.com" for row in rows.values())
    if archive_format == "zip":
        with zipfile.ZipFile(s3.path("exports/2024/alice.zip")) as archive:
            assert {archive.read(row["entry"]) for row in rows.values()} == set(raws.values())

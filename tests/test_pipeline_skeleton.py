"""The backup skeleton, written once for every format: each behaviour here is checked for ZIP
and PST alike (listing, one outcome per message, reconciliation, clean-up, the final state)."""

from __future__ import annotations

import datetime as dt
import zipfile
from dataclasses import replace as dataclasses_replace

import pytest

from connectors.model import FolderUnavailable
from connectors.pipeline.ledger import MemoryLedger
from connectors.pipeline.run import run_backup
from connectors.pipeline.spec import COMPLETED, COMPLETED_WITH_ERRORS, FAILED_STATE, ExportSpec
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import (
    USER,
    ScriptedSource,
    bucket_keys,
    fast_tuning,
    imap_source,
    multipart_uploads,
    numbered_message,
    read_report,
    read_summary,
)
from tests.mailgen import write_maildir

FORMATS = pytest.mark.parametrize("archive_format", ["zip", "pst"])


def spec(s3, archive_format: str, name="alice") -> ExportSpec:
    return ExportSpec(bucket=s3.bucket, prefix="exports/2024", file_name=name, format=archive_format)


def archived_messages(s3, archive_format: str) -> int:
    """How many messages the archive holds, read back by zipfile or libpff."""
    if archive_format == "zip":
        with zipfile.ZipFile(s3.path("exports/2024/alice.zip")) as archive:
            return sum(name.endswith(".eml") for name in archive.namelist())
    pypff = pytest.importorskip("pypff")
    pst = pypff.file()
    pst.open(str(s3.path("exports/2024/alice.pst")))
    try:
        def count(folder) -> int:
            return folder.number_of_sub_messages + sum(count(sub) for sub in folder.sub_folders)

        return count(pst.get_root_folder())
    finally:
        pst.close()


@FORMATS
def test_unreadable_messages_are_reported_never_lost(s3, archive_format):
    source = ScriptedSource({"INBOX": [(str(n), numbered_message(n), ()) for n in range(1, 9)]},
                            {"2": "fail", "3": "skip", "4": "omit", "5": "twice"})
    result = run_backup(source, s3.client(), spec(s3, archive_format), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED_WITH_ERRORS
    inbox = result.folders[0]
    assert (inbox.source_count, inbox.exported, inbox.failed, inbox.skipped) == (8, 5, 2, 1)
    rows = {row["source_id"]: row for row in read_report(s3, "exports/2024/alice.report.csv")}
    assert rows["2"]["status"] == "failed" and rows["2"]["error"] == "server said NO"
    assert rows["3"]["status"] == "skipped"
    assert rows["4"]["status"] == "failed" and "did not return" in rows["4"]["error"]
    assert archived_messages(s3, archive_format) == 5  # "5" stored once
    assert read_summary(s3, "exports/2024/alice.summary.json")["state"] == COMPLETED_WITH_ERRORS


@FORMATS
def test_folder_vanishing_mid_fetch_reports_its_remaining_messages(s3, archive_format):
    class Vanishing(ScriptedSource):
        def fetch_messages(self, folder, ids):
            for n, message in enumerate(super().fetch_messages(folder, ids)):
                if folder.path == "INBOX" and n == 3:
                    raise FolderUnavailable("The folder 'INBOX' cannot be opened: NO Mailbox doesn't exist")
                yield message

    source = Vanishing({"INBOX": [(str(n), numbered_message(n), ()) for n in range(10)],
                        "Sent": [("s1", numbered_message(99), ())]})
    result = run_backup(source, s3.client(), spec(s3, archive_format), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED_WITH_ERRORS, result.error
    inbox = next(f for f in result.folders if f.folder == "INBOX")
    assert (inbox.source_count, inbox.exported, inbox.failed) == (10, 3, 7)
    assert next(f for f in result.folders if f.folder == "Sent").exported == 1
    rows = [r for r in read_report(s3, "exports/2024/alice.report.csv") if r["status"] == "failed"]
    assert len(rows) == 7 and "became unreadable" in rows[0]["error"]


@FORMATS
def test_an_id_listed_twice_is_one_message_with_one_outcome(s3, archive_format):
    class Repeating(ScriptedSource):
        def list_message_ids(self, folder, *, since=None, before=None):
            return ["1", "2", "2", "3"]

    source = Repeating({"INBOX": [(str(n), numbered_message(n), ()) for n in range(1, 4)]}, {"2": "omit"})
    result = run_backup(source, s3.client(), spec(s3, archive_format), MemoryLedger(), fast_tuning())
    inbox = result.folders[0]
    assert (inbox.source_count, inbox.exported, inbox.failed) == (3, 2, 1) and inbox.reconciles
    assert [r["source_id"] for r in read_report(s3, "exports/2024/alice.report.csv")].count("2") == 1


class DoublingLedger(MemoryLedger):
    """Hands every committed message record back twice when the report is written (volume None):
    counts that no longer add up, as a ledger gone wrong would give."""

    def iter_records(self, volume=None):
        for record in super().iter_records(volume):
            yield record
            if volume is None and record.kind == "message":
                yield record


@FORMATS
def test_counts_that_do_not_reconcile_are_reported_whatever_the_format(s3, archive_format):
    source = ScriptedSource({"INBOX": [(str(n), numbered_message(n), ()) for n in range(1, 4)]})
    result = run_backup(source, s3.client(), spec(s3, archive_format), DoublingLedger(), fast_tuning())
    assert result.state == COMPLETED_WITH_ERRORS
    assert result.error == "Some folders' counts do not reconcile; see summary.json."
    summary = read_summary(s3, "exports/2024/alice.summary.json")
    assert summary["reconciled"] is False and summary["error"] == result.error
    assert (summary["folders"][0]["source_count"], summary["folders"][0]["exported"]) == (3, 6)


@FORMATS
@pytest.mark.parametrize("case", ["wrong-password", "unreachable"])
def test_source_errors_leave_nothing_behind(dovecot, s3, case, archive_format):
    client = s3.client()
    kwargs = {"password": "wrong"} if case == "wrong-password" else {"port": 1}
    with imap_source(dovecot, connect_attempts=1, **kwargs) as source:
        result = run_backup(source, client, spec(s3, archive_format), MemoryLedger(), fast_tuning())
    assert result.state == FAILED_STATE
    if case == "wrong-password":
        assert "refused the login of 'alice'" in result.error and "wrong" not in result.error.split("login")[0]
        assert "s3cret" not in result.error
    else:
        assert "refused the connection" in result.error
    assert bucket_keys(s3) == []
    assert multipart_uploads(client, s3.bucket) == []


@FORMATS
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
        result = run_backup(source, s3.client(), spec(s3, archive_format), MemoryLedger(), fast_tuning())
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


@FORMATS
def test_a_folder_to_include_the_source_lacks_fails_before_anything_is_written(s3, archive_format):
    client = s3.client()
    source = ScriptedSource({"INBOX": [("1", numbered_message(1), ())], "Sent": []})
    wanted = dataclasses_replace(spec(s3, archive_format), include=("DoesNotExist",))
    result = run_backup(source, client, wanted, MemoryLedger(), fast_tuning())
    assert result.state == FAILED_STATE
    assert result.error == ("The source has no folder 'DoesNotExist' (folders to include). "
                            "Its folders are: INBOX, Sent.")
    assert bucket_keys(s3) == [] and multipart_uploads(client, s3.bucket) == []


@FORMATS
def test_a_filter_that_leaves_no_message_completes_with_a_warning_in_the_summary(s3, archive_format):
    source = ScriptedSource({"INBOX": [("1", numbered_message(1), ())], "Leer": []})
    wanted = dataclasses_replace(spec(s3, archive_format), include=("Leer",), since=dt.date(2020, 1, 1))
    result = run_backup(source, s3.client(), wanted, MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED
    assert result.error.startswith("0 messages matched: folders Leer, since 2020-01-01.")
    assert read_summary(s3, "exports/2024/alice.summary.json")["error"] == result.error


@FORMATS
def test_an_empty_mailbox_without_filters_completes_without_a_warning(s3, archive_format):
    result = run_backup(ScriptedSource({"INBOX": []}), s3.client(), spec(s3, archive_format), MemoryLedger(),
                        fast_tuning())
    assert result.state == COMPLETED and "matched" not in result.error

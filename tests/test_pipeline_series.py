"""Incremental series in the engine, on a real Dovecot (with its rawlog) and a real S3 (rclone).

Each run has its own ledger (as each run is its own request in the portal); the series'
cursors come from the previous *completed* run's result, and what it archived from the
earlier completed runs' records. Dovecot's ``rawlog_dir`` writes every command a client sent,
so "no body was fetched" is read from the server's own log.
"""

from __future__ import annotations

import base64
import hashlib
import io
import random
import zipfile
from pathlib import Path

import pytest
from imapclient import IMAPClient

from connectors.pipeline.ledger import EXPORTED, MESSAGE, MemoryLedger
from connectors.pipeline.run import run_backup
from connectors.pipeline.series import Archived, SeriesContext
from connectors.pipeline.spec import CANCELLED, COMPLETED, FAILED_STATE, ExportSpec
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import (
    PASSWORD,
    USER,
    bucket_keys,
    fast_tuning,
    imap_source,
    read_summary,
)
from tests.servers.dovecot import DovecotServer

PREFIX = "series"


def message(n: int, folder: str = "INBOX") -> bytes:
    return (f"From: a@example.com\r\nTo: b@example.com\r\nSubject: {folder} {n}\r\n"
            f"Message-ID: <{folder}-{n}@example.com>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
            f"body of {folder} message {n}\r\n").encode()


@pytest.fixture
def logged_dovecot():
    with DovecotServer({USER: PASSWORD}, rawlog=True) as server:
        yield server


def append(dc, folder: str, numbers) -> None:
    with IMAPClient("127.0.0.1", dc.port, ssl=False) as client:
        client.plain_login(USER, PASSWORD)
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for n in numbers:
            client.append(folder, message(n, folder))


def expunge(dc, folder: str, numbers) -> None:
    with IMAPClient("127.0.0.1", dc.port, ssl=False) as client:
        client.plain_login(USER, PASSWORD)
        client.select_folder(folder)
        for n in numbers:
            found = client.search(["HEADER", "Message-ID", f"<{folder}-{n}@example.com>"])
            client.delete_messages(found)
        client.expunge()


class Series:
    """The runs of one series, as the portal chains them."""

    def __init__(self, dc, s3, name: str = "alice", format: str = "zip") -> None:
        self.dc, self.s3, self.name, self.format = dc, s3, name, format
        self.runs: list[tuple[MemoryLedger, object]] = []

    def completed(self):
        return [(ledger, r) for ledger, r in self.runs if r.state in (COMPLETED, "completed_with_errors")]

    def archived(self, folder: str):
        for ledger, _ in self.completed():
            for r in ledger.records:
                if r.kind == MESSAGE and r.status == EXPORTED and r.folder == folder:
                    yield Archived(r.source_id, r.message_id, r.size, date=r.date, from_=r.from_, subject=r.subject)

    def run(self, *, cancel: bool = False, password: str = PASSWORD, ledger: MemoryLedger | None = None):
        number = len(self.runs) + 1
        done = self.completed()
        cursors = done[-1][1].series["cursor"] if done else {}
        parent = {"run": len(done), "archives": [a.key for a in done[-1][1].archives]} if done else {}
        context = SeriesContext("series-key", run=number, parent=parent, cursors=cursors,
                                archived=self.archived)
        file_name = self.name if number == 1 else f"{self.name}.r{number:04d}"
        ledger = ledger or MemoryLedger()
        ledger.cancel = cancel
        before = self.dc.rawlog_sessions()
        with imap_source(self.dc, password=password) as source:
            result = run_backup(source, self.s3.client(), ExportSpec(
                bucket=self.s3.bucket, prefix=PREFIX, file_name=file_name, format=self.format, series=context),
                ledger, fast_tuning())
        self.last_commands = self.dc.client_commands(since=before)
        self.runs.append((ledger, result))
        return result


def entries(s3, key: str) -> dict[str, bytes]:
    data = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist() if n.endswith(".eml")}


def digest(key: str, s3) -> str:
    return hashlib.sha256(Path(s3.path(key)).read_bytes()).hexdigest()


def test_a_series_archives_everything_then_only_new_messages_then_nothing_without_reading_a_body(
        logged_dovecot, s3):
    dc = logged_dovecot
    append(dc, "INBOX", range(1, 6))
    append(dc, "Work", range(1, 4))
    series = Series(dc, s3)

    first = series.run()
    assert first.state == COMPLETED, first.error
    assert first.totals.exported == 8
    assert [a.key for a in first.archives] == [f"{PREFIX}/alice.zip"]
    first_zip = digest(f"{PREFIX}/alice.zip", s3)
    assert b"BODY.PEEK[]" in series.last_commands.upper()  # the rawlog sees what a body fetch looks like

    append(dc, "INBOX", [6, 7])
    append(dc, "Work", [4])
    second = series.run()
    assert second.state == COMPLETED, second.error
    assert second.totals.exported == 3
    assert [a.key for a in second.archives] == [f"{PREFIX}/alice.r0002.zip"]
    bodies = sorted(entries(s3, f"{PREFIX}/alice.r0002.zip").values())
    assert bodies == sorted([message(6), message(7), message(4, "Work")])
    assert digest(f"{PREFIX}/alice.zip", s3) == first_zip  # the first run's archive untouched
    summary = read_summary(s3, f"{PREFIX}/alice.r0002.summary.json")
    assert summary["series"]["key"] == "series-key"
    assert summary["series"]["parent"]["archives"] == [f"{PREFIX}/alice.zip"]
    assert summary["series"]["resumed_from"] == first.series["cursor"]
    assert summary["series"]["folders"]["INBOX"]["mode"] == "new"
    inbox = summary["series"]["cursor"]["INBOX"]
    assert inbox["highest"] == 7 and inbox["messages"] == 7 and inbox["uidnext"] == 8
    assert "highestmodseq" in inbox  # Dovecot offers CONDSTORE

    keys_before = bucket_keys(s3)
    third = series.run()
    assert third.state == COMPLETED, third.error
    assert third.totals.exported == 0 and third.archives == []
    assert third.series["new"] == 0 and third.series["unchanged"] == 2
    assert third.series["note"].startswith("0 new")
    new_keys = sorted(set(bucket_keys(s3)) - set(keys_before))
    assert new_keys == [f"{PREFIX}/alice.r0003.report.csv", f"{PREFIX}/alice.r0003.summary.json"]
    commands = series.last_commands.upper()
    assert b"STATUS" in commands
    assert b"FETCH" not in commands and b"SELECT" not in commands and b"EXAMINE" not in commands
    assert read_summary(s3, f"{PREFIX}/alice.r0003.summary.json")["series"]["new"] == 0


def test_messages_expunged_at_the_source_are_counted_and_stay_in_the_earlier_archive(logged_dovecot, s3):
    dc = logged_dovecot
    append(dc, "INBOX", range(1, 6))
    series = Series(dc, s3)
    assert series.run().state == COMPLETED
    expunge(dc, "INBOX", [2, 3])
    append(dc, "INBOX", [6])
    second = series.run()
    assert second.state == COMPLETED, second.error
    assert second.totals.exported == 1
    assert second.series["expunged"] == 2
    assert read_summary(s3, f"{PREFIX}/alice.r0002.summary.json")["series"]["folders"]["INBOX"]["expunged"] == 2
    assert len(entries(s3, f"{PREFIX}/alice.zip")) == 5

    expunge(dc, "INBOX", [4])  # only an expunge: MESSAGES changes, UIDNEXT does not
    third = series.run()
    assert third.state == COMPLETED and third.totals.exported == 0 and third.series["expunged"] == 1
    assert third.archives == []


def test_a_uidvalidity_reset_is_matched_again_by_headers_and_only_new_messages_are_archived(logged_dovecot, s3):
    dc = logged_dovecot
    append(dc, "INBOX", range(1, 6))
    series = Series(dc, s3)
    first = series.run()
    assert first.state == COMPLETED
    maildir = dc.maildir(USER, "INBOX")
    removed = [p for p in maildir.iterdir() if p.name.startswith(("dovecot-uidlist", "dovecot.index"))]
    assert removed
    for p in removed:
        p.unlink()
    append(dc, "INBOX", [6])
    second = series.run()
    assert second.state == COMPLETED, second.error
    cursor = second.series["cursor"]["INBOX"]
    assert cursor["uidvalidity"] != first.series["cursor"]["INBOX"]["uidvalidity"]
    assert second.series["folders"]["INBOX"]["mode"] == "rematched"
    assert second.totals.exported == 1
    assert list(entries(s3, f"{PREFIX}/alice.r0002.zip").values()) == [message(6)]
    commands = series.last_commands.upper()
    assert b"HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)" in commands
    assert commands.count(b"BODY.PEEK[]") == 1  # one body batch: the new message's


def test_a_cancelled_or_failed_run_moves_no_cursor(logged_dovecot, s3):
    dc = logged_dovecot
    append(dc, "INBOX", range(1, 4))
    series = Series(dc, s3)
    assert series.run().state == COMPLETED
    append(dc, "INBOX", [4, 5])
    assert series.run(cancel=True).state == CANCELLED
    assert series.run(password="wrong").state == FAILED_STATE
    fourth = series.run()
    assert fourth.state == COMPLETED, fourth.error
    assert fourth.totals.exported == 2
    assert sorted(entries(s3, f"{PREFIX}/alice.r0004.zip").values()) == sorted([message(4), message(5)])
    assert fourth.series["resumed_from"] == series.runs[0][1].series["cursor"]


def test_a_pst_series_writes_one_pst_per_run_with_new_messages_and_none_when_nothing_is_new(logged_dovecot, s3):
    dc = logged_dovecot
    append(dc, "INBOX", range(1, 4))
    series = Series(dc, s3, format="pst")
    first = series.run()
    assert first.state == COMPLETED, first.error
    assert [a.key for a in first.archives] == [f"{PREFIX}/alice.pst"] and first.totals.exported == 3
    second = series.run()
    assert second.state == COMPLETED and second.archives == [] and second.series["new"] == 0
    append(dc, "INBOX", [4])
    third = series.run()
    assert third.state == COMPLETED, third.error
    assert [a.key for a in third.archives] == [f"{PREFIX}/alice.r0003.pst"] and third.totals.exported == 1
    assert {f"{PREFIX}/alice.pst", f"{PREFIX}/alice.r0003.pst"} <= set(bucket_keys(s3))


class LedgerDownOnce(MemoryLedger):
    """The database goes away at the commit of part ``fail_at``, once: the run stops there with
    its upload and ledger as they were, as after a kill."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def commit_part(self, part, records) -> None:
        if part.number == self.fail_at:
            self.fail_at = 0
            raise RuntimeError("the database went away")
        super().commit_part(part, records)


def bulky(n: int) -> bytes:
    payload = base64.encodebytes(random.Random(n).randbytes(45_000)).replace(b"\n", b"\r\n")
    return (f"Subject: bulky {n}\r\nMessage-ID: <bulky-{n}@example.com>\r\n\r\n").encode() + payload


def test_a_series_run_stopped_mid_way_resumes_and_archives_each_new_message_once(logged_dovecot, s3):
    dc = logged_dovecot
    append(dc, "INBOX", range(1, 4))
    series = Series(dc, s3)
    assert series.run().state == COMPLETED
    with IMAPClient("127.0.0.1", dc.port, ssl=False) as client:
        client.plain_login(USER, PASSWORD)
        for n in range(10):
            client.append("INBOX", bulky(n))
    ledger = LedgerDownOnce(fail_at=2)
    with pytest.raises(RuntimeError, match="went away"):
        series.run(ledger=ledger)
    resumed = series.run(ledger=ledger)  # the stopped run left no result: run 2 again, with its ledger
    assert resumed.state == COMPLETED, resumed.error
    assert resumed.resumed and resumed.totals.exported == 10
    bodies = sorted(entries(s3, f"{PREFIX}/alice.r0002.zip").values())
    assert bodies == sorted(bulky(n) for n in range(10))


def test_ids_that_failed_in_the_previous_run_are_fetched_again_by_the_next(logged_dovecot, s3):
    from connectors.model import Folder

    dc = logged_dovecot
    append(dc, "INBOX", range(1, 4))
    series = Series(dc, s3)
    first = series.run()
    cursor = dict(first.series["cursor"]["INBOX"])
    failed = f"{cursor['uidvalidity']}:2"
    cursor["retry_ids"] = [failed, f"{cursor['uidvalidity']}:99"]  # 99: gone meanwhile, not asked for
    with imap_source(dc) as source:
        plan = source.series_plan(Folder("INBOX", "INBOX"), cursor, lambda folder: ())
    assert plan.mode == "new" and plan.ids == [failed]

"""Both ledgers keep the exactly-once contract: ordered atomic commits, reset, streaming reads."""

from __future__ import annotations

import pytest

from connectors.pipeline.ledger import (
    DIRECTORY,
    FAILED,
    MESSAGE,
    EntryRecord,
    Ledger,
    MemoryLedger,
    PartRecord,
    Progress,
    SqliteLedger,
    Volume,
)


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request, tmp_path):
    if request.param == "memory":
        return MemoryLedger()
    return SqliteLedger(tmp_path / "ledger.sqlite")


def test_commits_in_order_with_their_records(ledger):
    assert isinstance(ledger, Ledger)
    assert ledger.load_upload() is None
    ledger.begin_upload("p/f.zip", "upload-1", "zip")
    ledger.commit_part(PartRecord(1, '"e1"', 100), [
        EntryRecord(DIRECTORY, "INBOX", name="INBOX/"),
        EntryRecord(MESSAGE, "INBOX", "1:1", name="INBOX/000001_a.eml", sequence=1,
                    subject="Grüße", labels=("\\Inbox", "Work")),
    ])
    with pytest.raises(ValueError, match="out of order"):
        ledger.commit_part(PartRecord(3, '"e3"', 100), [])
    ledger.commit_part(PartRecord(2, '"e2"', 50, final=True), [
        EntryRecord(MESSAGE, "INBOX", "1:2", FAILED, error="NO"),
    ])
    upload = ledger.load_upload()
    assert (upload.key, upload.upload_id, [p.number for p in upload.parts]) == ("p/f.zip", "upload-1", [1, 2])
    assert upload.parts[-1].final and not upload.archive_complete
    assert ledger.committed_source_ids("INBOX") == {"", "1:1", "1:2"}
    assert ledger.last_sequence("INBOX") == 1 and ledger.last_sequence("Sent") == 0
    records = list(ledger.iter_records())
    assert [r.source_id for r in records] == ["", "1:1", "1:2"]
    assert records[1].labels == ("\\Inbox", "Work") and records[1].subject == "Grüße"
    ledger.mark_archive_complete(150, '"etag-2"')
    assert ledger.load_upload().archive_complete
    ledger.report_progress(Progress(messages_done=2))
    assert not ledger.cancel_requested()
    ledger.reset()
    assert ledger.load_upload() is None and list(ledger.iter_records()) == []


def test_sqlite_ledger_is_shared_across_connections(tmp_path):
    first = SqliteLedger(tmp_path / "l.sqlite")
    first.begin_upload("k", "u", "zip")
    first.commit_part(PartRecord(1, "e", 1), [EntryRecord(MESSAGE, "INBOX", "9:9")])
    first.report_progress(Progress(phase="transferring", messages_done=1))
    second = SqliteLedger(tmp_path / "l.sqlite")
    assert second.committed_source_ids("INBOX") == {"9:9"}
    assert second.load_progress().messages_done == 1
    second.request_cancel()
    assert first.cancel_requested()


def test_volumes_keep_records_and_restart_part_numbers(ledger):
    ledger.begin_upload("p/f.zip", "upload-1", "zip")
    ledger.commit_part(PartRecord(1, '"e1"', 100), [EntryRecord(MESSAGE, "INBOX", "1:1", name="INBOX/000001_a.eml",
                                                                 sequence=1)])
    ledger.commit_part(PartRecord(2, '"e2"', 50, final=True, next_volume=True), [
        EntryRecord(MESSAGE, "INBOX", "1:2", name="INBOX/000002_b.eml", sequence=2)])
    upload = ledger.load_upload()
    assert upload.volume == 1 and upload.volumes == [] and upload.parts[-1].next_volume
    ledger.mark_archive_complete(150, '"etag"')
    with pytest.raises(ValueError, match="not the current volume"):
        ledger.begin_volume(Volume(2, "p/f.part002.zip", 150, 2), "p/f.part003.zip", "upload-3")
    ledger.begin_volume(Volume(1, "p/f.part001.zip", 150, 2), "p/f.part002.zip", "upload-2")
    upload = ledger.load_upload()
    assert (upload.key, upload.upload_id, upload.volume, upload.parts) == ("p/f.part002.zip", "upload-2", 2, [])
    assert not upload.archive_complete
    assert upload.volumes == [Volume(1, "p/f.part001.zip", 150, 2)]
    ledger.commit_part(PartRecord(1, '"e3"', 70, final=True), [
        EntryRecord(MESSAGE, "INBOX", "1:3", name="INBOX/000003_c.eml", sequence=3, volume=2)])
    assert ledger.committed_source_ids("INBOX") == {"1:1", "1:2", "1:3"}
    assert ledger.last_sequence("INBOX") == 3
    assert [r.source_id for r in ledger.iter_records(volume=1)] == ["1:1", "1:2"]
    assert [r.source_id for r in ledger.iter_records(volume=2)] == ["1:3"]
    assert len(list(ledger.iter_records())) == 3
    ledger.reset()
    assert ledger.load_upload() is None and list(ledger.iter_records()) == []
    ledger.begin_upload("p/f.zip", "upload-4", "zip")
    assert ledger.load_upload().volumes == [] and ledger.load_upload().volume == 1


def test_records_of_whole_files_are_committed_without_a_part(ledger):
    """A PST export uploads whole files and commits every record once they are complete."""
    ledger.begin_upload("p/f.pst", "upload-1", "pst")
    records = [EntryRecord(MESSAGE, "INBOX", f"1:{n}", name="p/f.pst", size=n, subject=f"Grüße {n}")
               for n in range(1, 2501)] + [EntryRecord(MESSAGE, "INBOX", "1:9999", FAILED, error="NO")]
    ledger.commit_records(iter(records))
    assert list(ledger.iter_records()) == records
    assert ledger.load_upload().parts == [] and ledger.committed_source_ids("INBOX") == {r.source_id for r in records}
    ledger.reset()
    assert list(ledger.iter_records()) == []

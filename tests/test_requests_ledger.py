"""DatabaseLedger: the engine's Ledger on a MigrationRequest, volumes of a split ZIP included."""

from __future__ import annotations

import pytest

from connectors.pipeline.ledger import MESSAGE, EntryRecord, PartRecord, Volume
from requests_app.ledger import DatabaseLedger
from requests_app.lifecycle import Superseded
from requests_app.models import MigrationRequest, UploadedPart

pytestmark = pytest.mark.django_db


@pytest.fixture
def request_row(tenant):
    from buckets.models import Bucket

    bucket = Bucket.objects.create(tenant=tenant, name="ledger-bucket", region="us-east-1", purpose="destination",
                                   status="verified")
    return MigrationRequest.objects.create(tenant=tenant, request_type="IMAP-S3-ZIP", bucket=bucket,
                                           file_name="f", checkpoint={"run_token": "run-1"})


def test_volumes_on_the_request_row(request_row):
    ledger = DatabaseLedger(request_row.pk, "run-1")
    ledger.begin_upload("p/f.zip", "upload-1", "zip")
    ledger.commit_part(PartRecord(1, '"e1"', 100, final=True, next_volume=True), [
        EntryRecord(MESSAGE, "INBOX", "1:1", name="INBOX/000001_a.eml", sequence=1)])
    assert ledger.load_upload().parts == [PartRecord(1, '"e1"', 100, True, True)]
    ledger.mark_archive_complete(100, '"etag"')
    ledger.begin_volume(Volume(1, "p/f.part001.zip", 100, 1), "p/f.part002.zip", "upload-2")
    upload = ledger.load_upload()
    assert (upload.key, upload.upload_id, upload.volume, upload.parts) == ("p/f.part002.zip", "upload-2", 2, [])
    assert upload.volumes == [Volume(1, "p/f.part001.zip", 100, 1)] and not upload.archive_complete
    assert UploadedPart.objects.filter(request=request_row).count() == 0  # the finished volume's parts
    ledger.commit_part(PartRecord(1, '"e2"', 80), [
        EntryRecord(MESSAGE, "INBOX", "1:2", name="INBOX/000002_b.eml", sequence=2, volume=2)])
    assert [r.source_id for r in ledger.iter_records(volume=1)] == ["1:1"]
    assert [r.source_id for r in ledger.iter_records(volume=2)] == ["1:2"]
    assert ledger.committed_source_ids("INBOX") == {"1:1", "1:2"}
    with pytest.raises(ValueError, match="not the current volume"):
        ledger.begin_volume(Volume(1, "p/f.part001.zip", 100, 1), "p/f.part002.zip", "upload-3")
    with pytest.raises(Superseded):
        DatabaseLedger(request_row.pk, "run-2").begin_volume(Volume(2, "k", 1, 1), "p/f.part003.zip", "u")
    ledger.reset()
    assert ledger.load_upload() is None and list(ledger.iter_records()) == []


def test_the_committed_archive_outlives_resets_and_is_written_only_by_the_owner(request_row):
    from connectors.pipeline.ledger import Move, Publication

    ledger = DatabaseLedger(request_row.pk, "run-1")
    assert ledger.archive_keys() == [] and ledger.publication() is None
    ledger.begin_upload("p/.legacyflo-new.f.part001.zip", "upload-1", "zip")
    publication = Publication([Move("p/.legacyflo-new.f.part001.zip", "p/f.part001.zip", 100)], ["p/f.part002.zip"])
    ledger.commit_archive(["p/f.part001.zip"], publication)
    assert ledger.archive_keys() == ["p/f.part001.zip"] and ledger.publication() == publication
    ledger.publication_done(Publication(stale=["p/f.part002.zip"]))
    assert ledger.publication() == Publication([], ["p/f.part002.zip"])
    ledger.reset()  # a retry, a failed run: the archive in the bucket is still this request's
    assert ledger.archive_keys() == ["p/f.part001.zip"] and ledger.publication() is not None
    ledger.publication_done(None)
    request_row.refresh_from_db()
    assert request_row.checkpoint["archives"] == ["p/f.part001.zip"] and "publication" not in request_row.checkpoint
    with pytest.raises(Superseded):
        DatabaseLedger(request_row.pk, "run-2").commit_archive(["p/other.zip"], None)
    with pytest.raises(Superseded):
        DatabaseLedger(request_row.pk, "run-2").publication_done(None)
    assert ledger.archive_keys() == ["p/f.part001.zip"]


def test_records_of_whole_files_are_committed_in_one_transaction_by_their_owner(request_row):
    ledger = DatabaseLedger(request_row.pk, "run-1")
    ledger.begin_upload("p/f.pst", "upload-1", "pst")
    records = [EntryRecord(MESSAGE, "INBOX", f"1:{n}", name="p/f.pst", size=n) for n in range(1, 2502)]
    ledger.commit_records(iter(records))
    assert list(ledger.iter_records()) == records  # in order, over several insert batches
    assert set(request_row.records.values_list("part_number", flat=True)) == {None}
    with pytest.raises(Superseded):
        DatabaseLedger(request_row.pk, "run-2").commit_records(records[:1])
    assert request_row.records.count() == len(records)


def test_records_keep_flags_labels_and_internal_date_for_a_resumed_index(request_row):
    """What a resumed ZIP rebuilds its index.csv and UT fields from survives the database."""
    from connectors.pipeline.ledger import SqliteLedger

    record = EntryRecord(MESSAGE, "INBOX", "1:7", name="INBOX/000001_a.eml", sequence=1, sha256="ab",
                         labels=("Work", "Ünï"), imap_flags=("\\Seen", "$Forwarded", "Projekt_X"),
                         internal_date="2021-01-03T10:00:07+02:00")
    ledger = DatabaseLedger(request_row.pk, "run-1")
    ledger.begin_upload("p/f.zip", "upload-1", "zip")
    ledger.commit_part(PartRecord(1, '"e1"', 100), [record, EntryRecord(MESSAGE, "INBOX", "1:8", sequence=2)])
    stored, older = list(DatabaseLedger(request_row.pk, "run-1").iter_records())
    assert stored == record
    assert (older.imap_flags, older.internal_date) == ((), "")
    from requests_app.models import ArchiveRecord

    ArchiveRecord.objects.filter(source_id="1:8").update(entry={"name": ""})  # a row from before the fields
    assert list(ledger.iter_records())[1].imap_flags == ()
    sqlite = SqliteLedger(":memory:")
    sqlite.begin_upload("p/f.zip", "upload-1", "zip")
    sqlite.commit_part(PartRecord(1, '"e1"', 100), [record])
    assert list(sqlite.iter_records()) == [record]

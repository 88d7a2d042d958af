"""The typed checkpoint of a request row: it reads back exactly the JSON it writes, and keeps
what it does not know."""

from __future__ import annotations

from connectors.pipeline.ledger import Move, Publication, UploadState, Volume
from requests_app.checkpoint import Checkpoint

STORED = {
    "run_token": "run-7", "job_id": "request-abc",
    "upload": {"key": "mail/x.part003.zip", "upload_id": "u-3", "format": "zip", "volume": 3, "volumes": [
        {"number": 1, "key": "mail/x.part001.zip", "size": 18, "parts": 1},
        {"number": 2, "key": "mail/x.part002.zip", "size": 20, "parts": 2}],
        "archive_complete": True, "archive_size": 5, "archive_etag": '"e-2"'},
    "archives": ["mail/x.zip"],
    "publication": {"moves": [["mail/.legacyflo-new.x.zip", "mail/x.zip", 5]], "stale": ["mail/x.part009.zip"]},
    "written_by_a_newer_release": {"kept": True},
}


def test_a_stored_checkpoint_reads_back_typed_and_writes_the_same_json():
    checkpoint = Checkpoint.from_json(STORED)
    assert checkpoint.upload == UploadState("mail/x.part003.zip", "u-3", "zip", archive_complete=True, archive_size=5,
                                            archive_etag='"e-2"', volume=3,
                                            volumes=[Volume(1, "mail/x.part001.zip", 18, 1),
                                                     Volume(2, "mail/x.part002.zip", 20, 2)])
    assert checkpoint.publication == Publication([Move("mail/.legacyflo-new.x.zip", "mail/x.zip", 5)],
                                                 ["mail/x.part009.zip"])
    assert (checkpoint.run_token, checkpoint.job_id, checkpoint.archives) == ("run-7", "request-abc", ["mail/x.zip"])
    assert checkpoint.to_json() == STORED


def test_a_first_upload_is_stored_as_its_key_id_and_format_only():
    checkpoint = Checkpoint(upload=UploadState("mail/a.zip", "u-1", "zip"))
    assert checkpoint.to_json() == {"upload": {"key": "mail/a.zip", "upload_id": "u-1", "format": "zip"}}


def test_no_archive_yet_differs_from_an_empty_list_of_archive_keys():
    assert Checkpoint.from_json({}).archives is None and Checkpoint.from_json(None).to_json() == {}
    assert Checkpoint(archives=[]).to_json() == {"archives": []}
    assert Checkpoint.from_json({"archives": []}).archives == []

"""A run into the prefix and file name of an earlier one that made other volumes (fewer, or
split where it was not, or the reverse) leaves only its own archive files: real Dovecot or a
scripted source → engine → rclone's S3 (moto's too for the listing's pages)."""

from __future__ import annotations

import pytest

from connectors.export import COMPLETED, ExportSpec, MemoryLedger, run_export
from connectors.s3sink import RetryPolicy
from connectors.stalevolumes import delete_stale_volumes
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import (
    USER,
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
from tests.test_connectors_zipsplit import ListSource, noise_message

MB = 1024 * 1024
REPORTS = ["split/alice.report.csv", "split/alice.summary.json"]
# Other files in the bucket whose names merely look like the archive's: never touched.
NEIGHBOURS = ["split/alice2.zip", "split/alice.part001.zip.bak", "split/alice.part01.zip",
              "split/alice.partial.zip", "split/alice/inner.part001.zip", "split/alice.pst",
              "other/alice.part002.zip", "alice.zip"]


def zip_spec(s3, split_bytes: int | None) -> ExportSpec:
    return ExportSpec(bucket=s3.bucket, prefix="split", file_name="alice", split_bytes=split_bytes)


def pst_spec(s3, split_bytes: int | None) -> ExportSpec:
    return ExportSpec(bucket=s3.bucket, prefix="split", file_name="alice", format="pst", split_bytes=split_bytes)


def put_objects(client, bucket: str, keys) -> None:
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"not part of any archive of split/alice")


def export_dovecot(dovecot, s3, spec: ExportSpec):
    with imap_source(dovecot) as source:
        result = run_export(source, s3.client(), spec, MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    return result


@pytest.fixture
def mailbox(dovecot):
    write_maildir(dovecot, USER, generate_mailbox("test"))
    write_maildir(dovecot, USER, generate_mailbox("flat", seed=7, count=80, size=20_000, folder="Bulk"))
    return truth_of(dovecot)


def test_a_rerun_that_fits_in_one_file_deletes_the_earlier_volumes(dovecot, s3, mailbox):
    put_objects(s3.client(), s3.bucket, NEIGHBOURS)
    first = export_dovecot(dovecot, s3, zip_spec(s3, 1 * MB))
    assert [a.key for a in first.archives] == [f"split/alice.part00{n}.zip" for n in (1, 2, 3)]

    again = export_dovecot(dovecot, s3, zip_spec(s3, 64 * MB))  # what Retry does: a fresh ledger
    assert [a.key for a in again.archives] == ["split/alice.zip"] and again.error == ""
    facts = verify_export(s3, "split/alice", mailbox)  # and no other split/alice(.partNNN).zip
    assert [a["key"] for a in facts["summary"]["archives"]] == ["split/alice.zip"]
    assert {row["archive"] for row in facts["report"]} == {"split/alice.zip"}
    assert bucket_keys(s3) == sorted(["split/alice.zip", *REPORTS, *NEIGHBOURS])
    assert multipart_uploads(s3.client(), s3.bucket) == []


def test_a_split_rerun_leaves_no_single_file(dovecot, s3, mailbox):
    put_objects(s3.client(), s3.bucket, NEIGHBOURS)
    first = export_dovecot(dovecot, s3, zip_spec(s3, None))
    assert [a.key for a in first.archives] == ["split/alice.zip"]

    again = export_dovecot(dovecot, s3, zip_spec(s3, 1 * MB))
    keys = [a.key for a in again.archives]
    assert len(keys) == 3 and again.error == ""
    verify_export(s3, "split/alice", mailbox, split_bytes=1 * MB)
    assert bucket_keys(s3) == sorted([*keys, *REPORTS, *NEIGHBOURS])


def _noise_mailbox(count: int = 30) -> ListSource:
    return ListSource({"INBOX": [(str(n), noise_message(n, 120_000), ()) for n in range(count)]})


def test_a_rerun_with_fewer_volumes_deletes_only_the_ones_beyond(s3):
    put_objects(s3.client(), s3.bucket, NEIGHBOURS)
    source = _noise_mailbox()
    first = run_export(source, s3.client(), zip_spec(s3, 1 * MB), MemoryLedger(), fast_tuning())
    assert first.state == COMPLETED and len(first.archives) == 4

    again = run_export(source, s3.client(), zip_spec(s3, 2 * MB), MemoryLedger(), fast_tuning())
    keys = [a.key for a in again.archives]
    assert again.state == COMPLETED and keys == ["split/alice.part001.zip", "split/alice.part002.zip"]
    verify_export(s3, "split/alice", source.truth(), split_bytes=2 * MB)
    assert bucket_keys(s3) == sorted([*keys, *REPORTS, *NEIGHBOURS])


def test_an_undeletable_earlier_volume_is_reported_and_a_rerun_deletes_it(s3):
    """DeleteObject of part003 keeps failing: the export completes all the same and says which
    file remains; run again (as after a kill before the report), it deletes the file."""
    source = _noise_mailbox()
    first = run_export(source, s3.client(), zip_spec(s3, 1 * MB), MemoryLedger(), fast_tuning())
    assert len(first.archives) == 4

    ledger = MemoryLedger()
    with S3FaultProxy(s3.url, fail_deletes_ending="/split/alice.part003.zip", fail_deletes=1000) as proxy:
        again = run_export(source, s3.client(proxy.url), zip_spec(s3, 64 * MB), ledger, fast_tuning())
    assert again.state == COMPLETED
    assert [a.key for a in again.archives] == ["split/alice.zip"]
    assert proxy.injected >= 4  # retried as every S3 call is
    assert "split/alice.part003.zip" in again.error and "delete them by hand" in again.error
    summary = read_summary(s3, "split/alice.summary.json")
    assert summary["state"] == COMPLETED and summary["error"] == again.error
    assert bucket_keys(s3) == sorted(["split/alice.zip", "split/alice.part003.zip", *REPORTS])

    rerun = run_export(source, s3.client(), zip_spec(s3, 64 * MB), ledger, fast_tuning())
    assert rerun.state == COMPLETED and rerun.resumed and rerun.error == ""
    assert bucket_keys(s3) == sorted(["split/alice.zip", *REPORTS])
    assert read_summary(s3, "split/alice.summary.json")["error"] == ""


# ---- PST -----------------------------------------------------------------------------------------

@pytest.fixture
def pst_mailbox(dovecot):
    write_maildir(dovecot, USER, generate_mailbox("flat", count=60, size=30_000))
    return truth_of(dovecot)


def test_pst_rerun_in_one_file_deletes_the_earlier_parts(dovecot, s3, pst_mailbox):
    neighbours = ["split/alice2.pst", "split/alice.part001.pst.bak", "split/alice.zip"]
    put_objects(s3.client(), s3.bucket, neighbours)
    first = export_dovecot(dovecot, s3, pst_spec(s3, 700_000))
    assert len(first.archives) >= 2 and first.archives[0].key == "split/alice.part001.pst"

    again = export_dovecot(dovecot, s3, pst_spec(s3, None))
    assert [a.key for a in again.archives] == ["split/alice.pst"] and again.error == ""
    assert bucket_keys(s3) == sorted(["split/alice.pst", "split/alice.report.csv", "split/alice.summary.json",
                                      *neighbours])
    assert {row["entry"] for row in read_report(s3, "split/alice.report.csv")} == {"split/alice.pst"}
    assert [a["key"] for a in read_summary(s3, "split/alice.summary.json")["archives"]] == ["split/alice.pst"]


def test_pst_split_rerun_leaves_no_single_file(dovecot, s3, pst_mailbox):
    """The first PST part is uploaded as FILE.pst and restarted as FILE.part001.pst, so without
    the clean-up the earlier run's FILE.pst stayed."""
    first = export_dovecot(dovecot, s3, pst_spec(s3, None))
    assert [a.key for a in first.archives] == ["split/alice.pst"]

    again = export_dovecot(dovecot, s3, pst_spec(s3, 700_000))
    keys = [a.key for a in again.archives]
    assert len(keys) >= 2 and again.error == ""
    assert bucket_keys(s3) == sorted([*keys, "split/alice.report.csv", "split/alice.summary.json"])
    assert {row["entry"] for row in read_report(s3, "split/alice.report.csv")} == set(keys)
    assert multipart_uploads(s3.client(), s3.bucket) == []


# ---- the listing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("server", ["rclone", "moto"])
def test_only_this_archives_names_are_deleted_across_listing_pages(request, s3, server):
    if server == "moto":
        client, bucket = request.getfixturevalue("moto").client(), "stale-volumes"
        client.create_bucket(Bucket=bucket)
    else:
        client, bucket = s3.client(), s3.bucket
    ours = ["split/alice.zip", "split/alice.part001.zip", "split/alice.part002.zip", "split/alice.part1000.zip"]
    put_objects(client, bucket, [*ours, *NEIGHBOURS, *REPORTS])
    warning = delete_stale_volumes(client, bucket, "split/alice", "zip", {"split/alice.part002.zip"},
                                   retry=RetryPolicy(attempts=2, base_delay=0.01), page_size=2)
    assert warning == ""
    left = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert left == sorted(["split/alice.part002.zip", *NEIGHBOURS, *REPORTS])
    again = delete_stale_volumes(client, bucket, "split/alice", "zip", {"split/alice.part002.zip"},
                                 retry=RetryPolicy(attempts=2, base_delay=0.01), page_size=2)
    assert again == ""
    assert sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]) == left

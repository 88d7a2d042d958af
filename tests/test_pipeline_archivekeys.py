"""What a run of an export may replace or delete in the bucket (``connectors.pipeline.archivekeys``):
real Dovecot or a scripted source → engine → rclone's S3 (moto's too for the deletions).

A request's runs share one ledger, as the portal's do: a Retry resets it (``retry``), and its
``archive_keys`` — the archive the last committed run left — survive. A run replaces or deletes
only files of that archive, and only once its own archive is complete; files merely named like
its archive's are never touched.
"""

from __future__ import annotations

import hashlib

import pytest

from connectors.model import MessageFailure
from connectors.pipeline.archivekeys import (
    ArchiveNames,
    commit_archive,
    file_name_problem,
    final_key,
    staging_key,
)
from connectors.pipeline.ledger import MemoryLedger, Move, Publication
from connectors.pipeline.run import run_backup
from connectors.pipeline.spec import (
    CANCELLED,
    COMPLETED,
    COMPLETED_WITH_ERRORS,
    FAILED_STATE,
    ExportSpec,
)
from connectors.storage.s3.sink import RetryPolicy
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
from tests.test_pipeline_zip_split import ListSource, noise_message

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


def snapshot(s3) -> dict[str, str]:
    """Every object of the bucket and the SHA-256 of its bytes."""
    return {key: hashlib.sha256(s3.path(key).read_bytes()).hexdigest() for key in bucket_keys(s3)}


class RequestLedger(MemoryLedger):
    """One request's ledger across its runs. ``retry()`` does what the portal's Retry does to it
    (records and upload forgotten, the committed archive remembered), and may arm a cancel: in
    ``cancel_in_volume`` once it has ``cancel_after`` parts, or (PST) once a file is complete."""

    def __init__(self) -> None:
        super().__init__()
        self.cancel_in_volume: int | None = None
        self.cancel_after = 1
        self.cancel_after_a_file = False

    def retry(self, *, cancel_in_volume: int | None = None, cancel_after: int = 1,
              cancel_after_a_file: bool = False) -> RequestLedger:
        self.reset()
        self.cancel_in_volume, self.cancel_after = cancel_in_volume, cancel_after
        self.cancel_after_a_file = cancel_after_a_file
        return self

    def cancel_requested(self) -> bool:
        upload = self.upload
        if upload is None:
            return False
        if self.cancel_after_a_file:
            return upload.archive_complete or upload.volume >= 2
        return upload.volume == self.cancel_in_volume and len(upload.parts) >= self.cancel_after


class UnreadableSource(ListSource):
    """A ListSource whose ``unreadable`` ids the server cannot serve (completed_with_errors)."""

    def __init__(self, folders, unreadable=(), fail_after=None) -> None:
        super().__init__(folders, fail_after=fail_after)
        self.unreadable = set(unreadable)

    def fetch_messages(self, folder, ids):
        ids = list(ids)
        yield from super().fetch_messages(folder, [i for i in ids if i not in self.unreadable])
        for sid in ids:
            if sid in self.unreadable:
                yield MessageFailure(folder.path, sid, "The server could not read this message.")


def noise_folders(count: int = 30, size: int = 120_000) -> dict:
    return {"INBOX": [(str(n), noise_message(n, size), ()) for n in range(count)]}


def export_dovecot(dovecot, s3, spec: ExportSpec, ledger=None):
    with imap_source(dovecot) as source:
        result = run_backup(source, s3.client(), spec, ledger if ledger is not None else MemoryLedger(),
                            fast_tuning())
    assert result.state == COMPLETED, result.error
    return result


@pytest.fixture
def mailbox(dovecot):
    write_maildir(dovecot, USER, generate_mailbox("test"))
    write_maildir(dovecot, USER, generate_mailbox("flat", seed=7, count=80, size=20_000, folder="Bulk"))
    return truth_of(dovecot)


# ---- a retry that completes replaces the earlier archive, and only it ------------------------------

def test_a_retry_that_fits_in_one_file_deletes_the_earlier_volumes(dovecot, s3, mailbox):
    put_objects(s3.client(), s3.bucket, NEIGHBOURS)
    ledger = RequestLedger()
    first = export_dovecot(dovecot, s3, zip_spec(s3, 1 * MB), ledger)
    assert [a.key for a in first.archives] == [f"split/alice.part00{n}.zip" for n in (1, 2, 3)]

    again = export_dovecot(dovecot, s3, zip_spec(s3, 64 * MB), ledger.retry())
    assert [a.key for a in again.archives] == ["split/alice.zip"] and again.error == ""
    facts = verify_export(s3, "split/alice", mailbox)  # and no other split/alice(.partNNN).zip
    assert [a["key"] for a in facts["summary"]["archives"]] == ["split/alice.zip"]
    assert {row["archive"] for row in facts["report"]} == {"split/alice.zip"}
    assert bucket_keys(s3) == sorted(["split/alice.zip", *REPORTS, *NEIGHBOURS])
    assert multipart_uploads(s3.client(), s3.bucket) == []
    assert ledger.archive_keys() == ["split/alice.zip"] and ledger.publication() is None


def test_a_split_retry_leaves_no_single_file(dovecot, s3, mailbox):
    put_objects(s3.client(), s3.bucket, NEIGHBOURS)
    ledger = RequestLedger()
    first = export_dovecot(dovecot, s3, zip_spec(s3, None), ledger)
    assert [a.key for a in first.archives] == ["split/alice.zip"]

    again = export_dovecot(dovecot, s3, zip_spec(s3, 1 * MB), ledger.retry())
    keys = [a.key for a in again.archives]
    assert len(keys) == 3 and again.error == ""
    verify_export(s3, "split/alice", mailbox, split_bytes=1 * MB)
    assert bucket_keys(s3) == sorted([*keys, *REPORTS, *NEIGHBOURS])


def test_a_retry_with_fewer_volumes_deletes_only_the_ones_beyond(s3):
    put_objects(s3.client(), s3.bucket, NEIGHBOURS)
    source = ListSource(noise_folders())
    ledger = RequestLedger()
    first = run_backup(source, s3.client(), zip_spec(s3, 1 * MB), ledger, fast_tuning())
    assert first.state == COMPLETED and len(first.archives) == 4

    again = run_backup(source, s3.client(), zip_spec(s3, 2 * MB), ledger.retry(), fast_tuning())
    keys = [a.key for a in again.archives]
    assert again.state == COMPLETED and keys == ["split/alice.part001.zip", "split/alice.part002.zip"]
    verify_export(s3, "split/alice", source.truth(), split_bytes=2 * MB)
    assert bucket_keys(s3) == sorted([*keys, *REPORTS, *NEIGHBOURS])  # no staging key left either


def test_an_undeletable_earlier_volume_is_reported_and_a_rerun_deletes_it(s3):
    """DeleteObject of part003 keeps failing: the export completes all the same and says which
    file remains; run again (as after a kill before the report), it deletes the file."""
    source = ListSource(noise_folders())
    ledger = RequestLedger()
    first = run_backup(source, s3.client(), zip_spec(s3, 1 * MB), ledger, fast_tuning())
    assert len(first.archives) == 4

    ledger.retry()
    with S3FaultProxy(s3.url, fail_deletes_ending="/split/alice.part003.zip", fail_deletes=1000) as proxy:
        again = run_backup(source, s3.client(proxy.url), zip_spec(s3, 64 * MB), ledger, fast_tuning())
    assert again.state == COMPLETED
    assert [a.key for a in again.archives] == ["split/alice.zip"]
    assert proxy.injected >= 4  # retried as every S3 call is
    assert "split/alice.part003.zip" in again.error and "delete them by hand" in again.error
    summary = read_summary(s3, "split/alice.summary.json")
    assert summary["state"] == COMPLETED and summary["error"] == again.error
    assert bucket_keys(s3) == sorted(["split/alice.zip", "split/alice.part003.zip", *REPORTS])
    assert ledger.publication() == Publication(stale=["split/alice.part003.zip"])

    rerun = run_backup(source, s3.client(), zip_spec(s3, 64 * MB), ledger, fast_tuning())
    assert rerun.state == COMPLETED and rerun.resumed and rerun.error == ""
    assert bucket_keys(s3) == sorted(["split/alice.zip", *REPORTS])
    assert read_summary(s3, "split/alice.summary.json")["error"] == ""


# ---- files this request's runs did not write are never touched ---------------------------------

def test_another_requests_archive_named_like_a_volume_survives_this_ones_run(s3):
    """Issue 11.3: request 1 (file ``alice.part001``) completed ``split/alice.part001.zip``;
    request 2 (file ``alice``, its own fresh ledger) must not take it for a volume of its own."""
    others = ["split/alice.part001.zip", "split/alice.part002.zip", "split/alice.part1000.zip", "split/alice.pst"]
    put_objects(s3.client(), s3.bucket, others)
    before = snapshot(s3)
    source = ListSource(noise_folders(10, 20_000))
    result = run_backup(source, s3.client(), zip_spec(s3, None), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    assert [a.key for a in result.archives] == ["split/alice.zip"]
    after = snapshot(s3)
    assert {k: after.get(k) for k in before} == before  # every other file byte for byte
    assert sorted(after) == sorted([*before, "split/alice.zip", *REPORTS])


def test_a_pst_run_leaves_another_requests_upload_in_progress_alone(s3, dovecot):
    """The PST engine aborted every unfinished upload named like ``alice(.partNNN).pst`` at its
    start: a live upload of request ``alice.part001`` would have been destroyed."""
    write_maildir(dovecot, USER, generate_mailbox("flat", count=10, size=5_000))
    client = s3.client()
    theirs = client.create_multipart_upload(Bucket=s3.bucket, Key="split/alice.part001.pst")["UploadId"]
    export_dovecot(dovecot, s3, pst_spec(s3, None))
    assert [u["UploadId"] for u in multipart_uploads(client, s3.bucket)] == [theirs]
    client.abort_multipart_upload(Bucket=s3.bucket, Key="split/alice.part001.pst", UploadId=theirs)


# ---- a retry that does not complete leaves the earlier archive as it was --------------------------

def _completed_with_errors_split_archive(s3, ledger, count: int = 30) -> dict[str, str]:
    source = UnreadableSource(noise_folders(count), unreadable={"7"})
    first = run_backup(source, s3.client(), zip_spec(s3, 1 * MB), ledger, fast_tuning())
    assert first.state == COMPLETED_WITH_ERRORS and len(first.archives) == -(-count // 8), first.error
    return snapshot(s3)


def test_a_cancelled_retry_of_a_split_zip_leaves_the_earlier_archive_as_it_was(s3):
    """Issue 11.5: cancelled in its second volume, the retry had replaced part001 and then
    deleted it: 3 of 4 volumes were left."""
    ledger = RequestLedger()
    before = _completed_with_errors_split_archive(s3, ledger)
    retry = run_backup(ListSource(noise_folders()), s3.client(), zip_spec(s3, 1 * MB),
                       ledger.retry(cancel_in_volume=2), fast_tuning())
    assert retry.state == CANCELLED
    assert snapshot(s3) == before  # every volume, the report and summary, byte for byte; nothing more
    assert multipart_uploads(s3.client(), s3.bucket) == []
    assert ledger.archive_keys() == [f"split/alice.part00{n}.zip" for n in range(1, 5)]


def test_a_failed_retry_of_a_split_zip_leaves_the_earlier_archive_as_it_was(s3):
    """The source fails at message 50 of 60: the fetcher runs at most ``queue_bytes`` (2 MB)
    ahead, so the retry has completed at least three volumes of ~8 messages by then."""
    ledger = RequestLedger()
    before = _completed_with_errors_split_archive(s3, ledger, count=60)
    retry = run_backup(ListSource(noise_folders(60), fail_after=50), s3.client(), zip_spec(s3, 1 * MB),
                       ledger.retry(), fast_tuning())
    assert retry.state == FAILED_STATE and "closed the connection" in retry.error
    assert snapshot(s3) == before
    assert multipart_uploads(s3.client(), s3.bucket) == []


def test_a_cancelled_retry_of_a_single_zip_that_now_splits_leaves_the_earlier_file(s3):
    """The mailbox grew: the retry's first volume, completed when it filled up, replaced FILE.zip."""
    ledger = RequestLedger()
    small = UnreadableSource(noise_folders(5), unreadable={"3"})
    first = run_backup(small, s3.client(), zip_spec(s3, 1 * MB), ledger, fast_tuning())
    assert first.state == COMPLETED_WITH_ERRORS and [a.key for a in first.archives] == ["split/alice.zip"]
    before = snapshot(s3)
    retry = run_backup(ListSource(noise_folders()), s3.client(), zip_spec(s3, 1 * MB),
                       ledger.retry(cancel_in_volume=2), fast_tuning())
    assert retry.state == CANCELLED
    assert snapshot(s3) == before
    assert multipart_uploads(s3.client(), s3.bucket) == []


def test_a_cancelled_retry_of_a_single_zip_leaves_the_earlier_file(s3):
    """An archive that cannot split is written in place: its upload completes only at the end."""
    ledger = RequestLedger()
    first = run_backup(UnreadableSource(noise_folders(12), unreadable={"3"}), s3.client(), zip_spec(s3, None),
                       ledger, fast_tuning())
    assert first.state == COMPLETED_WITH_ERRORS
    before = snapshot(s3)
    retry = run_backup(ListSource(noise_folders(12)), s3.client(), zip_spec(s3, None),
                       ledger.retry(cancel_in_volume=1, cancel_after=3), fast_tuning())
    assert retry.state == CANCELLED
    assert snapshot(s3) == before
    assert multipart_uploads(s3.client(), s3.bucket) == []


def test_a_completed_retry_of_a_split_zip_puts_every_volume_in_place(s3):
    ledger = RequestLedger()
    _completed_with_errors_split_archive(s3, ledger)
    source = ListSource(noise_folders())
    retry = run_backup(source, s3.client(), zip_spec(s3, 1 * MB), ledger.retry(), fast_tuning())
    assert retry.state == COMPLETED and retry.error == ""
    keys = [f"split/alice.part00{n}.zip" for n in range(1, 5)]
    assert [a.key for a in retry.archives] == keys
    verify_export(s3, "split/alice", source.truth(), split_bytes=1 * MB)  # message 7 included now
    assert bucket_keys(s3) == sorted([*keys, *REPORTS])  # no staging key left
    assert ledger.archive_keys() == keys and ledger.publication() is None


def test_a_retry_whose_summary_cannot_be_written_keeps_its_archive(s3):
    """After the commit nothing is cleaned up: the new archive stays, and a rerun writes the rest."""
    ledger = RequestLedger()
    _completed_with_errors_split_archive(s3, ledger)
    source = ListSource(noise_folders())
    tuning = fast_tuning(retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01))
    with S3FaultProxy(s3.url, fail_puts_ending=".summary.json", fail_puts=1000) as proxy:
        retry = run_backup(source, s3.client(proxy.url), zip_spec(s3, 1 * MB), ledger.retry(), tuning)
    assert retry.state == FAILED_STATE and "is complete, but its report could not be written" in retry.error
    keys = [f"split/alice.part00{n}.zip" for n in range(1, 5)]
    assert [k for k in bucket_keys(s3) if k.endswith(".zip")] == keys
    rerun = run_backup(source, s3.client(), zip_spec(s3, 1 * MB), ledger, fast_tuning())
    assert rerun.state == COMPLETED and rerun.resumed
    verify_export(s3, "split/alice", source.truth(), split_bytes=1 * MB)


# ---- PST -----------------------------------------------------------------------------------------

@pytest.fixture
def pst_mailbox(dovecot):
    write_maildir(dovecot, USER, generate_mailbox("flat", count=60, size=30_000))
    return truth_of(dovecot)


def test_pst_retry_in_one_file_deletes_the_earlier_parts(dovecot, s3, pst_mailbox):
    neighbours = ["split/alice2.pst", "split/alice.part001.pst.bak", "split/alice.zip"]
    put_objects(s3.client(), s3.bucket, neighbours)
    ledger = RequestLedger()
    first = export_dovecot(dovecot, s3, pst_spec(s3, 700_000), ledger)
    assert len(first.archives) >= 2 and first.archives[0].key == "split/alice.part001.pst"

    again = export_dovecot(dovecot, s3, pst_spec(s3, None), ledger.retry())
    assert [a.key for a in again.archives] == ["split/alice.pst"] and again.error == ""
    assert bucket_keys(s3) == sorted(["split/alice.pst", "split/alice.report.csv", "split/alice.summary.json",
                                      *neighbours])
    assert {row["entry"] for row in read_report(s3, "split/alice.report.csv")} == {"split/alice.pst"}
    assert [a["key"] for a in read_summary(s3, "split/alice.summary.json")["archives"]] == ["split/alice.pst"]


def test_pst_split_retry_leaves_no_single_file(dovecot, s3, pst_mailbox):
    """The first PST part is uploaded as FILE.pst and restarted as FILE.part001.pst, so without
    the clean-up the earlier run's FILE.pst stayed."""
    ledger = RequestLedger()
    first = export_dovecot(dovecot, s3, pst_spec(s3, None), ledger)
    assert [a.key for a in first.archives] == ["split/alice.pst"]

    again = export_dovecot(dovecot, s3, pst_spec(s3, 700_000), ledger.retry())
    keys = [a.key for a in again.archives]
    assert len(keys) >= 2 and again.error == ""
    assert bucket_keys(s3) == sorted([*keys, "split/alice.report.csv", "split/alice.summary.json"])
    assert {row["entry"] for row in read_report(s3, "split/alice.report.csv")} == set(keys)
    assert multipart_uploads(s3.client(), s3.bucket) == []


def test_pst_split_retry_over_a_split_archive_puts_every_part_in_place(dovecot, s3, pst_mailbox):
    ledger = RequestLedger()
    first = export_dovecot(dovecot, s3, pst_spec(s3, 700_000), ledger)
    again = export_dovecot(dovecot, s3, pst_spec(s3, 700_000), ledger.retry())
    assert [a.key for a in again.archives] == [a.key for a in first.archives]
    assert bucket_keys(s3) == sorted([*(a.key for a in again.archives), "split/alice.report.csv",
                                      "split/alice.summary.json"])  # no staging key left
    assert [s3.path(a.key).stat().st_size for a in again.archives] == [a.size for a in again.archives]


def mail_folders(count: int = 60, size: int = 30_000) -> dict:
    mailbox = generate_mailbox("flat", count=count, size=size)
    return {"INBOX": [(str(n), m.raw, ()) for n, m in enumerate(mailbox.messages())]}


@pytest.mark.parametrize("ending", ["cancelled", "failed"])
def test_a_retry_of_a_split_pst_that_does_not_complete_leaves_the_earlier_parts(s3, ending):
    """Issue 11.5, PST: each file's upload completes when the file is closed; the retry's
    part001.pst replaced the earlier one and was deleted when the retry ended."""
    ledger = RequestLedger()
    first = run_backup(UnreadableSource(mail_folders(), unreadable={"5"}), s3.client(), pst_spec(s3, 700_000),
                       ledger, fast_tuning())
    assert first.state == COMPLETED_WITH_ERRORS and len(first.archives) >= 3, first.error
    before = snapshot(s3)
    if ending == "cancelled":
        source, ledger = ListSource(mail_folders()), ledger.retry(cancel_after_a_file=True)
    else:
        source, ledger = ListSource(mail_folders(), fail_after=45), ledger.retry()
    retry = run_backup(source, s3.client(), pst_spec(s3, 700_000), ledger, fast_tuning())
    assert retry.state == (CANCELLED if ending == "cancelled" else FAILED_STATE), retry.error
    assert snapshot(s3) == before
    assert multipart_uploads(s3.client(), s3.bucket) == []
    assert ledger.archive_keys() == [a.key for a in first.archives]


def test_a_pst_retry_whose_summary_cannot_be_written_keeps_its_new_file(dovecot, s3, pst_mailbox):
    """FILE.pst is written in place (its completion is the commit): a failure after it must not
    delete it, or nothing would be left of either archive."""
    ledger = RequestLedger()
    first = export_dovecot(dovecot, s3, pst_spec(s3, None), ledger)
    assert [a.key for a in first.archives] == ["split/alice.pst"]
    ledger.retry()
    tuning = fast_tuning(retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01))
    with S3FaultProxy(s3.url, fail_puts_ending=".summary.json", fail_puts=1000) as proxy:
        with imap_source(dovecot) as source:
            retry = run_backup(source, s3.client(proxy.url), pst_spec(s3, None), ledger, tuning)
    assert retry.state == FAILED_STATE
    assert s3.path("split/alice.pst").exists(), bucket_keys(s3)
    assert "is complete, but its report could not be written" in retry.error
    assert ledger.archive_keys() == ["split/alice.pst"]
    again = export_dovecot(dovecot, s3, pst_spec(s3, None), ledger)  # retry: exported again, completes
    assert bucket_keys(s3) == ["split/alice.pst", *REPORTS]
    assert again.archives[0].size == s3.path("split/alice.pst").stat().st_size


# ---- the pieces ------------------------------------------------------------------------------------

def test_staging_keys_are_no_requests_keys_and_map_back_to_their_final_key():
    assert staging_key("split/alice.part002.zip") == "split/.legacyflo-new.alice.part002.zip"
    assert staging_key("alice.zip") == ".legacyflo-new.alice.zip"
    for key in ("split/alice.part002.zip", "alice.zip", "a/b/c.pst"):
        assert final_key(staging_key(key)) == key and final_key(key) == key
    assert file_name_problem(".legacyflo-new.alice")  # no request can be named like one
    names = ArchiveNames.of("split", "alice", "zip", ["split/alice.zip", "split/alice.part002.zip"], can_split=True)
    assert names.write(1, split=False) == "split/.legacyflo-new.alice.zip"
    assert names.write(2, split=True) == "split/.legacyflo-new.alice.part002.zip"
    assert names.write(3, split=True) == "split/alice.part003.zip"  # nothing there to replace
    in_place = ArchiveNames.of("split", "alice", "zip", ["split/alice.zip"], can_split=False)
    assert in_place.write(1, split=False) == "split/alice.zip"  # completed only when the archive is


@pytest.mark.parametrize("name", ["alice.part001", "alice.PART12", "alice.part1000", "alice.zip", "alice.PST",
                                  ".hidden", "a/b", "a\\b", ""])
def test_file_names_whose_files_could_be_another_names_are_refused(name):
    assert file_name_problem(name)


@pytest.mark.parametrize("name", ["alice", "alice.part", "alice.part01x", "alice.2024", "alice-part001", "a.zipped"])
def test_ordinary_file_names_are_accepted(name):
    assert file_name_problem(name) == ""


@pytest.mark.parametrize("server", ["rclone", "moto"])
def test_a_commit_deletes_exactly_the_previous_archives_keys_it_does_not_reuse(request, s3, server):
    if server == "moto":
        client, bucket = request.getfixturevalue("moto").client(), "archive-keys"
        client.create_bucket(Bucket=bucket)
    else:
        client, bucket = s3.client(), s3.bucket
    previous = ["split/alice.zip", "split/alice.part001.zip", "split/alice.part002.zip", "split/alice.part1000.zip"]
    lookalikes = ["split/alice.part003.zip", "split/alice.part004.zip"]  # named like ours, not ours
    put_objects(client, bucket, [*previous, *lookalikes, *NEIGHBOURS, *REPORTS])
    client.put_object(Bucket=bucket, Key=staging_key("split/alice.part002.zip"), Body=b"the new volume 2")
    ledger = MemoryLedger()
    ledger.commit_archive(previous, None)
    retry = RetryPolicy(attempts=2, base_delay=0.01)
    keys, warning = commit_archive(ledger, client, bucket, [(staging_key("split/alice.part002.zip"), 16)],
                                   retry=retry)
    assert keys == ["split/alice.part002.zip"] and warning == ""
    left = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert left == sorted(["split/alice.part002.zip", *lookalikes, *NEIGHBOURS, *REPORTS])
    assert client.get_object(Bucket=bucket, Key="split/alice.part002.zip")["Body"].read() == b"the new volume 2"
    assert ledger.archive_keys() == ["split/alice.part002.zip"] and ledger.publication() is None
    # a publication carried out again (after a kill) finds it done and changes nothing
    ledger.commit_archive(keys, Publication([Move(staging_key("split/alice.part002.zip"), keys[0], 16)], []))
    from connectors.pipeline.archivekeys import finish_publication

    assert finish_publication(ledger, client, bucket, retry=retry) == ""
    assert sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]) == left

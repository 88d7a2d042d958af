"""Requests end to end: real Dovecot → engine → rclone S3, driven through the real RQ queue."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter

import pytest
from django.core.management import CommandError, call_command

from requests_app.models import ArchiveRecord, MigrationRequest
from tests.portal_fixtures import (
    MAILBOX_PASSWORD,
    archive_digests,
    imap_form,
    no_pending_uploads,
    pst_folder_counts,
    run_worker_burst,
    source_digests,
    submit,
    wait_for,
)
from tests.test_requests_reports import folder_rows

pytestmark = pytest.mark.django_db(transaction=True)


def test_imap_zip_request_completes_byte_for_byte(operator, tenant, dovecot, imap_ca, dest_bucket, rclone, rq_queue,
                                                  client_for):
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket))
    assert rq_queue.count == 1  # enqueued after commit, carrying only the id
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    s3 = rclone.client()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=dest_bucket.name)["Contents"]}
    assert {"mail/alice-backup.zip", "mail/alice-backup.report.csv", "mail/alice-backup.summary.json"} <= keys
    expected = source_digests(dovecot.mailbox)
    actual = archive_digests(s3, dest_bucket.name, "mail/alice-backup.zip")
    for folder, digests in expected.items():
        assert sorted(actual.get(folder, [])) == sorted(digests), folder
    assert no_pending_uploads(s3, dest_bucket.name)

    total = sum(len(v) for v in expected.values())
    assert req.messages_total == req.messages_done == total and req.messages_failed == 0
    assert ArchiveRecord.objects.filter(request=req, kind="message", status="exported").count() == total
    summary = json.loads(s3.get_object(Bucket=dest_bucket.name, Key="mail/alice-backup.summary.json")["Body"].read())
    assert summary["totals"]["exported"] == total and summary["reconciled"] is True

    # The portal's report matches, reconciles, and downloads.
    client = client_for(operator)
    page = client.get(f"/t/{tenant.slug}/requests/{req.uuid}/report/").content.decode()
    assert 'id="reconciled"' in page and "Leer" in page  # the empty folder is listed with 0
    rows = list(csv.DictReader(io.StringIO(b"".join(client.get(
        f"/t/{tenant.slug}/requests/{req.uuid}/report.csv").streaming_content).decode("utf-8-sig"))))
    assert len(rows) == total and all(r["status"] == "exported" and len(r["sha256"]) == 64 for r in rows)


def test_zip_request_split_into_volumes_shows_and_reports_each_volume(operator, tenant, dovecot, imap_ca, dest_bucket,
                                                                      rclone, rq_queue, client_for, settings):
    settings.LEGACYFLO_ZIP_SPLIT_BYTES = 60_000  # the setting's floor is 1 MiB; this mailbox is ~230 KB
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="alice-split"))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    s3 = rclone.client()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=dest_bucket.name)["Contents"])
    volumes = [k for k in keys if k.endswith(".zip")]
    assert len(volumes) >= 3
    assert volumes == [f"mail/alice-split.part{n:03d}.zip" for n in range(1, len(volumes) + 1)]
    assert [a["key"] for a in req.result["archives"]] == volumes
    assert no_pending_uploads(s3, dest_bucket.name)
    actual: dict[str, list[str]] = {}
    for key in volumes:
        assert s3.head_object(Bucket=dest_bucket.name, Key=key)["ContentLength"] <= 60_000
        for folder, digests in archive_digests(s3, dest_bucket.name, key).items():
            actual.setdefault(folder, []).extend(digests)
    for folder, digests in source_digests(dovecot.mailbox).items():
        assert sorted(actual.get(folder, [])) == sorted(digests), folder

    client = client_for(operator)
    detail = client.get(f"/t/{tenant.slug}/requests/{req.uuid}/").content.decode()
    report_page = client.get(f"/t/{tenant.slug}/requests/{req.uuid}/report/").content.decode()
    for key in volumes:
        assert f"/{key}</code>" in detail and f"/{key}</code>" in report_page
    assert f"{len(volumes)} volumes" in detail
    rows = list(csv.DictReader(io.StringIO(b"".join(client.get(
        f"/t/{tenant.slug}/requests/{req.uuid}/report.csv").streaming_content).decode("utf-8-sig"))))
    assert {r["archive"] for r in rows} == set(volumes)
    uploaded = s3.get_object(Bucket=dest_bucket.name, Key="mail/alice-split.report.csv")["Body"].read()
    assert list(csv.DictReader(io.StringIO(uploaded.decode("utf-8-sig")))) == rows  # the same report
    summary = json.loads(client.get(f"/t/{tenant.slug}/requests/{req.uuid}/report.json").content)
    assert [a["key"] for a in summary["archives"]] == volumes


def test_giving_up_on_an_interrupted_split_request_removes_its_volumes(tenant, dest_bucket, rclone):
    from requests_app.lifecycle import give_up
    from requests_app.models import UploadedPart

    s3 = rclone.client()
    for key in ("mail/x.part001.zip", "mail/x.part002.zip"):
        s3.put_object(Bucket=dest_bucket.name, Key=key, Body=b"a completed volume")
    upload_id = s3.create_multipart_upload(Bucket=dest_bucket.name, Key="mail/x.part003.zip")["UploadId"]
    req = MigrationRequest.objects.create(
        tenant=tenant, request_type="IMAP-S3-ZIP", bucket=dest_bucket, file_name="x", s3_prefix="mail",
        state="running", checkpoint={"upload": {
            "key": "mail/x.part003.zip", "upload_id": upload_id, "format": "zip", "volume": 3, "volumes": [
                {"number": 1, "key": "mail/x.part001.zip", "size": 18, "parts": 1},
                {"number": 2, "key": "mail/x.part002.zip", "size": 18, "parts": 1}]}})
    UploadedPart.objects.create(request=req, archive_key="mail/x.part003.zip", part_number=1, etag='"e"', size=5)
    give_up(req, "The transfer was interrupted 8 times; giving up.")
    assert s3.list_objects_v2(Bucket=dest_bucket.name).get("KeyCount", 0) == 0
    assert no_pending_uploads(s3, dest_bucket.name)
    req.refresh_from_db()
    assert req.state == "failed" and "upload" not in req.checkpoint


def test_wrong_password_fails_clearly_and_writes_nothing(operator, tenant, dovecot, imap_ca, dest_bucket, rclone,
                                                         rq_queue):
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, source_password="Pa55-not-right-XYZ"))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "failed"
    assert "password" in req.error.lower() or "authentication" in req.error.lower()
    assert MAILBOX_PASSWORD not in req.error and "Pa55-not-right-XYZ" not in req.error
    s3 = rclone.client()
    assert s3.list_objects_v2(Bucket=dest_bucket.name).get("KeyCount", 0) == 0
    assert no_pending_uploads(s3, dest_bucket.name)


def test_unreachable_host_fails_clearly(operator, tenant, dovecot, imap_ca, dest_bucket, rclone, rq_queue):
    from legacyflo.localservices import free_port

    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, source_port=free_port()))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "failed" and req.error
    assert no_pending_uploads(rclone.client(), dest_bucket.name)


def test_cancel_while_queued(operator, tenant, dovecot, imap_ca, dest_bucket, rq_queue, client_for):
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket))
    client = client_for(operator)
    client.post(f"/t/{tenant.slug}/requests/{req.uuid}/cancel/")
    req.refresh_from_db()
    assert req.state == "cancelled"
    run_worker_burst(rq_queue)  # the job finds nothing to do
    req.refresh_from_db()
    assert req.state == "cancelled" and req.attempts == 0


def test_worker_killed_mid_transfer_resumes_exactly_once(operator, tenant, dovecot, dest_bucket, rclone, rq_queue,
                                                         worker_process):
    from tests.mailgen import generate_mailbox, write_maildir

    dovecot.add_user("bulk", "bulk-password")
    bulk = generate_mailbox("flat", seed=3, count=320, folder="INBOX", size=80_000)
    write_maildir(dovecot, "bulk", bulk)
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, source_user="bulk",
                                                            source_password="bulk-password", file_name="bulk"))
    first = worker_process()
    wait_for(lambda: req.parts.count() >= 2, timeout=120, interval=0.05)
    first.kill()
    req.refresh_from_db()
    assert req.state == "running"  # as the dead worker left it
    committed_before = ArchiveRecord.objects.filter(request=req).count()
    assert 0 < committed_before

    worker_process()  # a new worker: recovery notices the stale heartbeat and re-queues
    wait_for(lambda: MigrationRequest.objects.get(pk=req.pk).is_final, timeout=180)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    assert req.attempts == 2
    s3 = rclone.client()
    actual = archive_digests(s3, dest_bucket.name, "mail/bulk.zip")
    assert sorted(actual["INBOX"]) == sorted(source_digests(bulk)["INBOX"])  # every message exactly once
    assert no_pending_uploads(s3, dest_bucket.name)
    assert req.result["resumed"] is True


def test_worker_killed_in_a_later_volume_resumes_exactly_once(operator, tenant, dovecot, dest_bucket, rclone,
                                                              worker_env, worker_process):
    from tests.mailgen import generate_mailbox, write_maildir

    dovecot.add_user("volumes", "volumes-password")
    mailbox = generate_mailbox("flat", seed=4, count=120, size=40_000, folder="INBOX")
    write_maildir(dovecot, "volumes", mailbox)
    worker_env["LEGACYFLO_ZIP_SPLIT_BYTES"] = str(1024 * 1024)
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, source_user="volumes",
                                                            source_password="volumes-password", file_name="vol"))
    first = worker_process()
    wait_for(lambda: MigrationRequest.objects.get(pk=req.pk).checkpoint.get("upload", {}).get("volume", 1) >= 3,
             timeout=120, interval=0.05)
    first.kill()
    worker_process()  # recovery re-queues the interrupted request; it resumes in volume 3
    wait_for(lambda: MigrationRequest.objects.get(pk=req.pk).is_final, timeout=180)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    assert req.attempts == 2 and req.result["resumed"] is True
    s3 = rclone.client()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=dest_bucket.name)["Contents"] if o["Key"].endswith(".zip"))
    assert keys == [a["key"] for a in req.result["archives"]]
    assert keys == [f"mail/vol.part{n:03d}.zip" for n in range(1, len(keys) + 1)] and len(keys) >= 4
    digests = [d for key in keys for d in archive_digests(s3, dest_bucket.name, key).get("INBOX", [])]
    assert sorted(digests) == sorted(source_digests(mailbox)["INBOX"])  # every message exactly once
    assert no_pending_uploads(s3, dest_bucket.name)


def test_imap_pst_request_opens_in_libpff_with_every_message(operator, tenant, dovecot, imap_ca, dest_bucket,
                                                            rclone, rq_queue, tmp_path):
    req = submit(tenant, operator, "IMAP-S3-PST", imap_form(dovecot, dest_bucket, file_name="alice-pst"))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    s3 = rclone.client()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=dest_bucket.name)["Contents"]}
    assert {"mail/alice-pst.pst", "mail/alice-pst.report.csv", "mail/alice-pst.summary.json"} <= keys
    assert no_pending_uploads(s3, dest_bucket.name)
    local = tmp_path / "alice.pst"
    s3.download_file(dest_bucket.name, "mail/alice-pst.pst", str(local))
    counts = pst_folder_counts(local)
    expected = {folder: len(msgs) for folder, msgs in source_digests(dovecot.mailbox).items()}
    for folder, n in expected.items():
        matching = [v for k, v in counts.items() if k.endswith(folder)]
        assert n in matching, (folder, n, counts)
    assert req.messages_done == sum(expected.values())


def test_the_part_1_lead_follows_the_bucket_unless_the_operator_sets_it(settings, tmp_path):
    from connectors.storage.s3.growing import IN_ORDER_SAFE_AHEAD, UNLIMITED_AHEAD
    from requests_app.runner import tuning

    settings.LEGACYFLO_WORK_DIR = tmp_path
    settings.LEGACYFLO_S3_MAX_AHEAD_BYTES = None
    assert tuning("").max_ahead_bytes == UNLIMITED_AHEAD
    assert tuning("http://127.0.0.1:9000").max_ahead_bytes == IN_ORDER_SAFE_AHEAD
    settings.LEGACYFLO_S3_MAX_AHEAD_BYTES = 64 * 1024 * 1024
    assert tuning("").max_ahead_bytes == tuning("http://127.0.0.1:9000").max_ahead_bytes == 64 * 1024 * 1024


# ---- a request never runs into another request's archive (issue 11.3, 11.4) ----------------------

def _row(tenant, dovecot, bucket, *, file_name: str, user: str = "alice", password: str = MAILBOX_PASSWORD,
         **fields) -> MigrationRequest:
    """A request row made directly, as rows from before a check existed (or two submissions
    racing past it) are; enqueued like a submission."""
    from requests_app.queue import enqueue_request

    fields.setdefault("request_type", "IMAP-S3-ZIP")
    req = MigrationRequest.objects.create(
        tenant=tenant, title=file_name, source_server="127.0.0.1",
        source_port=dovecot.ssl_port, source_security="ssl", source_user=user, source_password=password,
        bucket=bucket, s3_prefix="mail", file_name=file_name, **fields)
    enqueue_request(req.pk)
    return req


def _mailbox_user(dovecot, name: str, count: int = 6):
    from tests.mailgen import generate_mailbox, write_maildir

    dovecot.add_user(name, f"{name}-password")
    mailbox = generate_mailbox("flat", seed=len(name) * 7 + count, count=count, size=3000)
    write_maildir(dovecot, name, mailbox)
    return mailbox


def _digests(s3, bucket: str, key: str) -> list[str]:
    return sorted(d for digests in archive_digests(s3, bucket, key).values() for d in digests)


def _all_digests(mailbox) -> list[str]:
    return sorted(d for digests in source_digests(mailbox).values() for d in digests)


def test_a_request_cannot_destroy_the_archive_of_one_named_like_its_volume(operator, tenant, dovecot, imap_ca,
                                                                           dest_bucket, rclone, rq_queue):
    """Issue 11.3: request 1 (file ``alice.part001``, from before such names were refused)
    completed; request 2 (file ``alice``) completed and deleted ``mail/alice.part001.zip``."""
    from django.core.exceptions import ValidationError

    first = _row(tenant, dovecot, dest_bucket, file_name="alice.part001")
    run_worker_burst(rq_queue)
    first.refresh_from_db()
    assert first.state == "completed", first.error
    s3 = rclone.client()
    expected = _all_digests(dovecot.mailbox)
    assert _digests(s3, dest_bucket.name, "mail/alice.part001.zip") == expected
    with pytest.raises(ValidationError, match="already written by request"):
        submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="alice"))
    second = _row(tenant, dovecot, dest_bucket, file_name="alice")  # a row from before: it is not run
    run_worker_burst(rq_queue)
    second.refresh_from_db()
    assert second.state == "failed" and "already written by request" in second.error and second.attempts == 0
    assert _digests(s3, dest_bucket.name, "mail/alice.part001.zip") == expected
    first.refresh_from_db()
    assert first.state == "completed"


def test_retry_is_refused_when_another_request_has_since_written_the_destination(operator, tenant, dovecot,
                                                                                   imap_ca, dest_bucket, rclone,
                                                                                   rq_queue, client_for):
    """Issue 11.4: R1 failed (wrong password); R2, same bucket, prefix and file name, completed;
    R1 retried after its password was fixed overwrote R2's archive with another mailbox."""
    from django.core.exceptions import ValidationError

    from requests_app.services import request_retry

    erin = _mailbox_user(dovecot, "erin")
    r1 = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, source_user="erin",
                                                           source_password="not-erins", file_name="shared"))
    run_worker_burst(rq_queue)
    r1.refresh_from_db()
    assert r1.state == "failed"
    r2 = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="shared"))
    run_worker_burst(rq_queue)
    r2.refresh_from_db()
    assert r2.state == "completed", r2.error
    s3 = rclone.client()
    alices = _all_digests(dovecot.mailbox)
    assert _digests(s3, dest_bucket.name, "mail/shared.zip") == alices
    MigrationRequest.objects.filter(pk=r1.pk).update(source_password="erin-password")  # fixed

    with pytest.raises(ValidationError, match="already written by request .*cannot be retried"):
        request_retry(req=r1, actor=operator)
    with pytest.raises(CommandError, match="already written by request"):
        call_command("request_retry", str(r1.uuid))
    response = client_for(operator).post(f"/t/{tenant.slug}/requests/{r1.uuid}/retry/", follow=True)
    assert "cannot be retried" in response.content.decode()
    run_worker_burst(rq_queue)
    r1.refresh_from_db()
    assert r1.state == "failed" and r1.attempts == 1
    assert _digests(s3, dest_bucket.name, "mail/shared.zip") == alices != _all_digests(erin)


def test_an_interrupted_request_is_not_resumed_into_another_requests_archive(operator, tenant, dovecot, imap_ca,
                                                                            dest_bucket, rclone, rq_queue):
    """The automatic re-queue (recovery) goes through the same check, when the worker claims it."""
    from datetime import timedelta

    from django.utils import timezone

    from requests_app.recovery import recover

    _mailbox_user(dovecot, "fred")
    holder = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="taken"))
    run_worker_burst(rq_queue)
    holder.refresh_from_db()
    assert holder.state == "completed", holder.error
    stale = timezone.now() - timedelta(hours=1)
    interrupted = _row(tenant, dovecot, dest_bucket, file_name="taken", user="fred", password="fred-password",
                       state="running", attempts=1, heartbeat_at=stale, started_at=stale)
    rq_queue.connection.flushdb()  # only recovery enqueues it
    assert recover() == [interrupted.pk]
    run_worker_burst(rq_queue)
    interrupted.refresh_from_db()
    assert interrupted.state == "failed" and "already written by request" in interrupted.error
    s3 = rclone.client()
    assert _digests(s3, dest_bucket.name, "mail/taken.zip") == _all_digests(dovecot.mailbox)


def test_of_two_requests_that_raced_into_one_destination_only_the_first_runs(tenant, dovecot, imap_ca,
                                                                             dest_bucket, rclone, rq_queue):
    """Two submissions at the same moment both pass the creation check (it takes no lock): the
    worker's claim lets the older one run and refuses the other, in whichever order they come."""
    _mailbox_user(dovecot, "gina")
    older = _row(tenant, dovecot, dest_bucket, file_name="raced")
    newer = _row(tenant, dovecot, dest_bucket, file_name="raced", user="gina", password="gina-password")
    run_worker_burst(rq_queue)
    older.refresh_from_db()
    newer.refresh_from_db()
    assert older.state == "completed", older.error
    assert newer.state == "failed" and "already written by request" in newer.error and newer.attempts == 0
    assert _digests(rclone.client(), dest_bucket.name, "mail/raced.zip") == _all_digests(dovecot.mailbox)


def test_a_name_stays_taken_while_a_failed_retry_keeps_the_earlier_archive(operator, tenant, dovecot, imap_ca,
                                                                          dest_bucket, rclone, rq_queue):
    """Creation follows the same rule as retry: a request holds its destination while its
    archive is in the bucket, whatever its state says now."""
    from django.core.exceptions import ValidationError

    from requests_app.services import request_retry

    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="kept"))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    MigrationRequest.objects.filter(pk=req.pk).update(state="completed_with_errors",  # as if a message had failed
                                                      source_password="no-longer-right")
    request_retry(req=req, actor=operator)
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "failed"
    s3 = rclone.client()
    assert _digests(s3, dest_bucket.name, "mail/kept.zip") == _all_digests(dovecot.mailbox)
    with pytest.raises(ValidationError, match="already written by request"):
        submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="kept"))
    assert req.checkpoint["archives"] == ["mail/kept.zip"]


def test_a_retry_of_a_split_request_puts_its_new_volumes_in_place(operator, tenant, dovecot, imap_ca,
                                                                  dest_bucket, rclone, rq_queue, settings):
    """The portal's ledger records the commit: the staged volumes are moved into place, the
    earlier volumes it does not reuse deleted, nothing else left."""
    from requests_app.services import request_retry

    settings.LEGACYFLO_ZIP_SPLIT_BYTES = 60_000
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="again"))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    first = [a["key"] for a in req.result["archives"]]
    assert len(first) >= 3
    MigrationRequest.objects.filter(pk=req.pk).update(state="completed_with_errors")
    settings.LEGACYFLO_ZIP_SPLIT_BYTES = 100_000  # fewer, larger volumes this time
    request_retry(req=req, actor=operator)
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    keys = [a["key"] for a in req.result["archives"]]
    assert 2 <= len(keys) < len(first) and req.checkpoint["archives"] == keys and "publication" not in req.checkpoint
    s3 = rclone.client()
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=dest_bucket.name)["Contents"])
    assert listed == sorted([*keys, "mail/again.report.csv", "mail/again.summary.json"])
    digests = sorted(d for key in keys for d in _digests(s3, dest_bucket.name, key))
    assert digests == _all_digests(dovecot.mailbox)
    assert no_pending_uploads(s3, dest_bucket.name)


def test_cancelling_a_requeued_request_with_an_upload_removes_its_own_volumes(operator, tenant, dovecot, imap_ca,
                                                                             dest_bucket, rclone, rq_queue):
    """``request_cancel`` looked for ``checkpoint["upload_id"]``, but the upload is under
    ``checkpoint["upload"]``: the re-queued request was cancelled at once, its run never came,
    and its multipart upload and completed volumes stayed. Its earlier archive
    (``archives``) and every other file stay."""
    from requests_app.models import UploadedPart
    from requests_app.services import request_cancel

    s3 = rclone.client()
    bucket = dest_bucket.name
    for key in ("mail/x.part001.zip", "mail/x.part002.zip"):  # this run's completed volumes (staged)
        s3.put_object(Bucket=bucket, Key=key.replace("mail/", "mail/.legacyflo-new."), Body=b"a completed volume")
    others = ["mail/x.zip", "mail/x.report.csv", "mail/x.summary.json",  # its earlier archive
              "mail/x.part004.zip", "mail/x2.zip", "mail/x.part001.zip"]  # named like it, not its own
    for key in others:
        s3.put_object(Bucket=bucket, Key=key, Body=b"not this run's")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mail/x.part003.zip")["UploadId"]
    theirs = s3.create_multipart_upload(Bucket=bucket, Key="mail/x.part004.zip")["UploadId"]
    req = _row(tenant, dovecot, dest_bucket, file_name="x", state="queued", attempts=1, checkpoint={
        "archives": ["mail/x.zip"],
        "upload": {"key": "mail/x.part003.zip", "upload_id": upload_id, "format": "zip", "volume": 3, "volumes": [
            {"number": 1, "key": "mail/.legacyflo-new.x.part001.zip", "size": 18, "parts": 1},
            {"number": 2, "key": "mail/.legacyflo-new.x.part002.zip", "size": 18, "parts": 1}]}})
    UploadedPart.objects.create(request=req, archive_key="mail/x.part003.zip", part_number=1, etag='"e"', size=5)

    request_cancel(req=req, actor=operator)
    req.refresh_from_db()
    assert req.state == "queued" and req.cancel_requested  # its run removes what it wrote
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "cancelled", req.error
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == sorted(others)
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == [theirs]
    assert req.checkpoint.get("archives") == ["mail/x.zip"] and "upload" not in req.checkpoint
    s3.abort_multipart_upload(Bucket=bucket, Key="mail/x.part004.zip", UploadId=theirs)


def test_giving_up_on_a_retry_keeps_the_earlier_archive_and_a_pending_publication(tenant, dest_bucket, rclone):
    """``give_up`` removes only what the run completed under its own keys."""
    from requests_app.lifecycle import give_up
    from requests_app.models import UploadedPart

    s3 = rclone.client()
    bucket = dest_bucket.name
    earlier = ["mail/y.part001.zip", "mail/y.part002.zip", "mail/y.report.csv", "mail/y.summary.json"]
    for key in [*earlier, "mail/.legacyflo-new.y.part001.zip"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"a file")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mail/.legacyflo-new.y.part002.zip")["UploadId"]
    req = MigrationRequest.objects.create(
        tenant=tenant, request_type="IMAP-S3-ZIP", bucket=dest_bucket, file_name="y", s3_prefix="mail",
        state="running", checkpoint={"archives": ["mail/y.part001.zip", "mail/y.part002.zip"], "upload": {
            "key": "mail/.legacyflo-new.y.part002.zip", "upload_id": upload_id, "format": "zip", "volume": 2,
            "volumes": [{"number": 1, "key": "mail/.legacyflo-new.y.part001.zip", "size": 6, "parts": 1}]}})
    UploadedPart.objects.create(request=req, archive_key="mail/.legacyflo-new.y.part002.zip", part_number=1,
                                etag='"e"', size=5)
    give_up(req, "The transfer was interrupted 8 times; giving up.")
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == sorted(earlier)
    assert no_pending_uploads(s3, bucket)
    req.refresh_from_db()
    assert req.state == "failed" and req.checkpoint["archives"] == ["mail/y.part001.zip", "mail/y.part002.zip"]

    # a PST commit whose publication is pending: the staged files are the archive, kept
    staged = ["mail/.legacyflo-new.z.part001.pst", "mail/.legacyflo-new.z.part002.pst"]
    for key in staged:
        s3.put_object(Bucket=bucket, Key=key, Body=b"a new part")
    pst = MigrationRequest.objects.create(
        tenant=tenant, request_type="IMAP-S3-PST", bucket=dest_bucket, file_name="z", s3_prefix="mail",
        state="running", checkpoint={
            "archives": ["mail/z.part001.pst", "mail/z.part002.pst"],
            "publication": {"moves": [[staged[0], "mail/z.part001.pst", 10], [staged[1], "mail/z.part002.pst", 10]],
                            "stale": []},
            "upload": {"key": staged[1], "upload_id": "done", "format": "pst", "volume": 2, "archive_complete": True,
                       "volumes": [{"number": 1, "key": staged[0], "size": 10, "parts": 0}]}})
    give_up(pst, "giving up")
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == sorted([*earlier, *staged])


def test_cancelling_a_requeued_pst_request_removes_the_files_its_killed_run_completed(operator, tenant, dovecot,
                                                                                   imap_ca, dest_bucket, rclone,
                                                                                   rq_queue):
    """The PST engine records each file it completes (``begin_volume``); cancelled before it
    runs again, it deletes them and aborts the upload of the next one."""
    from requests_app.services import request_cancel

    s3 = rclone.client()
    bucket = dest_bucket.name
    s3.put_object(Bucket=bucket, Key="mail/p.part001.pst", Body=b"a completed file of the killed run")
    others = ["mail/p2.pst", "mail/p.part003.pst"]
    for key in others:
        s3.put_object(Bucket=bucket, Key=key, Body=b"not this run's")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mail/p.part002.pst")["UploadId"]
    req = _row(tenant, dovecot, dest_bucket, file_name="p", request_type="IMAP-S3-PST", state="queued", attempts=1,
               checkpoint={"upload": {"key": "mail/p.part002.pst", "upload_id": upload_id, "format": "pst",
                                      "volume": 2, "volumes": [{"number": 1, "key": "mail/p.part001.pst",
                                                                "size": 34, "parts": 0}]}})
    request_cancel(req=req, actor=operator)
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "cancelled", req.error
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == sorted(others)
    assert no_pending_uploads(s3, bucket)


@pytest.fixture
def unreadable_dovecot(settings, monkeypatch):
    """A Dovecot of its own whose mailbox holds one message it cannot read (the file's mode is
    0): a FETCH of it fails with a server error, so the run reports it as failed. IMAP's
    reconnect back-off is not waited for (its delays are the only thing patched)."""
    import os

    from tests.mailgen import generate_mailbox, write_maildir
    from tests.portal_fixtures import MAILBOX_USER
    from tests.servers.dovecot import DovecotServer

    monkeypatch.setattr("connectors.sources.imap.client.ImapSource._sleep_backoff", lambda self, attempt: None)
    with DovecotServer(users={MAILBOX_USER: MAILBOX_PASSWORD}, ssl=True) as server:
        mailbox = generate_mailbox("test", seed=3)
        write_maildir(server, MAILBOX_USER, mailbox)
        server.mailbox = mailbox
        unreadable = sorted((server.maildir(MAILBOX_USER, "INBOX") / "cur").iterdir())[2]
        os.chmod(unreadable, 0)
        settings.LEGACYFLO_IMAP_CA_FILE = str(server.ca_file)
        yield server


@pytest.mark.parametrize("code", ["IMAP-S3-ZIP", "IMAP-S3-PST"])
def test_the_portal_shows_the_report_and_summary_the_bucket_holds_for_every_format(
        code, operator, tenant, unreadable_dovecot, dest_bucket, rclone, rq_queue, client_for):
    """PST and ZIP alike: the report page lists the failure, the portal's report.csv is the
    bucket's report.csv row for row (every message, exported or not), and the summary.json
    download is the bucket's summary.json."""
    name = code.rsplit("-", 1)[1].lower()
    req = submit(tenant, operator, code, imap_form(unreadable_dovecot, dest_bucket, file_name=f"report-{name}"))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed_with_errors", req.error
    s3 = rclone.client()

    def bucket_file(suffix: str) -> bytes:
        return s3.get_object(Bucket=dest_bucket.name, Key=f"mail/report-{name}{suffix}")["Body"].read()

    def rows(data: bytes) -> list[dict]:
        return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))

    total = sum(len(v) for v in source_digests(unreadable_dovecot.mailbox).values())
    in_bucket = rows(bucket_file(".report.csv"))
    assert len(in_bucket) == total and [r["status"] for r in in_bucket].count("failed") == 1
    client = client_for(operator)
    base = f"/t/{tenant.slug}/requests/{req.uuid}"
    portal_csv = b"".join(client.get(f"{base}/report.csv").streaming_content)
    assert rows(portal_csv) == in_bucket
    page = client.get(f"{base}/report/").content.decode()
    failed = next(r for r in in_bucket if r["status"] == "failed")
    assert 'id="failures"' in page and failed["source_id"] in page and "did not deliver" in failed["error"]
    shown = folder_rows(page)  # folder → (source count, exported, failed, skipped)
    expected = {folder: (0, 0, 0, 0) for folder in shown}  # empty folders and parents: zeros
    for folder, n in Counter(r["folder"] for r in in_bucket).items():
        expected[folder] = (n, n - (folder == failed["folder"]), int(folder == failed["folder"]), 0)
    assert shown == expected and 'id="reconciled"' in page
    assert ArchiveRecord.objects.filter(request=req, kind="message").count() == total
    summary = client.get(f"{base}/report.json").json()
    assert summary == json.loads(bucket_file(".summary.json"))
    assert summary["totals"]["failed"] == 1 and summary["format"] == name
    assert "folder_counts" not in req.result


@pytest.fixture(scope="module", params=["fs", "mithi"], ids=["slash-separator", "dot-separator-INBOX-prefix"])
def layout_dovecot(request):
    """Dovecot with '/' and no prefix, or with '.' and the INBOX. prefix (Mithi's shape)."""
    from tests.mailgen import generate_mailbox, write_maildir
    from tests.servers.dovecot import DovecotServer

    with DovecotServer({"alice": MAILBOX_PASSWORD}, layout=request.param) as server:
        server.mailbox = generate_mailbox("test", seed=3)
        write_maildir(server, "alice", server.mailbox)
        yield server


@pytest.mark.parametrize("code", ["IMAP-S3-ZIP", "MITHI-S3-ZIP"])
def test_a_request_archives_the_servers_own_folder_tree_whatever_its_separator(
        operator, tenant, layout_dovecot, dest_bucket, rclone, rq_queue, code):
    """The type only pre-fills the form: MITHI on a '/' server must not flatten Archive/2023 into
    Archive_2023 and still say completed."""
    form = imap_form(layout_dovecot, dest_bucket, source_port=layout_dovecot.port, source_security="none",
                     file_name=f"{code.lower()}-{layout_dovecot.layout}")
    req = submit(tenant, operator, code, form)
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    actual = archive_digests(rclone.client(), dest_bucket.name, f"mail/{form['file_name']}.zip")
    expected = source_digests(layout_dovecot.mailbox)
    assert {folder: sorted(d) for folder, d in actual.items()} == {folder: sorted(d) for folder, d in expected.items()}
    assert "Archive/2023/Q1 ½" in actual

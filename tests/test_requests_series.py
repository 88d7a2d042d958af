"""Incremental series through the portal: form and CSV, series identity, the destination rules
between runs of one series and foreign requests, run naming, cursors committed with completed
runs only, and the request page's list of runs. Real Dovecot, rclone S3 and RQ."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from imapclient import IMAPClient

from requests_app.models import MigrationRequest
from tests.portal_fixtures import (
    MAILBOX_PASSWORD,
    MAILBOX_USER,
    imap_form,
    run_worker_burst,
    submit,
)

pytestmark = pytest.mark.django_db(transaction=True)


def append(dovecot, folder: str, raw: bytes) -> None:
    with IMAPClient("127.0.0.1", dovecot.ssl_port, ssl=True, ssl_context=dovecot.client_ssl_context()) as client:
        client.login(MAILBOX_USER, MAILBOX_PASSWORD)
        client.append(folder, raw)


def keys(s3, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_runs_of_a_series_follow_each_other_under_their_own_names_and_foreign_requests_are_refused(
        operator, tenant, dovecot, imap_ca, dest_bucket, rclone, rq_queue, client_for):
    form = imap_form(dovecot, dest_bucket, file_name="alice-series", incremental="yes")
    first = submit(tenant, operator, "IMAP-S3-ZIP", form)
    assert first.incremental and len(first.series_key) == 64 and first.options["series_run"] == 1
    with pytest.raises(ValidationError, match="still queued"):  # one run of a series at a time
        submit(tenant, operator, "IMAP-S3-ZIP", form)
    run_worker_burst(rq_queue)
    first.refresh_from_db()
    assert first.state == "completed", first.error
    assert first.result["series"]["cursor"]["INBOX"]["highest"] > 0
    s3 = rclone.client()
    first_keys = keys(s3, dest_bucket.name)
    assert "mail/alice-series.zip" in first_keys

    # Foreign requests on the same PREFIX/FILE are still refused: a one-off, another mailbox's series.
    with pytest.raises(ValidationError, match="already written"):
        submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="alice-series"))
    with pytest.raises(ValidationError, match="already written"):
        submit(tenant, operator, "IMAP-S3-ZIP", {**form, "source_user": "bob"})

    append(dovecot, "INBOX", b"Subject: new\r\nMessage-ID: <series-new@example.com>\r\n\r\nnew one\r\n")
    second = submit(tenant, operator, "IMAP-S3-ZIP", form)
    assert second.series_key == first.series_key and second.options["series_run"] == 2
    run_worker_burst(rq_queue)
    second.refresh_from_db()
    assert second.state == "completed", second.error
    assert second.result["totals"]["exported"] == 1
    assert [a["key"] for a in second.result["archives"]] == ["mail/alice-series.r0002.zip"]
    assert first_keys <= keys(s3, dest_bucket.name)  # nothing of run 1 replaced or deleted
    summary = json.loads(s3.get_object(Bucket=dest_bucket.name,
                                       Key="mail/alice-series.r0002.summary.json")["Body"].read())
    assert summary["series"]["parent"]["archives"] == ["mail/alice-series.zip"]
    assert summary["series"]["parent"]["request"] == str(first.uuid)
    assert summary["series"]["resumed_from"] == first.result["series"]["cursor"]

    third = submit(tenant, operator, "IMAP-S3-ZIP", form)
    run_worker_burst(rq_queue)
    third.refresh_from_db()
    assert third.state == "completed", third.error
    assert third.result["archives"] == [] and third.result["series"]["new"] == 0
    assert not any(k.startswith("mail/alice-series.r0003.zip") for k in keys(s3, dest_bucket.name))
    assert "mail/alice-series.r0003.summary.json" in keys(s3, dest_bucket.name)

    client = client_for(operator)
    for url in (f"/t/{tenant.slug}/requests/{third.uuid}/", f"/t/{tenant.slug}/requests/{third.uuid}/report/"):
        assert client.get(url).status_code == 200  # a run without an archive has its pages too
    summary_download = client.get(f"/t/{tenant.slug}/requests/{third.uuid}/report.json")
    assert summary_download.status_code == 200
    assert "alice-series.r0003.summary.json" in summary_download["Content-Disposition"]
    page = client.get(f"/t/{tenant.slug}/requests/{second.uuid}/").content.decode()
    assert "Incremental series" in page
    for run in (first, second, third):
        assert f"/requests/{run.uuid}/" in page
    assert "alice-series.r0002" in page and "alice-series.r0003" in page


def test_a_cancelled_run_moves_no_cursor_and_the_next_run_takes_what_it_left(
        operator, tenant, dovecot, imap_ca, dest_bucket, rclone, rq_queue):
    from requests_app.services import request_cancel

    form = imap_form(dovecot, dest_bucket, file_name="alice-cancel", incremental="yes")
    first = submit(tenant, operator, "IMAP-S3-ZIP", form)
    run_worker_burst(rq_queue)
    first.refresh_from_db()
    assert first.state == "completed", first.error
    append(dovecot, "INBOX", b"Subject: later\r\nMessage-ID: <series-later@example.com>\r\n\r\nlater\r\n")
    cancelled = submit(tenant, operator, "IMAP-S3-ZIP", form)
    request_cancel(req=cancelled, actor=operator)
    run_worker_burst(rq_queue)
    cancelled.refresh_from_db()
    assert cancelled.state == "cancelled" and not (cancelled.result or {}).get("series")
    after = submit(tenant, operator, "IMAP-S3-ZIP", form)
    assert after.options["series_run"] == 3
    run_worker_burst(rq_queue)
    after.refresh_from_db()
    assert after.state == "completed", after.error
    assert after.result["series"]["resumed_from"] == first.result["series"]["cursor"]
    assert after.result["totals"]["exported"] >= 1


def test_csv_rows_take_incremental_yes_or_no_on_backup_types(tenant, dest_bucket):
    from requests_app.csvimport import parse_csv
    from requests_app.types import get_type

    assert "incremental" in get_type("IMAP-S3-ZIP").columns
    head = "request_type,source_server,source_user,source_password,bucket,file_name,incremental\n"
    good = parse_csv(head + f"IMAP-S3-ZIP,imap.example.com,u1,p,{dest_bucket.name},u1,yes\n"
                            f"IMAP-S3-ZIP,imap.example.com,u2,p,{dest_bucket.name},u2,no\n", tenant=tenant)
    assert good.ok, good.errors
    assert [r.data["incremental"] for r in good.rows] == [True, False]
    bad = parse_csv(head + f"IMAP-S3-ZIP,imap.example.com,u1,p,{dest_bucket.name},u1,maybe\n", tenant=tenant)
    assert any("incremental: Use yes or no" in e for e in bad.errors), bad.errors
    named = parse_csv(head + f"IMAP-S3-ZIP,imap.example.com,u1,p,{dest_bucket.name},u1.r0002,no\n", tenant=tenant)
    assert any("later run" in e for e in named.errors), named.errors


def test_bulk_submission_numbers_each_series_run(tenant, operator, dest_bucket):
    from requests_app.csvimport import parse_csv
    from requests_app.services import requests_submit_many

    head = "request_type,source_server,source_user,source_password,bucket,file_name,incremental\n"
    parsed = parse_csv(head + f"IMAP-S3-ZIP,imap.example.com,u1,p,{dest_bucket.name},u1,yes\n"
                              f"IMAP-S3-ZIP,imap.example.com,u2,p,{dest_bucket.name},u2,no\n", tenant=tenant)
    created = requests_submit_many(tenant=tenant, actor=operator, rows=parsed.rows)
    series, one_off = sorted(created, key=lambda r: r.source_user)
    assert series.incremental and series.options["series_run"] == 1 and series.series_key
    assert not one_off.incremental and not one_off.series_key and "series_run" not in one_off.options
    MigrationRequest.objects.filter(pk=series.pk).update(state="completed")
    again = requests_submit_many(tenant=tenant, actor=operator, rows=parse_csv(
        head + f"IMAP-S3-ZIP,imap.example.com,U1,p,{dest_bucket.name},U1,yes\n", tenant=tenant).rows)
    assert again[0].series_key == series.series_key and again[0].options["series_run"] == 2


def test_after_a_uidvalidity_reset_the_series_matches_its_archived_records_and_takes_only_new_mail(
        operator, tenant, dovecot, imap_ca, dest_bucket, rclone, rq_queue):
    form = imap_form(dovecot, dest_bucket, file_name="alice-reset", incremental="yes", folders="INBOX")
    first = submit(tenant, operator, "IMAP-S3-ZIP", form)
    run_worker_burst(rq_queue)
    first.refresh_from_db()
    assert first.state == "completed", first.error
    maildir = dovecot.maildir(MAILBOX_USER, "INBOX")
    for path in maildir.iterdir():
        if path.name.startswith(("dovecot-uidlist", "dovecot.index")):
            path.unlink()
    append(dovecot, "INBOX", b"Subject: after reset\r\nMessage-ID: <series-reset@example.com>\r\n\r\nreset\r\n")
    second = submit(tenant, operator, "IMAP-S3-ZIP", form)
    run_worker_burst(rq_queue)
    second.refresh_from_db()
    assert second.state == "completed", second.error
    inbox = second.result["series"]["folders"]["INBOX"]
    assert inbox["mode"] == "rematched" and inbox["new"] == 1 and inbox["expunged"] == 0, inbox
    assert second.result["totals"]["exported"] == 1
    assert (second.result["series"]["cursor"]["INBOX"]["uidvalidity"]
            != first.result["series"]["cursor"]["INBOX"]["uidvalidity"])


def test_a_series_run_that_completed_with_errors_is_not_retried_its_next_run_fetches_the_failures(
        tenant, operator, dest_bucket):
    from requests_app import lifecycle
    from requests_app.services import request_retry

    req = MigrationRequest.objects.create(tenant=tenant, request_type="IMAP-S3-ZIP", bucket=dest_bucket,
                                          file_name="x", incremental=True, series_key="k" * 64,
                                          state="completed_with_errors")
    assert not lifecycle.is_retryable(req)
    with pytest.raises(ValidationError, match="next run of the series"):
        request_retry(req=req, actor=operator)
    one_off = MigrationRequest.objects.create(tenant=tenant, request_type="IMAP-S3-ZIP", bucket=dest_bucket,
                                              file_name="y", state="completed_with_errors")
    assert lifecycle.is_retryable(one_off)

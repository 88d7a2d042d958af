"""In a real browser: "Restore…" on a completed backup, the pre-filled restore form, Test
connection of the target mailbox, the restore completing; "Browse archive" and one message."""

from __future__ import annotations

import pytest

from buckets.models import Bucket
from tests.browser import login
from tests.conftest import PASSWORD
from tests.portal_fixtures import imap_form, run_worker_burst, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def both_bucket(tenant, rclone, s3_bucket):
    return Bucket.objects.create(
        tenant=tenant, name=s3_bucket, region="us-east-1", endpoint_url=rclone.url, purpose="both",
        auth_mode="keys", access_key_id=rclone.access_key, secret_access_key=rclone.secret_key, status="verified")


def test_restore_from_a_completed_backup_and_browse_its_archive(page, operator, tenant, dovecot, imap_ca, both_bucket,
                                                                rclone, rq_queue, worker_process):
    backup = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, both_bucket, file_name="alice-browser"))
    run_worker_burst(rq_queue)
    backup.refresh_from_db()
    assert backup.state == "completed", backup.error
    dovecot.add_user("browser-target", "browser-target-pw")

    login(page, operator.email, PASSWORD)
    page.goto(f"/t/{tenant.slug}/requests/{backup.uuid}/")
    page.click("#restore")
    page.wait_for_url("**/requests/new/S3-IMAP-ZIP/?from=*")
    assert page.input_value("#id_archive_key") == "mail/alice-browser.zip"
    assert page.input_value("#id_bucket") == str(both_bucket.uuid)
    assert page.input_value("#id_target_server") == "127.0.0.1"
    page.fill("#id_target_user", "browser-target")
    page.fill("#id_target_password", "browser-target-pw")
    page.click("#test-connection")
    page.wait_for_selector("[data-test=ok]")
    assert "INBOX" in page.inner_text("#test-result")
    page.click("button:has-text('Submit request')")
    page.wait_for_url("**/requests/*/")
    worker_process()
    page.wait_for_selector("#progress [data-state=completed]", timeout=90000)
    assert "restored" in page.inner_text("#messages")

    page.goto(f"/t/{tenant.slug}/requests/{backup.uuid}/")
    page.click("#browse")
    page.wait_for_selector("#browse-folders")
    page.click("#browse-folders a:text-is('INBOX')")
    page.wait_for_selector("#browse-messages")
    with page.expect_download() as download:
        page.locator("#browse-messages a.download").first.click()
    assert download.value.suggested_filename.endswith(".eml")
    assert b"\r\n\r\n" in open(download.value.path(), "rb").read()

"""In a real browser: test the connection, submit a request from the form, watch it complete."""

from __future__ import annotations

import pytest

from tests.browser import login
from tests.conftest import PASSWORD
from tests.portal_fixtures import (
    MAILBOX_PASSWORD,
    MAILBOX_USER,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def fill_imap_form(page, dovecot, bucket, password):
    page.fill("#id_title", "Alice's mailbox")
    page.fill("#id_source_server", "127.0.0.1")
    page.fill("#id_source_port", str(dovecot.ssl_port))
    page.select_option("#id_source_security", "ssl")
    page.fill("#id_source_user", MAILBOX_USER)
    page.fill("#id_source_password", password)
    page.select_option("#id_bucket", str(bucket.uuid))
    page.fill("#id_s3_prefix", "browser")
    page.fill("#id_file_name", "alice")


def test_operator_submits_and_watches_a_request_complete(page, operator, tenant, dovecot, dest_bucket, rclone,
                                                         worker_process):
    login(page, operator.email, PASSWORD)
    page.click("a:has-text('Requests')")
    page.click("a:has-text('New request')")
    page.click("a:has-text('IMAP-S3-ZIP')")

    fill_imap_form(page, dovecot, dest_bucket, "not-the-password")
    page.click("#test-connection")
    page.wait_for_selector("[data-test=fail]")
    assert "refused the login" in page.inner_text("#test-result")

    page.fill("#id_source_password", MAILBOX_PASSWORD)
    page.click("#test-connection")
    page.wait_for_selector("[data-test=ok]")
    result = page.inner_text("#test-result")
    assert "INBOX" in result and "日本語" in result  # folders with their counts, Unicode decoded

    page.click("button:has-text('Submit request')")
    page.wait_for_url("**/requests/*/")
    assert page.inner_text("#state") in ("Queued", "Running", "Completed")
    worker_process()
    # The progress fragment refreshes itself until the request ends.
    page.wait_for_selector("#progress [data-state=completed]", timeout=90000)
    assert "exported" in page.inner_text("#messages")
    page.click("a:has-text('Report')")
    assert page.locator("#reconciled").count() == 1
    assert page.locator("#folder-report tbody tr").count() >= 5

    page.click("a:has-text('Requests')")
    row = page.locator("tr[data-state=completed]")
    assert row.count() == 1 and "Alice's mailbox" in row.inner_text()
    keys = {o["Key"] for o in rclone.client().list_objects_v2(Bucket=dest_bucket.name)["Contents"]}
    assert {"browser/alice.zip", "browser/alice.report.csv", "browser/alice.summary.json"} <= keys

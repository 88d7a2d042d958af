"""In a real browser: test the connection, submit a request from the form, watch it complete."""

from __future__ import annotations

import re

import pytest

from tests.browser import login
from tests.conftest import PASSWORD
from tests.portal_fixtures import (
    MAILBOX_PASSWORD,
    MAILBOX_USER,
    imap_form,
    submit,
    wait_for,
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


def test_request_page_follows_the_run_to_its_end_without_a_reload(page, operator, tenant, dovecot, dest_bucket,
                                                                   worker_process):
    """The buttons and the flash follow the live progress: no Cancel (nor the "queued" flash)
    once the request completed, no Retry on a completed request, an exact duration, and sizes
    that say what they measure."""
    login(page, operator.email, PASSWORD)
    page.goto(f"/t/{tenant.slug}/requests/new/IMAP-S3-ZIP/")
    fill_imap_form(page, dovecot, dest_bucket, MAILBOX_PASSWORD)
    page.fill("#id_file_name", "alice-states")
    page.click("button:has-text('Submit request')")
    page.wait_for_url("**/requests/*/")
    assert "The request is queued." in page.inner_text(".messages")
    assert page.locator("#cancel").is_visible() and page.locator("#retry").count() == 0
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    worker_process()
    page.wait_for_selector("#progress [data-state=completed]", timeout=90000)
    assert page.evaluate("window.sameDocument") is True
    assert page.locator("#cancel").count() == 0 and page.locator("#retry").count() == 0
    assert page.locator("#request-actions a:has-text('Report')").count() == 1
    assert "queued" not in page.inner_text("main")
    assert re.fullmatch(r"under 1 s|\d+ s|\d+ min( \d+ s)?", page.inner_text("#duration"))
    facts = page.inner_text("#progress .facts")
    assert "Archive size" in facts and "Messages' size" in facts and "Data" not in facts
    page.click("#request-actions a:has-text('Report')")
    assert "Size of the messages" in page.inner_text("#folder-report thead")
    assert "Archive size" in page.inner_text("#archive-files")


def test_a_cancelled_request_shows_nothing_kept_and_offers_retry(page, operator, tenant, dovecot, dest_bucket,
                                                                 worker_process):
    """Cancelled while it runs: a neutral notice instead of a red error box, no archive size, no
    Cancel, and Retry — all without a reload."""
    from tests.servers.faults import Fault, TcpFaultProxy

    stall = {n: Fault(stall_after=0, after_marker=b"BODY.PEEK[]") for n in range(20)}
    with TcpFaultProxy(dovecot.port, faults=stall) as proxy:  # the run stays in its first FETCH
        req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(
            dovecot, dest_bucket, source_port=proxy.port, source_security="none", file_name="alice-cancelled"))
        login(page, operator.email, PASSWORD)
        page.goto(f"/t/{tenant.slug}/requests/{req.uuid}/")
        worker_process()
        wait_for(lambda: any(b"BODY.PEEK[]" in c.client_bytes for c in proxy.connections), timeout=120,
                 interval=0.05)
        page.wait_for_selector("#progress [data-state=running]")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#cancel")
        page.wait_for_url(f"**/requests/{req.uuid}/")
        page.evaluate("window.sameDocument = true")
        assert "Cancellation requested." in page.inner_text(".messages")
        assert page.locator("#cancelling").is_visible() and page.locator("#cancel").count() == 0  # asked once
    # Closing the stalled connections lets the run notice (a stalled FETCH holds it until then).
    page.wait_for_selector("#progress [data-state=cancelled]", timeout=60000)
    assert page.locator("#progress .errorbox").count() == 0
    notice = page.inner_text("#cancelled")
    assert "partial upload was discarded" in notice and "Retry runs it again" in notice
    facts = page.inner_text("#progress .facts")
    assert "none kept" in facts and not re.search(r"\d B\b|KB|MB|GB", facts)
    assert page.locator("#cancel").count() == 0 and page.locator("#retry").is_visible()
    assert page.evaluate("window.sameDocument") is True  # the live fragment did all this...
    assert "Cancellation requested" not in page.inner_text("main")  # ...and took the flash away


def test_report_page_follows_the_run_to_its_end_without_a_reload(page, operator, tenant, dovecot, dest_bucket,
                                                                  worker_process):
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="alice-report"))
    login(page, operator.email, PASSWORD)
    page.goto(f"/t/{tenant.slug}/requests/{req.uuid}/report/")
    assert page.inner_text("h1 .state") == "Queued" and page.locator("#archive-files").count() == 0
    page.evaluate("window.sameDocument = true")
    worker_process()
    page.wait_for_selector("#reconciled", timeout=90000)
    assert page.evaluate("window.sameDocument") is True
    assert page.inner_text("h1 .state") == "Completed"
    assert "s3://" + dest_bucket.name + "/mail/alice-report.zip" in page.inner_text("#archive-files")


def test_test_connection_counts_every_folder_and_answers_a_wrong_setting_quickly(page, operator, tenant, dovecot,
                                                                                 dest_bucket, imap_ca):
    """Counts per folder (IMAP STATUS); Security "None" on the SSL port answered with what to
    choose (the page's 20 s wait bounds it); a folder to include the mailbox lacks is named."""
    login(page, operator.email, PASSWORD)
    page.goto(f"/t/{tenant.slug}/requests/new/IMAP-S3-ZIP/")
    fill_imap_form(page, dovecot, dest_bucket, MAILBOX_PASSWORD)
    page.select_option("#id_source_security", "none")
    page.click("#test-connection")
    page.wait_for_selector("[data-test=fail]")
    assert "the server spoke TLS. Choose SSL" in page.inner_text("#test-result")

    page.select_option("#id_source_security", "ssl")
    page.click("#test-connection")
    page.wait_for_selector("[data-test=ok]")
    shown = {}
    for row in page.locator("#test-folders tbody tr").all():
        folder, count = row.locator("td").all_inner_texts()
        shown[folder] = count
    truth = {folder: str(len(messages)) for folder, messages in dovecot.mailbox.by_folder().items()}
    assert {f: c for f, c in shown.items() if f in truth} == truth
    assert "—" not in {shown[f] for f in truth}

    page.fill("#id_folders", "DoesNotExist")
    page.click("#test-connection")
    page.wait_for_selector("[data-test=fail]")
    error = page.inner_text("#test-error")
    assert "no folder 'DoesNotExist'" in error and "Its folders are: INBOX" in error
    assert page.locator("#test-folders tbody tr").count() == len(shown)  # the folders it has, still listed


def test_a_filter_that_matches_nothing_completes_with_the_warning_on_the_report(page, operator, tenant, dovecot,
                                                                                 dest_bucket, worker_process):
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, folders="Leer",
                                                             file_name="alice-leer"))
    login(page, operator.email, PASSWORD)
    page.goto(f"/t/{tenant.slug}/requests/{req.uuid}/")
    worker_process()
    page.wait_for_selector("#progress [data-state=completed]", timeout=90000)
    assert "0 messages matched: folders Leer" in page.inner_text("#warning")
    page.goto(f"/t/{tenant.slug}/requests/{req.uuid}/report/")
    assert "0 messages matched: folders Leer" in page.inner_text("#report-warning")


def test_the_archive_downloads_from_the_report_page_straight_from_the_bucket(page, operator, tenant, dovecot,
                                                                             dest_bucket, rclone, worker_process):
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, folders="Sent",
                                                             file_name="alice-download"))
    login(page, operator.email, PASSWORD)
    page.goto(f"/t/{tenant.slug}/requests/{req.uuid}/report/")
    worker_process()
    page.wait_for_selector("#downloads", timeout=90000)
    labels = page.locator("#downloads a").all_inner_texts()
    assert labels == ["Archive", "report.csv", "summary.json"]
    with page.expect_download() as download:
        page.click("#downloads a:has-text('Archive')")
    assert download.value.suggested_filename == "alice-download.zip"
    with open(download.value.path(), "rb") as got:
        assert got.read() == rclone.client().get_object(Bucket=dest_bucket.name,
                                                        Key="mail/alice-download.zip")["Body"].read()

"""In a real browser: the dashboard's tiles, the request list's search and bulk cancel, a CSV
batch's page, and the pace of a running request."""

from __future__ import annotations

import pytest

from requests_app.models import MigrationRequest
from tests.browser import login
from tests.conftest import PASSWORD
from tests.portal_fixtures import imap_form, submit, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_csv_batch_then_search_select_and_cancel_from_the_list(page, operator, tenant, dovecot, dest_bucket,
                                                                 tmp_path):
    rows = ["request_type,title,source_server,source_port,source_security,source_user,source_password,bucket,"
            "s3_prefix,file_name"]
    for name in ("anna", "ben", "cleo"):
        rows.append(f"IMAP-S3-ZIP,{name.title()} box,127.0.0.1,{dovecot.ssl_port},ssl,{name}@corp.test,pw,"
                    f"{dest_bucket.name},mail,{name}")
    csv_file = tmp_path / "team.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    login(page, operator.email, PASSWORD)
    page.goto(f"/t/{tenant.slug}/requests/upload/")
    page.set_input_files("input[type=file]", str(csv_file))
    page.click("button:has-text('Check and submit')")
    page.wait_for_url("**/requests/batches/*/")
    assert page.inner_text("h1") == "CSV batch: team.csv"
    assert "3\nrequests" in page.inner_text("#batch-totals")

    page.goto(f"/t/{tenant.slug}/")
    assert page.inner_text("#tile-mailboxes .num") == "3"
    page.click("#tile-mailboxes")
    page.fill("#id_q", "ben@")
    page.click("#filters button:has-text('Filter')")
    assert page.locator("#requests tbody tr[data-request]").count() == 1
    assert "ben@corp.test" in page.inner_text("#requests tbody")

    page.fill("#id_q", "")
    page.click("#filters button:has-text('Filter')")
    page.check("#select-all")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bulk-cancel")
    page.wait_for_selector(".messages")
    assert "3 requests cancellation requested." in page.inner_text(".messages")
    assert page.locator("#requests tbody tr[data-state=cancelled]").count() == 3


def test_a_running_request_shows_its_speed_and_time_left(page, operator, tenant, dovecot, dest_bucket,
                                                         worker_process):
    from tests.servers.faults import Fault, TcpFaultProxy

    stall = {n: Fault(stall_after=0, after_marker=b"BODY.PEEK[]") for n in range(20)}
    with TcpFaultProxy(dovecot.port, faults=stall) as proxy:
        req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(
            dovecot, dest_bucket, source_port=proxy.port, source_security="none", file_name="alice-pace"))
        login(page, operator.email, PASSWORD)
        page.goto(f"/t/{tenant.slug}/requests/{req.uuid}/")
        worker_process()
        page.wait_for_selector("#progress [data-state=running]", timeout=90000)
        page.wait_for_selector("#throughput")
        assert "messages/s" in page.inner_text("#throughput") and "/s" in page.inner_text("#throughput")
        assert page.inner_text("#remaining") in ("estimating…",) or page.inner_text("#remaining").startswith("about")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#cancel")
        wait_for(lambda: MigrationRequest.objects.get(pk=req.pk).cancel_requested, timeout=30)
    # The proxy is gone: the stalled fetch fails at once and the run sees the cancellation.
    wait_for(lambda: MigrationRequest.objects.get(pk=req.pk).state == "cancelled", timeout=120)


def test_run_again_submits_the_same_settings_with_the_stored_password(page, operator, tenant, dovecot, dest_bucket):
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, folders="Sent",
                                                             file_name="alice-first"))
    MigrationRequest.objects.filter(pk=req.pk).update(state="completed")
    login(page, operator.email, PASSWORD)
    page.goto(f"/t/{tenant.slug}/requests/{req.uuid}/")
    page.click("#clone")
    assert "Settings copied from" in page.inner_text("#clone-notice")
    assert page.input_value("#id_folders") == "Sent" and page.input_value("#id_source_password") == ""
    assert page.input_value("#id_file_name").startswith("alice-first-")
    page.click("button:has-text('Submit request')")
    page.wait_for_url("**/requests/*/")
    again = MigrationRequest.objects.exclude(pk=req.pk).get()
    assert page.url.endswith(f"/requests/{again.uuid}/")
    assert again.source_password == req.source_password and again.folders == ["Sent"]

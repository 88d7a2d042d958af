"""Plan pages in a real Chromium: create per backup type, Schedule this, pause / resume / edit /
delete, the runs and events on the plan page, the tenant's default recipients."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from requests_app.models import MigrationRequest, Plan, PlanEventKind, State, TenantNotifications
from tests.browser import login
from tests.conftest import PASSWORD
from tests.portal_fixtures import MAILBOX_PASSWORD, MAILBOX_USER, imap_form, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_operator_creates_pauses_edits_and_deletes_a_plan(page, operator, tenant, dovecot, dest_bucket, rq_queue):
    login(page, operator.email, PASSWORD)
    page.click("nav a:has-text('Plans')")
    page.click("a:has-text('New plan')")
    page.click("a:has-text('IMAP-S3-ZIP')")
    page.fill("#id_title", "Alice nightly")
    page.fill("#id_source_server", "127.0.0.1")
    page.fill("#id_source_port", str(dovecot.ssl_port))
    page.fill("#id_source_user", MAILBOX_USER)
    page.fill("#id_source_password", MAILBOX_PASSWORD)
    page.select_option("#id_bucket", str(dest_bucket.uuid))
    page.fill("#id_s3_prefix", "plans")
    page.fill("#id_file_name", "alice")
    page.fill("#id_notify", "ops@acme.test")
    page.fill("#id_schedule", "daily 25:00")
    page.click("#save-plan")
    assert "not a time of day" in page.inner_text("#field-schedule")
    page.fill("#id_source_password", MAILBOX_PASSWORD)  # never echoed back
    page.fill("#id_schedule", "daily 02:30")
    page.click("#save-plan")
    page.wait_for_url("**/plans/*/")
    plan = Plan.objects.get()
    assert plan.source_password == MAILBOX_PASSWORD and plan.notify == ["ops@acme.test"]
    assert "every day at 02:30 UTC" in page.inner_text("#schedule")
    assert f"{plan.next_run_at:%Y-%m-%d %H:%M}" in page.inner_text("#next-run")

    page.click("#pause")
    page.wait_for_selector("#paused")
    assert Plan.objects.get().paused
    page.click("#resume")
    page.wait_for_selector("#pause")
    assert not Plan.objects.get().paused

    page.click("#edit")
    assert page.input_value("#id_source_user") == MAILBOX_USER
    assert page.input_value("#id_source_password") == ""
    page.fill("#id_schedule", "weekly mon 03:15")
    page.click("#save-plan")
    page.wait_for_url("**/plans/*/")
    assert "every Monday at 03:15 UTC" in page.inner_text("#schedule")
    plan = Plan.objects.get()
    assert plan.schedule == "weekly mon 03:15" and plan.source_password == MAILBOX_PASSWORD  # kept

    # its slot comes: the run and the event are on the plan's page
    call_command("plans_run_due", at=(plan.next_run_at + timedelta(seconds=5)).isoformat(), stdout=io.StringIO())
    run = MigrationRequest.objects.get(plan=plan)
    page.reload()
    assert page.locator("#runs tbody tr").count() == 1
    assert page.locator(f"#events tr.event-{PlanEventKind.SUBMITTED}").count() == 1

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    page.wait_for_url("**/plans/")
    assert "No plans yet." in page.inner_text("#plans")
    assert MigrationRequest.objects.filter(pk=run.pk).exists()  # its runs are kept


def test_schedule_this_fills_the_plan_form_from_a_completed_request(page, operator, tenant, dovecot, dest_bucket,
                                                                    rq_queue):
    req = submit(tenant, operator, "IMAP-S3-ZIP",
                 imap_form(dovecot, dest_bucket, title="Alice once", folders="INBOX", notify="me@acme.test"))
    MigrationRequest.objects.filter(pk=req.pk).update(state=State.COMPLETED, finished_at=datetime.now(UTC))
    login(page, operator.email, PASSWORD)
    page.goto(f"/t/{tenant.slug}/requests/{req.uuid}/")
    page.click("#schedule-this")
    page.wait_for_url("**/plans/new/IMAP-S3-ZIP/?from=*")
    assert page.input_value("#id_source_user") == MAILBOX_USER
    assert page.input_value("#id_folders") == "INBOX"
    assert page.input_value("#id_bucket") == str(dest_bucket.uuid)
    assert page.input_value("#id_notify") == "me@acme.test"
    assert page.input_value("#id_source_password") == ""
    page.fill("#id_file_name", "alice-series")
    page.fill("#id_schedule", "monthly 31 01:00")
    page.click("#save-plan")
    page.wait_for_url("**/plans/*/")
    plan = Plan.objects.get()
    assert plan.source_password == MAILBOX_PASSWORD  # the request's, never shown
    assert plan.template["folders"] == ["INBOX"] and plan.schedule == "monthly 31 01:00"
    assert "every month on last day at 01:00 UTC" in page.inner_text("#schedule")


def test_admin_sets_the_default_recipients_and_a_viewer_only_reads_them(page, admin, viewer, tenant):
    login(page, admin.email, PASSWORD)
    page.goto(f"/t/{tenant.slug}/plans/notifications/")
    page.fill("#id_notify", "ops@acme.test; nope")
    page.click("#save-notifications")
    assert "'nope' is not an email address." in page.inner_text("#field-notify")
    page.fill("#id_notify", "ops@acme.test; Audit@Acme.test")
    page.click("#save-notifications")
    page.wait_for_selector("text=Saved.")
    assert TenantNotifications.objects.get(tenant=tenant).notify == ["ops@acme.test", "audit@acme.test"]
    page.context.clear_cookies()
    login(page, viewer.email, PASSWORD)
    page.goto(f"/t/{tenant.slug}/plans/notifications/")
    assert page.input_value("#id_notify") == "ops@acme.test; audit@acme.test"
    assert page.locator("#save-notifications").count() == 0

"""requests_app.notifications: the mails of a run (start, end), through a real SMTP server on
loopback (aiosmtpd), for real runs against Dovecot and rclone's S3 server."""

from __future__ import annotations

import logging

import pytest

from requests_app import lifecycle
from requests_app.models import MigrationRequest, State, TenantNotifications
from tests.portal_fixtures import MAILBOX_USER, imap_form, run_worker_burst, submit
from tests.smtp import bodies

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_run_mails_its_start_and_its_end_with_the_figures(operator, tenant, dovecot, imap_ca, dest_bucket, rclone,
                                                            rq_queue, smtp, settings):
    settings.LEGACYFLO_PUBLIC_URL = "https://backup.acme.test"
    TenantNotifications.objects.create(tenant=tenant, notify=["audit@acme.test", "ops@acme.test"])
    req = submit(tenant, operator, "IMAP-S3-ZIP",
                 imap_form(dovecot, dest_bucket, notify="ops@acme.test; Boss@Acme.test", title="Alice nightly"))
    assert req.notify == ["ops@acme.test", "boss@acme.test"]
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == State.COMPLETED
    started, ended = smtp.messages
    recipients = ["ops@acme.test", "boss@acme.test", "audit@acme.test"]  # each address once
    assert [a.strip() for a in started["To"].split(",")] == recipients
    assert [a.strip() for a in ended["To"].split(",")] == recipients
    assert started["Subject"] == "[LegacyFlo] Started: IMAP-S3-ZIP Alice nightly"
    assert ended["Subject"] == "[LegacyFlo] Completed: IMAP-S3-ZIP Alice nightly"

    text, html = bodies(started)
    assert "has started" in text and MAILBOX_USER in text
    assert f"https://backup.acme.test/t/acme/requests/{req.uuid}/" in text and "has started" in html

    text, html = bodies(ended)
    folders = {f["folder"]: f for f in req.result["folders"]}
    mailbox = dovecot.mailbox
    assert f"Exported:    {req.messages_done}" in text and req.messages_done == len(list(mailbox.messages()))
    assert "Failed:      0" in text and "Skipped:     0" in text
    for name, f in folders.items():
        assert f"  {name}: {f['source_count']} / {f['exported']} / 0 / 0" in text
        assert f"<td>{name}</td><td>{f['source_count']}</td>" in html.replace("&amp;", "&")
    for archive in req.result["archives"]:
        assert f"{dest_bucket.name}/{archive['key']}" in text and archive["key"] in html
    assert "Duration:    " in text and "Duration:    -" not in text
    report_url = f"https://backup.acme.test/t/acme/requests/{req.uuid}/report/"
    assert report_url in text and f'href="{report_url}"' in html
    assert "First messages not exported" not in text


def test_a_failed_run_mails_the_reason_once_after_the_last_attempt(operator, tenant, dovecot, imap_ca, dest_bucket,
                                                                   rclone, rq_queue, smtp):
    req = submit(tenant, operator, "IMAP-S3-ZIP",
                 imap_form(dovecot, dest_bucket, source_password="wrong-password", notify="ops@acme.test"))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == State.FAILED
    subjects = [m["Subject"] for m in smtp.messages]
    assert subjects == [f"[LegacyFlo] Started: {req}", f"[LegacyFlo] Failed: {req}"]
    text, _ = bodies(smtp.messages[1])
    assert req.error and req.error.splitlines()[0] in text


def test_an_interrupted_run_resumed_automatically_mails_no_second_start(operator, tenant, dovecot, imap_ca,
                                                                        dest_bucket, rclone, rq_queue, smtp):
    """A worker that died (its heartbeat stale) is re-queued and resumed: still one start mail, and
    the end mail after the run that finished."""
    from datetime import timedelta

    from django.utils import timezone

    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, notify="ops@acme.test"))
    rq_queue.empty()
    assert lifecycle.claim(req.pk)  # a worker took it, mailed its start, then died
    assert [m["Subject"] for m in smtp.messages] == [f"[LegacyFlo] Started: {req}"]
    MigrationRequest.objects.filter(pk=req.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert lifecycle.requeue_stale(req.pk) == "requeued"
    from requests_app.queue import enqueue_request

    enqueue_request(req.pk)
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == State.COMPLETED and req.attempts == 2
    assert [m["Subject"] for m in smtp.messages] == [f"[LegacyFlo] Started: {req}", f"[LegacyFlo] Completed: {req}"]


def test_a_retry_is_a_new_run_with_its_own_mails(operator, tenant, dovecot, imap_ca, dest_bucket, rclone, rq_queue,
                                                 smtp):
    from requests_app.services import request_retry

    req = submit(tenant, operator, "IMAP-S3-ZIP",
                 imap_form(dovecot, dest_bucket, source_password="wrong-password", notify="ops@acme.test"))
    run_worker_burst(rq_queue)
    MigrationRequest.objects.filter(pk=req.pk).update(source_password="alice-imap-password")
    req.refresh_from_db()
    request_retry(req=req, actor=operator)
    run_worker_burst(rq_queue)
    assert [m["Subject"] for m in smtp.messages] == [
        f"[LegacyFlo] Started: {req}", f"[LegacyFlo] Failed: {req}",
        f"[LegacyFlo] Started: {req}", f"[LegacyFlo] Completed: {req}"]


def test_a_cancelled_queued_request_mails_its_end(operator, tenant, dovecot, dest_bucket, rq_queue, smtp):
    from requests_app.services import request_cancel

    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, notify="ops@acme.test"))
    request_cancel(req=req, actor=operator)
    [mail] = smtp.messages
    assert mail["Subject"] == f"[LegacyFlo] Cancelled: {req}"


def test_no_recipients_no_mail(operator, tenant, dovecot, imap_ca, dest_bucket, rclone, rq_queue, smtp):
    submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket))
    run_worker_burst(rq_queue)
    assert smtp.messages == []


def test_a_mail_that_cannot_be_sent_never_fails_the_run_and_logs_no_password(
        operator, tenant, dovecot, imap_ca, dest_bucket, rclone, rq_queue, settings, caplog):
    import socket

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", closed_port
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = "mailer", "smtp-secret-password-42"
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, notify="ops@acme.test"))
    with caplog.at_level(logging.WARNING, logger="requests_app.notifications"):
        run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == State.COMPLETED
    warnings = [r.getMessage() for r in caplog.records if r.name == "requests_app.notifications"]
    assert len(warnings) == 2 and all("was not sent" in w and "ConnectionRefusedError" in w for w in warnings)
    assert not any("smtp-secret-password-42" in r.getMessage() for r in caplog.records)


def test_the_csv_notify_column_reaches_the_requests(operator, tenant, dovecot, dest_bucket, rq_queue):
    from requests_app.csvimport import parse_csv
    from requests_app.services import requests_submit_many

    text = ("request_type,source_server,source_port,source_security,source_user,source_password,bucket,file_name,"
            "notify\n"
            f"IMAP-S3-ZIP,127.0.0.1,{dovecot.ssl_port},ssl,alice,pw,{dest_bucket.name},one,a@acme.test;b@acme.test\n"
            f"IMAP-S3-ZIP,127.0.0.1,{dovecot.ssl_port},ssl,alice,pw,{dest_bucket.name},two,\n")
    parsed = parse_csv(text, tenant=tenant)
    assert parsed.ok, parsed.errors
    created = requests_submit_many(tenant=tenant, actor=operator, rows=parsed.rows)
    assert [r.notify for r in created] == [["a@acme.test", "b@acme.test"], []]
    bad = parse_csv(text.replace("a@acme.test;b@acme.test", "a@acme.test;nobody"), tenant=tenant)
    assert bad.errors == ["Line 2: notify: 'nobody' is not an email address."]

"""Cancel a running request, retry a failed one, bulk upload in the browserless web UI, and the
request commands — against the real queue, Dovecot and S3."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.core.management import CommandError, call_command

from accounts.models import AuditEvent
from requests_app.models import MigrationRequest
from tests.portal_fixtures import (
    MAILBOX_USER,
    imap_form,
    no_pending_uploads,
    run_worker_burst,
    source_digests,
    submit,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_cancel_while_running_aborts_the_upload(operator, tenant, dovecot, dest_bucket, rclone, worker_process,
                                               client_for):
    from tests.mailgen import generate_mailbox, write_maildir

    dovecot.add_user("big", "big-password")
    write_maildir(dovecot, "big", generate_mailbox("flat", seed=5, count=400, folder="INBOX", size=80_000))
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, source_user="big",
                                                            source_password="big-password", file_name="big"))
    worker_process()
    wait_for(lambda: req.parts.count() >= 1, timeout=120, interval=0.05)
    response = client_for(operator).post(f"/t/{tenant.slug}/requests/{req.uuid}/cancel/")
    assert response.status_code == 302
    wait_for(lambda: MigrationRequest.objects.get(pk=req.pk).is_final, timeout=60)
    req.refresh_from_db()
    assert req.state == "cancelled"
    s3 = rclone.client()
    assert no_pending_uploads(s3, dest_bucket.name)
    assert "mail/big.zip" not in {o["Key"] for o in s3.list_objects_v2(Bucket=dest_bucket.name).get("Contents", [])}
    assert AuditEvent.objects.filter(tenant=tenant, action="request.cancel", target=str(req.uuid)).exists()
    # The page does not show the discarded upload's size as if it were kept, nor the cancel as an error.
    assert req.bytes_done > 0
    fragment = client_for(operator).get(f"/t/{tenant.slug}/requests/{req.uuid}/progress/").content.decode()
    assert 'id="cancelled"' in fragment and "errorbox" not in fragment
    assert "none kept" in fragment and "MB" not in fragment and 'id="retry"' in fragment


@pytest.mark.parametrize("code", ["IMAP-S3-ZIP", "IMAP-S3-PST"])
def test_report_page_shows_folder_counts_while_running(code, operator, viewer, tenant, dovecot, dest_bucket,
                                                       worker_process, client_for):
    """The IMAP server stalls at the first message fetch, so the run stays deterministically
    between listing and transfer: the report page must already show every folder's count."""
    from tests.servers.faults import Fault, TcpFaultProxy
    from tests.test_requests_reports import folder_rows

    stall = {n: Fault(stall_after=0, after_marker=b"BODY.PEEK[]") for n in range(20)}
    with TcpFaultProxy(dovecot.port, faults=stall) as proxy:  # plain IMAP: the proxy sees the commands
        req = submit(tenant, operator, code, imap_form(dovecot, dest_bucket, source_port=proxy.port,
                                                       source_security="none", file_name=f"live-{code[-3:].lower()}"))
        worker_process()
        wait_for(lambda: any(b"BODY.PEEK[]" in c.client_bytes for c in proxy.connections), timeout=120,
                 interval=0.05)
        wait_for(lambda: MigrationRequest.objects.get(pk=req.pk).folder_progress.get("counts"), timeout=30)
        client = client_for(viewer)
        base = f"/t/{tenant.slug}/requests/{req.uuid}/report/"
        page, fragment = client.get(base).content.decode(), client.get(f"{base}folders/").content.decode()
        assert MigrationRequest.objects.get(pk=req.pk).state == "running"
        expected = {folder: len(messages) for folder, messages in source_digests(dovecot.mailbox).items()}
        for shown in (folder_rows(page), folder_rows(fragment)):
            assert {folder: row[0] for folder, row in shown.items() if row[0]} == expected
            assert all(row[1:] == (0, 0, 0) for row in shown.values())  # nothing fetched yet
        assert f'data-poll="{base}folders/"' in page and 'data-final="1"' not in fragment
        client_for(operator).post(f"/t/{tenant.slug}/requests/{req.uuid}/cancel/")
    wait_for(lambda: MigrationRequest.objects.get(pk=req.pk).is_final, timeout=120)


def test_retry_after_the_cause_is_fixed(operator, tenant, dovecot, imap_ca, dest_bucket, rclone, rq_queue, capsys):
    dovecot.add_user("carol", "carol-old-password")
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, source_user="carol",
                                                            source_password="carol-new-password", file_name="carol"))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "failed"
    dovecot.add_user("carol", "carol-new-password")  # the mail admin fixes the account
    call_command("request_retry", str(req.uuid))
    assert capsys.readouterr().out.strip().endswith("queued")
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed" and req.attempts == 2 and not req.error
    with pytest.raises(CommandError, match="only failed, cancelled"):
        call_command("request_retry", str(req.uuid))
    call_command("request_report", str(req.uuid))
    document = json.loads(capsys.readouterr().out)
    assert document["state"] == "completed" and document["report"]["reconciles"] is True
    call_command("request_report", str(req.uuid), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows == []  # carol's mailbox is empty: a header and nothing else
    with pytest.raises(CommandError, match="No request"):
        call_command("request_report", "not-a-uuid")


def test_cancel_and_retry_buttons_appear_exactly_when_the_action_is_accepted(operator, viewer, tenant, dovecot,
                                                                              dest_bucket, rq_queue, client_for):
    """For every state, the request page offers Cancel / Retry only if clicking it would work
    (Retry on a completed request used to be shown, and only refused); viewers get neither."""
    from datetime import timedelta

    from django.utils import timezone

    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="buttons"))
    base = f"/t/{tenant.slug}/requests/{req.uuid}/"
    stale = timezone.now() - timedelta(hours=1)
    cases = {"queued": {}, "running": {"heartbeat_at": timezone.now()}, "interrupted": {"heartbeat_at": stale},
             "completed": {}, "completed_with_errors": {}, "failed": {}, "cancelled": {}}
    client = client_for(operator)
    for name, extra in cases.items():
        state = "running" if name == "interrupted" else name
        arrange = {"state": state, "cancel_requested": False, "heartbeat_at": None, **extra}
        for action in ("retry", "cancel"):
            MigrationRequest.objects.filter(pk=req.pk).update(**arrange)
            shown = f'id="{action}"' in client.get(base).content.decode()
            flashes = re.findall(r'class="msg ([^"]*)"', client.post(f"{base}{action}/", follow=True).content.decode())
            accepted = flashes != [] and all("success" in f.split() for f in flashes)
            assert shown == accepted, (name, action, shown, accepted)
            assert shown == (action == "cancel" and state in ("queued", "running")
                             or action == "retry" and name in ("interrupted", "completed_with_errors", "failed",
                                                               "cancelled")), (name, action)
    MigrationRequest.objects.filter(pk=req.pk).update(state="failed")
    page = client_for(viewer).get(base).content.decode()
    assert 'id="retry"' not in page and 'id="cancel"' not in page


def test_csv_upload_page(operator, viewer, tenant, dovecot, imap_ca, dest_bucket, rq_queue, client_for):
    client = client_for(operator)
    sample = client.get(f"/t/{tenant.slug}/requests/sample/IMAP-S3-ZIP.csv")
    assert sample.status_code == 200 and sample.content.startswith(b"request_type,title,source_server")
    header = "request_type,title,source_server,source_port,source_security,source_user,source_password,bucket,file_name\n"
    good_row = f"IMAP-S3-ZIP,Alice,127.0.0.1,{dovecot.ssl_port},ssl,{MAILBOX_USER},x,{dest_bucket.name},alice-csv\n"
    bad_row = f"IMAP-S3-ZIP,Bad,127.0.0.1,99999,ssl,bob,x,{dest_bucket.name},bob-csv\n"
    response = client.post(f"/t/{tenant.slug}/requests/upload/",
                           {"file": io.BytesIO((header + good_row + bad_row).encode())})
    page = response.content.decode()
    assert "Nothing was submitted" in page and "Line 3: source_port" in page
    assert MigrationRequest.objects.count() == 0
    upload = io.BytesIO((header + good_row).encode())
    upload.name = "requests.csv"
    response = client.post(f"/t/{tenant.slug}/requests/upload/", {"file": upload})
    assert response.status_code == 302
    assert MigrationRequest.objects.filter(tenant=tenant, file_name="alice-csv").count() == 1
    assert rq_queue.count == 1
    assert AuditEvent.objects.filter(tenant=tenant, action="request.submit_bulk").exists()
    # Viewers can read the list but cannot upload.
    assert client_for(viewer).post(f"/t/{tenant.slug}/requests/upload/", {"file": upload}).status_code == 403


def test_work_horse_killed_is_retried_by_rq_and_resumes(operator, tenant, dovecot, dest_bucket, rclone,
                                                        worker_process):
    """Only the job's process dies (OOM killer): RQ retries the same job, which takes over at once."""
    import os
    import signal

    from tests.mailgen import generate_mailbox, write_maildir
    from tests.portal_fixtures import archive_digests, descendants, source_digests

    dovecot.add_user("dora", "dora-password")
    mailbox = generate_mailbox("flat", seed=11, count=320, folder="INBOX", size=80_000)
    write_maildir(dovecot, "dora", mailbox)
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, source_user="dora",
                                                            source_password="dora-password", file_name="dora"))
    worker = worker_process()
    wait_for(lambda: req.parts.count() >= 2, timeout=120, interval=0.05)
    for pid in descendants(worker.proc.pid):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: MigrationRequest.objects.get(pk=req.pk).is_final, timeout=120)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    assert req.attempts == 2 and req.result["resumed"] is True
    assert sorted(archive_digests(rclone.client(), dest_bucket.name, "mail/dora.zip")["INBOX"]) == \
        sorted(source_digests(mailbox)["INBOX"])
    assert no_pending_uploads(rclone.client(), dest_bucket.name)


def test_a_transition_hook_hears_each_state_change_once_it_is_committed(tenant, dest_bucket):
    from requests_app import lifecycle

    heard = []
    lifecycle.ON_TRANSITION.append(heard.append)
    try:
        req = MigrationRequest.objects.create(tenant=tenant, request_type="IMAP-S3-ZIP", bucket=dest_bucket,
                                              file_name="hooked", source_user="ann@acme.test")
        token = lifecycle.claim(req.pk)
        assert lifecycle.finish(req.pk, "a-run-that-lost-the-request", state="completed") is False
        assert lifecycle.finish(req.pk, token, state="failed", error="the source went away")
        lifecycle.retry(req.pk)
        lifecycle.cancel(req.pk)
    finally:
        lifecycle.ON_TRANSITION.remove(heard.append)
    assert [(t.request_id, t.before, t.after) for t in heard] == [
        (req.pk, "queued", "running"), (req.pk, "running", "failed"), (req.pk, "failed", "queued"),
        (req.pk, "queued", "cancelled")]
    assert heard[1].error == "the source went away"

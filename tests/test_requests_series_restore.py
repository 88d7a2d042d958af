"""Restore of an incremental series by its base name, end to end: three real backup runs of one
Dovecot mailbox (full, +new, +new) through the RQ worker into rclone's S3, then S3-IMAP-ZIP /
S3-IMAP-PST by ``PREFIX/FILE`` into an empty mailbox, read back with a plain imapclient session."""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections import Counter

import pytest

from buckets.models import Bucket
from requests_app.forms import RestoreForm
from requests_app.models import ArchiveRecord
from requests_app.types import get_type
from tests.portal_fixtures import imap_form, run_worker_burst, submit
from tests.test_requests_restore import (
    login,
    mailbox_contents,
    new_user,
    restore,
    restore_form,
)

pytestmark = pytest.mark.django_db(transaction=True)



@pytest.fixture
def both_bucket(tenant, rclone, s3_bucket):
    """A bucket backups write into and restores read from (purpose both)."""
    return Bucket.objects.create(
        tenant=tenant, name=s3_bucket, region="us-east-1", endpoint_url=rclone.url, purpose="both",
        auth_mode="keys", access_key_id=rclone.access_key, secret_access_key=rclone.secret_key, status="verified")


KEPT = {"\\Seen", "\\Flagged", "\\Answered"}


def noise(size: int) -> str:
    """``size`` bytes of base64 lines that do not deflate much (so a run's archive splits)."""
    text = base64.b64encode(os.urandom(size * 3 // 4)).decode()
    return "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))


def add_messages(server, user, password, run: int, count: int, *, body_bytes: int = 200) -> None:
    """``count`` new messages in INBOX and Work, with flags and internal dates of their own."""
    with login(server, user, password) as client:
        if not client.folder_exists("Work"):
            client.create_folder("Work")
        for n in range(count):
            folder = "INBOX" if n % 2 == 0 else "Work"
            flags = [(), ("\\Seen",), ("\\Seen", "\\Flagged"), ("\\Answered",)][n % 4]
            when = dt.datetime(2025, 1 + run, 1 + n, 9, 30, tzinfo=dt.UTC)
            raw = (f"Message-ID: <series-{run}-{n}@example.com>\r\nFrom: a@example.com\r\n"
                   f"Subject: run {run} message {n}\r\nDate: {when:%a, %d %b %Y %H:%M:%S +0000}\r\n\r\n"
                   + f"body {run}/{n}\r\n" + noise(body_bytes) + "\r\n").encode()
            client.append(folder, raw, flags=flags, msg_time=when)


def comparable(contents) -> dict[str, list]:
    return {folder: sorted((m["sha"], round(m["date"].timestamp()), tuple(sorted(m["flags"] & KEPT))) for m in msgs)
            for folder, msgs in contents.items() if msgs}


def run_series(server, tenant, operator, bucket, queue, code: str, file_name: str, user: str, password: str,
               *, big_second_run: bool = False) -> list:
    form = imap_form(server, bucket, file_name=file_name, incremental="yes", source_user=user,
                     source_password=password)
    runs = []
    for run, count in ((1, 6), (2, 4), (3, 3)):
        add_messages(server, user, password, run, count, body_bytes=40_000 if big_second_run and run == 2 else 200)
        req = submit(tenant, operator, code, form)
        run_worker_burst(queue)
        req.refresh_from_db()
        assert req.state == "completed", req.error
        assert req.result["series"]["new"] == count
        runs.append(req)
    return runs


def test_a_zip_series_restores_from_its_base_name_every_message_once(operator, tenant, dovecot, imap_ca,
                                                                     both_bucket, rclone, rq_queue, settings,
                                                                     client_for):
    settings.LEGACYFLO_ZIP_SPLIT_BYTES = 60_000  # run 2 (~100 KB) is split into volumes
    source, source_pw = new_user(dovecot, "series-src")
    (user, password), (single, single_pw), (broken_user, broken_pw) = (new_user(dovecot) for _ in range(3))
    runs = run_series(dovecot, tenant, operator, both_bucket, rq_queue, "IMAP-S3-ZIP", "series-zip",
                      source, source_pw, big_second_run=True)
    run_keys = [[a["key"] for a in r.result["archives"]] for r in runs]
    assert run_keys[0] == ["mail/series-zip.zip"] and run_keys[2] == ["mail/series-zip.r0003.zip"]
    assert len(run_keys[1]) >= 2 and all(".r0002.part" in k for k in run_keys[1])
    expected = comparable(mailbox_contents(dovecot, source, source_pw))
    total = sum(len(v) for v in expected.values())
    assert total == 13

    req = restore(tenant, operator, rq_queue, restore_form(dovecot, both_bucket, user, password,
                                                           archive_key="mail/series-zip"))
    assert req.state == "completed", req.error
    assert [a["key"] for a in req.result["archives"]] == [k for keys in run_keys for k in keys]  # run order
    assert comparable(mailbox_contents(dovecot, user, password)) == expected  # byte-identical, flags, dates
    assert req.messages_done == total and req.messages_failed == req.messages_skipped == 0
    ids = list(ArchiveRecord.objects.filter(request=req, kind="message").values_list("source_id", flat=True))
    assert len(ids) == total and not [i for i, n in Counter(ids).items() if n > 1]  # each entry once

    again = restore(tenant, operator, rq_queue, restore_form(dovecot, both_bucket, user, password,
                                                             archive_key="mail/series-zip"))
    assert again.state == "completed", again.error
    assert comparable(mailbox_contents(dovecot, user, password)) == expected  # nothing added
    assert again.messages_skipped == total and again.messages_done == again.messages_failed == 0

    # "Restore..." from a run: its own key, and the help text names the series' base name.
    page = client_for(operator).get(f"/t/{tenant.slug}/requests/new/S3-IMAP-ZIP/?from={runs[2].uuid}")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'value="mail/series-zip.r0003.zip"' in html
    assert "incremental series: mail/series-zip restores every run" in html

    # One run alone, by its own key: only what that run archived.
    one = restore(tenant, operator, rq_queue, restore_form(dovecot, both_bucket, single, single_pw,
                                                           archive_key="mail/series-zip.r0003.zip"))
    assert one.state == "completed", one.error
    assert sum(len(v) for v in mailbox_contents(dovecot, single, single_pw).values()) == 3

    # A run missing a volume: a clear error of the form, before anything is restored.
    rclone.client().delete_object(Bucket=both_bucket.name, Key=run_keys[1][1])
    form = RestoreForm(restore_form(dovecot, both_bucket, broken_user, broken_pw, archive_key="mail/series-zip"),
                       rtype=get_type("S3-IMAP-ZIP"), tenant=tenant)
    assert not form.is_valid()
    assert "run 2 of the series mail/series-zip) misses volume(s) part002" in " ".join(form.errors["archive_key"])
    assert mailbox_contents(dovecot, broken_user, broken_pw) == {"INBOX": []}


def test_a_pst_series_restores_from_its_base_name_every_message_once(operator, tenant, dovecot, imap_ca,
                                                                     both_bucket, rclone, rq_queue):
    source, source_pw = new_user(dovecot, "series-pst")
    user, password = new_user(dovecot)
    runs = run_series(dovecot, tenant, operator, both_bucket, rq_queue, "IMAP-S3-PST", "series-pst",
                      source, source_pw)
    assert [[a["key"] for a in r.result["archives"]] for r in runs] == [
        ["mail/series-pst.pst"], ["mail/series-pst.r0002.pst"], ["mail/series-pst.r0003.pst"]]
    want = {folder: sorted(tuple(sorted(m["flags"] & {"\\Seen", "\\Flagged"})) for m in msgs)
            for folder, msgs in mailbox_contents(dovecot, source, source_pw).items() if msgs}

    data = restore_form(dovecot, both_bucket, user, password, archive_key="mail/series-pst")
    req = restore(tenant, operator, rq_queue, data, code="S3-IMAP-PST")
    assert req.state == "completed", req.error
    assert req.messages_done == 13 and req.messages_failed == 0
    with login(dovecot, user, password) as client:
        got: dict[str, list] = {}
        for folder in ("INBOX", "Work"):
            client.select_folder(folder, readonly=True)
            fetched = client.fetch(client.search(), ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
            got[folder] = sorted(m[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split(":", 1)[1].strip()
                                 for m in fetched.values())
    assert got == {"INBOX": sorted(f"<series-{r}-{n}@example.com>" for r, c in ((1, 6), (2, 4), (3, 3))
                                   for n in range(c) if n % 2 == 0),
                   "Work": sorted(f"<series-{r}-{n}@example.com>" for r, c in ((1, 6), (2, 4), (3, 3))
                                  for n in range(c) if n % 2 == 1)}
    restored = {folder: sorted(tuple(sorted(m["flags"] & {"\\Seen", "\\Flagged"})) for m in msgs)
                for folder, msgs in mailbox_contents(dovecot, user, password).items() if msgs}
    assert restored == want

    again = restore(tenant, operator, rq_queue, data, code="S3-IMAP-PST")
    assert again.state == "completed", again.error
    assert again.messages_skipped == 13 and again.messages_done == 0

"""Restore end to end: a real backup (Dovecot → worker → ZIP in rclone's S3), then S3-IMAP-ZIP /
S3-MITHI-ZIP requests through the real RQ worker back into Dovecot mailboxes, read back with a
plain imapclient session (independent of the code under test)."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from collections import Counter

import pytest
from imapclient import IMAPClient

from buckets.models import Bucket
from requests_app.models import ArchiveRecord, MigrationRequest
from tests.portal_fixtures import (
    MAILBOX_PASSWORD,
    imap_form,
    run_worker_burst,
    source_digests,
    submit,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)
_users = itertools.count(1)


@pytest.fixture
def both_bucket(tenant, rclone, s3_bucket):
    """A bucket backups write into and restores read from (purpose both)."""
    return Bucket.objects.create(
        tenant=tenant, name=s3_bucket, region="us-east-1", endpoint_url=rclone.url, purpose="both",
        auth_mode="keys", access_key_id=rclone.access_key, secret_access_key=rclone.secret_key, status="verified")


def backup_of(server, tenant, operator, bucket, queue, *, code="IMAP-S3-ZIP", file_name="alice-src", **form):
    if server.ssl:
        form.setdefault("source_port", server.ssl_port)
    else:
        form.update(source_port=server.port, source_security="none")
    req = submit(tenant, operator, code, imap_form(server, bucket, file_name=file_name, **form))
    run_worker_burst(queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    return req


def new_user(server, stem="target") -> tuple[str, str]:
    user, password = f"{stem}{next(_users)}", "target-password"
    server.add_user(user, password)
    return user, password


def restore_form(server, bucket, user, password, archive_key="mail/alice-src.zip", **overrides) -> dict:
    data = {"bucket": str(bucket.uuid), "archive_key": archive_key, "target_server": "127.0.0.1",
            "target_port": server.ssl_port if server.ssl else server.port,
            "target_security": "ssl" if server.ssl else "none", "target_user": user, "target_password": password}
    data.update(overrides)
    return data


def login(server, user, password) -> IMAPClient:
    if server.ssl:
        client = IMAPClient("127.0.0.1", server.ssl_port, ssl=True, ssl_context=server.client_ssl_context())
    else:
        client = IMAPClient("127.0.0.1", server.port, ssl=False)
    client.login(user, password)
    client.normalise_times = False  # aware INTERNALDATEs
    return client


def logical(server, name: str) -> str:
    if server.layout == "mithi" and name.startswith("INBOX."):
        return name[len("INBOX."):].replace(".", "/")
    return name


def mailbox_contents(server, user, password) -> dict[str, list[dict]]:
    """Folder (logical path) → its messages: sha256 of the bytes, flags, internal date."""
    out: dict[str, list[dict]] = {}
    with login(server, user, password) as client:
        for flags, _sep, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            client.select_folder(name, readonly=True)
            ids = client.search()
            messages = client.fetch(ids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]) if ids else {}
            out[logical(server, name)] = [
                {"sha": hashlib.sha256(m[b"BODY[]"]).hexdigest(), "flags": {f.decode() for f in m[b"FLAGS"]},
                 "date": m[b"INTERNALDATE"]} for m in messages.values()]
    return out


def digests(contents) -> dict[str, list[str]]:
    return {folder: sorted(m["sha"] for m in msgs) for folder, msgs in contents.items() if msgs}


def expected_digests(mailbox) -> dict[str, list[str]]:
    return {folder: sorted(d) for folder, d in source_digests(mailbox).items()}


def restore(tenant, operator, queue, data, code="S3-IMAP-ZIP") -> MigrationRequest:
    req = submit(tenant, operator, code, data)
    run_worker_burst(queue)
    req.refresh_from_db()
    return req


def test_backup_then_restore_puts_every_message_back_byte_for_byte(operator, tenant, dovecot, imap_ca, both_bucket,
                                                                   rclone, rq_queue, client_for):
    backup_of(dovecot, tenant, operator, both_bucket, rq_queue)
    s3 = rclone.client()
    backup_report = s3.get_object(Bucket=both_bucket.name, Key="mail/alice-src.report.csv")["Body"].read()
    user, password = new_user(dovecot)
    req = restore(tenant, operator, rq_queue, restore_form(dovecot, both_bucket, user, password))
    assert req.state == "completed", req.error

    contents = mailbox_contents(dovecot, user, password)
    assert digests(contents) == expected_digests(dovecot.mailbox)
    total = sum(len(v) for v in source_digests(dovecot.mailbox).values())
    assert req.messages_done == total and req.messages_failed == req.messages_skipped == 0
    assert ArchiveRecord.objects.filter(request=req, status="exported").count() == total

    # Without recorded internal dates the archive's Date: header is the message's arrival date.
    by_sha = {m["sha"]: m for msgs in contents.values() for m in msgs}
    from email.utils import parsedate_to_datetime

    dated = 0
    for msg in dovecot.mailbox.messages():
        header = next((line for line in msg.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                       if line.lower().startswith(b"date:")), None)
        if header is None:
            continue
        try:
            when = parsedate_to_datetime(header[5:].decode().strip())
        except (TypeError, ValueError):
            continue
        if when.tzinfo is None:
            continue
        got = by_sha[hashlib.sha256(msg.raw).hexdigest()]["date"]
        assert abs(got.timestamp() - when.timestamp()) < 1, (msg.folder, got, when)
        dated += 1
    assert dated > 0

    # Its own report beside the archive; the backup's is untouched.
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=both_bucket.name)["Contents"]}
    report_key = f"mail/{req.file_name}.report.csv"
    assert req.file_name.startswith("alice-src.restore-")
    assert {report_key, f"mail/{req.file_name}.summary.json"} <= keys
    assert s3.get_object(Bucket=both_bucket.name, Key="mail/alice-src.report.csv")["Body"].read() == backup_report
    rows = list(csv.DictReader(io.StringIO(
        s3.get_object(Bucket=both_bucket.name, Key=report_key)["Body"].read().decode("utf-8-sig"))))
    assert len(rows) == total and {r["status"] for r in rows} == {"restored"}
    summary = json.loads(s3.get_object(Bucket=both_bucket.name, Key=f"mail/{req.file_name}.summary.json")["Body"].read())
    assert summary["reconciled"] is True and summary["direction"] == "restore"
    assert {f["folder"]: f["source_count"] for f in summary["folders"]} == {
        folder: len(d) for folder, d in source_digests(dovecot.mailbox).items()}

    # The portal's report page and download work for a restore.
    client = client_for(operator)
    page = client.get(f"/t/{tenant.slug}/requests/{req.uuid}/report/").content.decode()
    assert 'id="reconciled"' in page and "Restored" in page
    portal_rows = list(csv.DictReader(io.StringIO(b"".join(client.get(
        f"/t/{tenant.slug}/requests/{req.uuid}/report.csv").streaming_content).decode("utf-8-sig"))))
    assert len(portal_rows) == total and {r["status"] for r in portal_rows} == {"restored"}


def test_the_same_restore_twice_adds_nothing(operator, tenant, dovecot, imap_ca, both_bucket, rclone, rq_queue):
    backup_of(dovecot, tenant, operator, both_bucket, rq_queue)
    user, password = new_user(dovecot)
    first = restore(tenant, operator, rq_queue, restore_form(dovecot, both_bucket, user, password))
    assert first.state == "completed", first.error
    before = mailbox_contents(dovecot, user, password)
    second = restore(tenant, operator, rq_queue, restore_form(dovecot, both_bucket, user, password))
    assert second.state == "completed", second.error
    assert mailbox_contents(dovecot, user, password) == before
    total = sum(len(v) for v in source_digests(dovecot.mailbox).values())
    assert second.messages_skipped == total and second.messages_failed == 0
    assert set(ArchiveRecord.objects.filter(request=second).values_list("status", flat=True)) == {"skipped"}


def test_a_folder_already_holding_some_messages_gets_only_the_others(operator, tenant, dovecot, imap_ca,
                                                                     both_bucket, rclone, rq_queue):
    backup_of(dovecot, tenant, operator, both_bucket, rq_queue)
    user, password = new_user(dovecot)
    inbox = [m for m in dovecot.mailbox.messages() if m.folder == "INBOX"]
    present = inbox[: len(inbox) // 2]
    with login(dovecot, user, password) as client:
        for msg in present:
            client.append("INBOX", msg.raw)
    req = restore(tenant, operator, rq_queue, restore_form(dovecot, both_bucket, user, password))
    assert req.state == "completed", req.error
    assert digests(mailbox_contents(dovecot, user, password)) == expected_digests(dovecot.mailbox)
    assert req.messages_skipped == len(present)
    skipped = ArchiveRecord.objects.filter(request=req, status="skipped")
    assert set(skipped.values_list("folder", flat=True)) == {"INBOX"}
    assert Counter(skipped.values_list("sha256", flat=True)) == Counter(
        hashlib.sha256(m.raw).hexdigest() for m in present)


def test_target_folder_and_a_selection_restore_under_one_folder(operator, tenant, dovecot, imap_ca, both_bucket,
                                                                rclone, rq_queue):
    backup_of(dovecot, tenant, operator, both_bucket, rq_queue)
    user, password = new_user(dovecot)
    req = restore(tenant, operator, rq_queue, restore_form(
        dovecot, both_bucket, user, password, target_folder="Restored/2026-12-01", exclude_folders="INBOX"))
    assert req.state == "completed", req.error
    expected = {f"Restored/2026-12-01/{folder}": d for folder, d in expected_digests(dovecot.mailbox).items()
                if folder != "INBOX" and not folder.startswith("INBOX/")}
    assert digests(mailbox_contents(dovecot, user, password)) == expected


def test_a_restore_cannot_start_from_another_tenants_backup(operator, outsider, tenant, other_tenant, dovecot,
                                                            imap_ca, both_bucket, rclone, rq_queue, client_for):
    backup = backup_of(dovecot, tenant, operator, both_bucket, rq_queue)
    own = client_for(operator).get(f"/t/{tenant.slug}/requests/new/S3-IMAP-ZIP/?from={backup.uuid}")
    assert own.status_code == 200 and "mail/alice-src.zip" in own.content.decode()
    assert MAILBOX_PASSWORD not in own.content.decode()
    theirs = client_for(outsider).get(f"/t/{other_tenant.slug}/requests/new/S3-IMAP-ZIP/?from={backup.uuid}")
    assert theirs.status_code == 404


@pytest.fixture(scope="module", params=["fs", "mithi"], ids=["slash-separator", "dot-separator-INBOX-prefix"])
def layout_dovecot(request):
    """Dovecot with '/' and no prefix, or with '.' and the INBOX. prefix (Mithi's shape)."""
    from tests.mailgen import generate_mailbox, write_maildir
    from tests.servers.dovecot import DovecotServer

    with DovecotServer({"alice": MAILBOX_PASSWORD}, layout=request.param) as server:
        server.mailbox = generate_mailbox("test", seed=11)
        write_maildir(server, "alice", server.mailbox)
        yield server


def test_a_restore_creates_folders_with_the_targets_separator_and_prefix(operator, tenant, layout_dovecot,
                                                                        both_bucket, rclone, rq_queue):
    server = layout_dovecot
    mithi = server.layout == "mithi"
    backup_of(server, tenant, operator, both_bucket, rq_queue, code="MITHI-S3-ZIP" if mithi else "IMAP-S3-ZIP")
    user, password = new_user(server)
    req = restore(tenant, operator, rq_queue, restore_form(server, both_bucket, user, password),
                  code="S3-MITHI-ZIP" if mithi else "S3-IMAP-ZIP")
    assert req.state == "completed", req.error
    expected = expected_digests(server.mailbox)
    mapping = req.result["summary"]["folder_mapping"]
    expected = {logical(server, mapping[f]) if f in mapping else f: d for f, d in expected.items()}
    assert digests(mailbox_contents(server, user, password)) == expected
    with login(server, user, password) as client:
        names = {name for _f, _d, name in client.list_folders()}
    deep = next(f for f in expected if f.count("/") >= 2)
    assert (("INBOX." + deep.replace("/", ".")) if mithi else deep) in names


def test_a_message_over_the_servers_appendlimit_is_reported_and_the_rest_restored(operator, tenant, both_bucket,
                                                                                  rclone, rq_queue):
    from tests.mailgen import generate_mailbox, write_maildir
    from tests.servers.dovecot import DovecotServer

    limit = 20_000
    config = ("mail_plugins = $mail_plugins quota\nplugin {\n  quota = count:User quota\n  quota_vsizes = yes\n"
              f"  quota_max_mail_size = {limit}\n}}\nimap_capability = +APPENDLIMIT={limit}\n")
    with DovecotServer({"alice": MAILBOX_PASSWORD}, extra_config=config) as server:
        small = generate_mailbox("flat", seed=5, count=5, size=2000, folder="INBOX")
        big = generate_mailbox("flat", seed=6, count=1, size=40_000, folder="Big")
        write_maildir(server, "alice", small)
        write_maildir(server, "alice", big)
        backup_of(server, tenant, operator, both_bucket, rq_queue, file_name="alice-src")
        user, password = new_user(server)
        req = restore(tenant, operator, rq_queue, restore_form(server, both_bucket, user, password))
        assert req.state == "completed_with_errors", req.error
        assert digests(mailbox_contents(server, user, password)).get("INBOX") == expected_digests(small)["INBOX"]
        assert not digests(mailbox_contents(server, user, password)).get("Big")
    failed = ArchiveRecord.objects.get(request=req, status="failed")
    assert failed.folder == "Big" and str(limit) in failed.error.replace(",", "")
    assert req.messages_failed == 1 and req.messages_done == 5
    big_row = next(f for f in req.result["folders"] if f["folder"] == "Big")
    assert (big_row["source_count"], big_row["failed"], big_row["exported"]) == (1, 1, 0)


def test_a_worker_killed_mid_restore_then_retried_restores_every_message_exactly_once(
        operator, tenant, dovecot, both_bucket, rclone, rq_queue, worker_process):
    from tests.mailgen import generate_mailbox, write_maildir

    dovecot.add_user("bulkr", "bulkr-password")
    bulk = generate_mailbox("flat", seed=13, count=600, folder="INBOX", size=30_000)
    write_maildir(dovecot, "bulkr", bulk)
    backup_of(dovecot, tenant, operator, both_bucket, rq_queue, source_user="bulkr", source_password="bulkr-password",
              file_name="bulkr")
    user, password = new_user(dovecot)
    req = submit(tenant, operator, "S3-IMAP-ZIP",
                 restore_form(dovecot, both_bucket, user, password, archive_key="mail/bulkr.zip"))
    first = worker_process()  # a subprocess worker takes the queued restore
    wait_for(lambda: ArchiveRecord.objects.filter(request=req).count() >= 100, timeout=120, interval=0.05)
    first.kill()
    req.refresh_from_db()
    assert req.state == "running"  # as the dead worker left it
    assert 0 < ArchiveRecord.objects.filter(request=req).count() < 600

    worker_process()  # recovery notices the stale heartbeat and re-queues; the run resumes
    wait_for(lambda: MigrationRequest.objects.get(pk=req.pk).is_final, timeout=240)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    assert req.attempts == 2 and req.result["resumed"] is True
    assert digests(mailbox_contents(dovecot, user, password)) == expected_digests(bulk)  # each exactly once
    assert ArchiveRecord.objects.filter(request=req).count() == 600


def _identities(raws) -> list[tuple[str, str]]:
    import email
    from email import policy

    out = []
    for raw in raws:
        msg = email.message_from_bytes(raw, policy=policy.default)
        # A raw 8-bit subject reads as U+FFFD from the original and decoded from the PST's
        # Unicode property: compare what both spell the same, its ASCII letters.
        subject = "".join(c for c in str(msg.get("Subject", "")).strip() if c.isascii())
        out.append((str(msg.get("Message-ID", "")).strip(), subject))
    return sorted(out)


def test_a_pst_backup_restores_content_identical_into_imap(operator, tenant, dovecot, imap_ca, both_bucket, rclone,
                                                           rq_queue):
    backup_of(dovecot, tenant, operator, both_bucket, rq_queue, code="IMAP-S3-PST", file_name="alice-pst")
    user, password = new_user(dovecot)
    req = restore(tenant, operator, rq_queue, restore_form(dovecot, both_bucket, user, password,
                                                           archive_key="mail/alice-pst"), code="S3-IMAP-PST")
    assert req.state == "completed", req.error
    expected: dict[str, list] = {}
    for msg in dovecot.mailbox.messages():
        expected.setdefault(msg.folder, []).append(msg.raw)
    with login(dovecot, user, password) as client:
        restored: dict[str, list] = {}
        for flags, _sep, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            client.select_folder(name, readonly=True)
            ids = client.search()
            restored[name] = [m[b"BODY[]"] for m in client.fetch(ids, ["BODY.PEEK[]"]).values()] if ids else []
    assert {f: _identities(r) for f, r in restored.items() if r} == {f: _identities(r) for f, r in expected.items()}
    # Restoring it again adds nothing: the rebuilt messages are found in the target.
    again = restore(tenant, operator, rq_queue, restore_form(dovecot, both_bucket, user, password,
                                                             archive_key="mail/alice-pst.pst"), code="S3-IMAP-PST")
    assert again.state == "completed", again.error
    assert again.messages_skipped == sum(len(v) for v in expected.values())


def test_a_read_only_source_bucket_gets_no_report_but_the_portal_serves_it(operator, tenant, dovecot, imap_ca,
                                                                          both_bucket, rclone, rq_queue, client_for):
    backup_of(dovecot, tenant, operator, both_bucket, rq_queue)
    Bucket.objects.filter(pk=both_bucket.pk).update(purpose="source")  # list and read access only
    s3 = rclone.client()
    before = {o["Key"] for o in s3.list_objects_v2(Bucket=both_bucket.name)["Contents"]}
    user, password = new_user(dovecot)
    req = restore(tenant, operator, rq_queue, restore_form(dovecot, both_bucket, user, password))
    assert req.state == "completed", req.error
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=both_bucket.name)["Contents"]} == before
    assert digests(mailbox_contents(dovecot, user, password)) == expected_digests(dovecot.mailbox)
    client = client_for(operator)
    rows = list(csv.DictReader(io.StringIO(b"".join(client.get(
        f"/t/{tenant.slug}/requests/{req.uuid}/report.csv").streaming_content).decode("utf-8-sig"))))
    assert len(rows) == sum(len(v) for v in source_digests(dovecot.mailbox).values())
    summary = client.get(f"/t/{tenant.slug}/requests/{req.uuid}/report.json").json()
    assert summary["reconciled"] is True and summary["totals"]["exported"] == len(rows)

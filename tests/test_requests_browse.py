""""Browse archive" on a real backup: Dovecot → worker → ZIP in rclone's S3, then the portal lists
its folders and messages from the archive's directory and serves one message as .eml."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from urllib.parse import quote

import pytest
from django.utils.html import escape

from tests.portal_fixtures import imap_form, run_worker_burst, source_digests, submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def backup(operator, tenant, dovecot, imap_ca, dest_bucket, rclone, rq_queue):
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="browse-me"))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    return req


def test_browse_lists_the_archives_folders_and_serves_one_message_byte_for_byte(backup, tenant, operator, dovecot,
                                                                               client_for):
    client = client_for(operator)
    base = f"/t/{tenant.slug}/requests/{backup.uuid}"
    detail = client.get(base + "/").content.decode()
    assert 'id="browse"' in detail and 'id="restore"' in detail

    page = client.get(base + "/browse/").content.decode()
    expected = {folder: len(d) for folder, d in source_digests(dovecot.mailbox).items()}
    for folder, count in expected.items():
        row = re.search(rf'<tr data-folder="{re.escape(escape(folder))}">.*?<td class="num">(\d+)</td>', page)
        assert row and int(row.group(1)) == count, folder

    folder = max(expected, key=expected.get)
    listing = client.get(base + "/browse/?folder=" + quote(folder)).content.decode()
    ids = [m.replace("&amp;", "&") for m in re.findall(r'browse/message\.eml\?id=([^"]+)"', listing)]
    assert len(ids) == expected[folder]
    digests = Counter()
    for entry in ids:
        response = client.get(base + "/browse/message.eml?id=" + entry)
        assert response.status_code == 200 and response["Content-Type"] == "message/rfc822"
        assert response["Content-Disposition"].startswith("attachment")
        digests[hashlib.sha256(b"".join(response.streaming_content)).hexdigest()] += 1
    assert digests == Counter(source_digests(dovecot.mailbox)[folder])


def test_an_id_outside_the_archive_is_not_found_and_a_viewer_cannot_download(backup, tenant, operator, viewer,
                                                                            dest_bucket, rclone, client_for):
    rclone.client().put_object(Bucket=dest_bucket.name, Key="mail/secret.eml", Body=b"Subject: other\r\n\r\nx")
    base = f"/t/{tenant.slug}/requests/{backup.uuid}/browse/message.eml?id="
    operator_client = client_for(operator)
    for entry in ("mail/secret.eml", "mail/browse-me.zip!../secret.eml", "mail/other.zip!INBOX/x.eml", ""):
        assert operator_client.get(base + quote(entry)).status_code == 404, entry
    listing = client_for(viewer).get(f"/t/{tenant.slug}/requests/{backup.uuid}/browse/?folder=INBOX").content.decode()
    assert "Download .eml" not in listing
    assert client_for(viewer).get(base + quote("mail/browse-me.zip!INBOX/000001_x.eml")).status_code == 403


def test_a_pst_archive_is_browsed_from_its_tables_and_a_message_comes_back_as_mime(operator, tenant, dovecot, imap_ca,
                                                                                  dest_bucket, rclone, rq_queue,
                                                                                  client_for):
    import email
    from email import policy

    req = submit(tenant, operator, "IMAP-S3-PST", imap_form(dovecot, dest_bucket, file_name="browse-pst"))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    client = client_for(operator)
    base = f"/t/{tenant.slug}/requests/{req.uuid}"
    page = client.get(base + "/browse/").content.decode()
    assert 'id="browse-error"' not in page, page
    expected = {folder: len(d) for folder, d in source_digests(dovecot.mailbox).items()}
    listing = client.get(base + "/browse/?folder=INBOX").content.decode()
    ids = [m.replace("&amp;", "&") for m in re.findall(r'browse/message\.eml\?id=([^"]+)"', listing)]
    assert len(ids) == expected["INBOX"]
    source_ids = {str(email.message_from_bytes(m.raw, policy=policy.default).get("Message-ID", "")).strip()
                  for m in dovecot.mailbox.messages() if m.folder == "INBOX"}
    response = client.get(base + "/browse/message.eml?id=" + ids[-1])
    assert response.status_code == 200
    rebuilt = email.message_from_bytes(b"".join(response.streaming_content), policy=policy.default)
    assert str(rebuilt.get("Message-ID", "")).strip() in source_ids

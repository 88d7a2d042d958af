"""DNS rebinding through every portal path that connects to a host a tenant typed: the IMAP
"Test connection" button, a worker run, bucket registration (web and ``manage.py
bucket_register``) and Verify — with private networks *not* allowed, as in production.

The scripted resolver answers a "public" address first (127.0.0.2, which ``treat_as_public``
makes the policy accept) and 127.0.0.1 next, where the internal Dovecot and rclone listen.
"""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from buckets.models import Bucket
from tests.fakes.dns import treat_as_public
from tests.mailgen import generate_mailbox, write_maildir
from tests.portal_fixtures import (
    MAILBOX_PASSWORD,
    MAILBOX_USER,
    archive_digests,
    imap_form,
    run_worker_burst,
    source_digests,
    submit,
)
from tests.servers.dovecot import DovecotServer
from tests.servers.faults import TcpFaultProxy

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC_MAILBOX = generate_mailbox("flat", count=3, folder="Public-only", seed=11)


@pytest.fixture
def production_policy(settings, monkeypatch):
    settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS = False
    treat_as_public(monkeypatch, "127.0.0.2", "127.0.0.3")


@pytest.fixture
def public_imap(dovecot):
    """The attacker's public IMAP server, on 127.0.0.2 at the internal Dovecot's port."""
    with DovecotServer({MAILBOX_USER: MAILBOX_PASSWORD}) as server:
        write_maildir(server, MAILBOX_USER, PUBLIC_MAILBOX)
        with TcpFaultProxy(server.port, host="127.0.0.2", port=dovecot.port) as proxy:
            yield proxy


@pytest.fixture
def public_bucket(tenant, rclone, s3_bucket):
    """A verified bucket whose endpoint (127.0.0.3, in front of rclone) the policy accepts."""
    port = int(rclone.url.rsplit(":", 1)[1])
    with TcpFaultProxy(port, host="127.0.0.3") as proxy:
        yield Bucket.objects.create(
            tenant=tenant, name=s3_bucket, region="us-east-1", endpoint_url=f"http://127.0.0.3:{proxy.port}",
            purpose="destination", auth_mode="keys", access_key_id=rclone.access_key,
            secret_access_key=rclone.secret_key, status="verified")


def test_test_connection_lists_the_checked_server_and_never_the_internal_one(
        operator, tenant, dovecot, public_imap, dest_bucket, resolver, production_policy, client_for):
    resolver.script("imap.rebind.test", ["127.0.0.2"], ["127.0.0.1"])
    client = client_for(operator)
    data = imap_form(dovecot, dest_bucket, source_server="imap.rebind.test", source_port=dovecot.port,
                     source_security="none")
    first = client.post(f"/t/{tenant.slug}/requests/new/IMAP-S3-ZIP/test/", data).content.decode()
    assert 'data-test="ok"' in first and "Public-only" in first
    assert "Projekte" not in first and "Sent" not in first  # the internal mailbox's folders
    second = client.post(f"/t/{tenant.slug}/requests/new/IMAP-S3-ZIP/test/", data).content.decode()
    assert 'data-test="fail"' in second and "internal address 127.0.0.1" in second
    assert len(public_imap.connections) == 1


def test_a_worker_run_backs_up_the_checked_server_and_never_the_internal_one(
        operator, tenant, dovecot, public_imap, public_bucket, rclone, rq_queue, resolver, production_policy):
    resolver.script("imap.rebind.test", ["127.0.0.2"], ["127.0.0.1"])
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(
        dovecot, public_bucket, source_server="imap.rebind.test", source_port=dovecot.port,
        source_security="none"))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    archive = archive_digests(rclone.client(), public_bucket.name, "mail/alice-backup.zip")
    assert {folder: sorted(d) for folder, d in archive.items()} == {
        folder: sorted(d) for folder, d in source_digests(PUBLIC_MAILBOX).items()}
    internal = {d for digests in source_digests(dovecot.mailbox).values() for d in digests}
    assert not internal & {d for digests in archive.values() for d in digests}


def test_bucket_registration_and_verify_never_reach_an_internal_endpoint(
        admin, tenant, rclone, s3_bucket, resolver, production_policy, client_for):
    port = int(rclone.url.rsplit(":", 1)[1])
    endpoint = f"http://s3.rebind.test:{port}"
    resolver.script("s3.rebind.test", ["127.0.0.2"], ["127.0.0.2"], ["127.0.0.1"])
    client = client_for(admin)
    response = client.post(f"/t/{tenant.slug}/buckets/register/", {
        "name": s3_bucket, "region": "us-east-1", "endpoint_url": endpoint, "purpose": "destination",
        "auth_mode": "keys", "access_key_id": rclone.access_key, "secret_access_key": rclone.secret_key,
    }, follow=True)
    assert response.status_code == 200
    bucket = Bucket.objects.get(tenant=tenant, name=s3_bucket)
    location = next(c for c in bucket.checks if c["key"] == "location")
    assert bucket.status == "failed" and location["status"] == "fail"
    assert "internal address 127.0.0.1" in location["message"]

    resolver.script("s3.rebind.test", ["127.0.0.2"], ["127.0.0.2"], ["127.0.0.1"])  # the Verify button, from scratch
    client.post(f"/t/{tenant.slug}/buckets/{bucket.uuid}/verify/")
    bucket.refresh_from_db()
    assert bucket.status == "failed"
    assert "internal address 127.0.0.1" in next(c for c in bucket.checks if c["key"] == "location")["message"]


def test_bucket_register_command_never_reaches_an_internal_endpoint(
        tenant, rclone, s3_bucket, resolver, production_policy, monkeypatch, capsys):
    port = int(rclone.url.rsplit(":", 1)[1])
    resolver.script("s3.rebind.test", ["127.0.0.2"], ["127.0.0.2"], ["127.0.0.1"])
    monkeypatch.setenv("TEST_S3_SECRET", rclone.secret_key)
    with pytest.raises(CommandError, match="failed verification"):
        call_command("bucket_register", "--tenant", tenant.slug, "--name", s3_bucket, "--region", "us-east-1",
                     "--endpoint-url", f"http://s3.rebind.test:{port}", "--access-key-id", rclone.access_key,
                     "--secret-access-key-env", "TEST_S3_SECRET")
    out = capsys.readouterr().out
    assert "[FAIL] Bucket location" in out and "internal address 127.0.0.1" in out

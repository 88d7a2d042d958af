"""Bucket registration and verification against real S3 servers (rclone's and moto's)."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from accounts.models import AuditEvent
from buckets.models import Bucket
from buckets.policy import policies_for
from buckets.rules import bucket_name_problem, region_problem
from buckets.verification import verify_bucket
from connectors.model import ConnectionFailed
from connectors.storage.s3.client import make_client
from connectors.storage.s3.target import S3Target
from tests.fakes.httpserver import Response, ServerThread


def statuses(checks):
    return {c.key: c.status for c in checks}


@pytest.mark.parametrize("name,ok", [
    ("acme-mail-backups", True), ("a.b.c", True), ("ab", False), ("Acme", False), ("acme_mail", False),
    ("-acme", False), ("acme..mail", False), ("192.168.1.1", False), ("xn--acme", False), ("acme-s3alias", False),
    ("a" * 64, False),
])
def test_bucket_name_rules(name, ok):
    assert (bucket_name_problem(name) is None) == ok


def test_region_rules():
    assert region_problem("eu-west-1", has_endpoint=False) is None
    assert "not an AWS region" in region_problem("eu-west-9", has_endpoint=False)
    assert region_problem("garage-local", has_endpoint=True) is None


def test_verification_passes_on_rclone(rclone, s3_bucket):
    target = S3Target(s3_bucket, "us-east-1", rclone.url, rclone.access_key, rclone.secret_key)
    checks = verify_bucket(target, purpose_write=True, purpose_read=True, allow_private=True)
    result = statuses(checks)
    assert result["name"] == result["region"] == result["location"] == result["list"] == result["write"] == "pass"
    assert result["read"] == "skip"  # empty bucket: reading can't be proven yet
    assert rclone.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0  # probe cleaned up
    rclone.client().put_object(Bucket=s3_bucket, Key="archive/old.zip", Body=b"PK")
    assert statuses(verify_bucket(target, purpose_write=False, purpose_read=True, allow_private=True))["read"] == "pass"


def test_wrong_keys_are_refused(rclone, s3_bucket):
    target = S3Target(s3_bucket, "us-east-1", rclone.url, rclone.access_key, "not-the-secret-0123456789")
    checks = verify_bucket(target, purpose_write=True, purpose_read=False, allow_private=True)
    failed = [c for c in checks if c.status == "fail"]
    assert failed and "credentials" in failed[0].message.lower() or "refused" in failed[0].message.lower()


def test_region_mismatch_names_the_actual_region(moto):
    moto.client().create_bucket(Bucket="acme-eu-archive", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    target = S3Target("acme-eu-archive", "us-east-2", moto.url, moto.access_key, moto.secret_key)
    checks = verify_bucket(target, purpose_write=True, purpose_read=False, allow_private=True)
    location = next(c for c in checks if c.key == "location")
    assert location.status == "fail"
    assert "eu-west-1" in location.message and "eu-west-1" in location.fix
    assert "write" not in statuses(checks)  # nothing written to a bucket we may not use


def test_missing_bucket(moto):
    target = S3Target("acme-does-not-exist", "us-east-1", moto.url, moto.access_key, moto.secret_key)
    location = next(c for c in verify_bucket(target, purpose_write=True, purpose_read=False, allow_private=True)
                    if c.key == "location")
    assert location.status == "fail" and "no bucket named" in location.message


def test_public_bucket_and_missing_encryption_are_flagged(moto):
    s3 = moto.client("eu-central-1")
    s3.create_bucket(Bucket="acme-public", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    s3.put_bucket_policy(Bucket="acme-public", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::acme-public/*"}]}))
    target = S3Target("acme-public", "eu-central-1", moto.url, moto.access_key, moto.secret_key)
    checks = {c.key: c for c in verify_bucket(target, purpose_write=True, purpose_read=False, allow_private=True)}
    assert checks["location"].status == "pass" and checks["write"].status == "pass"
    assert checks["public"].status == "warn" and "public" in checks["public"].message

    s3.create_bucket(Bucket="acme-private", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    s3.put_public_access_block(Bucket="acme-private", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    s3.put_bucket_encryption(Bucket="acme-private", ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})
    target = S3Target("acme-private", "eu-central-1", moto.url, moto.access_key, moto.secret_key)
    checks = {c.key: c for c in verify_bucket(target, purpose_write=True, purpose_read=False, allow_private=True)}
    assert checks["public"].status == "pass"
    assert checks["encryption"].status == "pass" and "aws:kms" in checks["encryption"].message


def test_a_target_without_keys_never_falls_back_to_the_portals_own_credentials(moto, monkeypatch):
    """Neither keys nor a role: refused, never signed by boto3's default chain (the portal's own identity),
    as targets of the old "portal's own credentials" mode were."""
    moto.client().create_bucket(Bucket="acme-no-keys")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.access_key)  # the portal's identity, ready to be (mis)used
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.secret_key)
    target = S3Target("acme-no-keys", "us-east-1", moto.url)
    with pytest.raises(ConnectionFailed, match="no access key pair"):
        make_client(target, allow_private=True)
    checks = verify_bucket(target, purpose_write=True, purpose_read=False, allow_private=True)
    assert statuses(checks)["credentials"] == "fail" and "write" not in statuses(checks)


def test_private_endpoints_refused_unless_allowed(rclone, s3_bucket):
    target = S3Target(s3_bucket, "us-east-1", rclone.url, rclone.access_key, rclone.secret_key)
    checks = verify_bucket(target, purpose_write=True, purpose_read=False, allow_private=False)
    assert statuses(checks)["endpoint"] == "fail"
    assert "LEGACYFLO_ALLOW_PRIVATE_NETWORKS" in next(c.message for c in checks if c.key == "endpoint")
    assert "location" not in statuses(checks)  # no connection was attempted


def test_policy_documents():
    items = dict(policies_for("acme-mail", purpose="destination", uses_role=True,
                              role_arn="arn:aws:iam::111122223333:role/legacyflo-backups",
                              principal="arn:aws:iam::123456789012:role/legacyflo", external_id="legacyflo-abc"))
    trust = json.loads(next(v for k, v in items.items() if k.startswith("Trust policy")))
    assert trust["Statement"] == [{
        "Sid": "LegacyFloAssumeRole", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/legacyflo"},
        "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": "legacyflo-abc"}}}]
    write = json.loads(next(v for k, v in items.items() if "read and write" in k or "— write" in k))
    actions = {a for s in write["Statement"] for a in s["Action"]}
    assert {"s3:PutObject", "s3:AbortMultipartUpload", "s3:ListBucket"} <= actions
    assert all("Principal" not in s for s in write["Statement"])  # nothing is granted to the portal itself
    kms = json.loads(next(v for k, v in items.items() if "KMS" in k))
    assert kms["Principal"] == {"AWS": "arn:aws:iam::111122223333:role/legacyflo-backups"}  # the role signs
    keys = dict(policies_for("acme-mail", purpose="source"))
    assert not any(k.startswith("Trust policy") for k in keys)
    read = json.loads(next(iter(keys.values())))
    assert all("Principal" not in s for s in read["Statement"])
    assert {a for s in read["Statement"] for a in s["Action"]} == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject"}


@pytest.mark.django_db
def test_register_view_shows_checks(client_for, admin, tenant, rclone, s3_bucket):
    client = client_for(admin)
    response = client.post(f"/t/{tenant.slug}/buckets/register/", {
        "name": s3_bucket, "region": "us-east-1", "endpoint_url": rclone.url, "purpose": "destination",
        "auth_mode": "keys", "access_key_id": rclone.access_key, "secret_access_key": rclone.secret_key,
    }, follow=True)
    page = response.content.decode()
    bucket = Bucket.objects.get(tenant=tenant, name=s3_bucket)
    assert bucket.status == "verified" and bucket.created_by == admin
    assert 'data-check="write"' in page and "badge-pass" in page
    assert "LegacyFloWriteObjects" in page  # the policy to paste
    assert AuditEvent.objects.filter(tenant=tenant, action="bucket.register", target=s3_bucket).exists()


@pytest.mark.django_db
def test_register_view_rejects_bad_input(client_for, admin, tenant):
    client = client_for(admin)
    response = client.post(f"/t/{tenant.slug}/buckets/register/", {
        "name": "Bad_Bucket", "region": "mars-1", "purpose": "destination", "auth_mode": "keys"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "lowercase letters" in page and "not an AWS region" in page and "Enter the secret access key" in page
    assert not Bucket.objects.exists()


@pytest.mark.django_db
def test_bucket_register_command(tenant, rclone, s3_bucket, moto, monkeypatch, capsys):
    monkeypatch.setenv("TEST_S3_SECRET", rclone.secret_key)
    call_command("bucket_register", "--tenant", tenant.slug, "--name", s3_bucket, "--region", "us-east-1",
                 "--endpoint-url", rclone.url, "--access-key-id", rclone.access_key,
                 "--secret-access-key-env", "TEST_S3_SECRET")
    out = capsys.readouterr().out
    assert "[PASS] Write probe" in out and "verified" in out
    assert rclone.secret_key not in out

    moto.client().create_bucket(Bucket="acme-cli-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    monkeypatch.setenv("MOTO_SECRET", moto.secret_key)
    with pytest.raises(CommandError, match="failed verification"):
        call_command("bucket_register", "--tenant", tenant.slug, "--name", "acme-cli-eu", "--region", "us-east-1",
                     "--endpoint-url", moto.url, "--access-key-id", moto.access_key,
                     "--secret-access-key-env", "MOTO_SECRET")
    assert "is in eu-west-1, not in us-east-1" in capsys.readouterr().out
    with pytest.raises(CommandError, match="No tenant"):
        call_command("bucket_register", "--tenant", "nope", "--name", "x-y-z", "--region", "us-east-1")


class NotS3:
    """An endpoint that answers every request with the same status and a body that is no S3 XML."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body

    def handle(self, request) -> Response:
        return Response(self.status, self.body, {"Content-Type": "text/html"})


NOT_S3_ANSWERS = [(200, b""), (200, b"hello, not xml"), (403, b""), (500, b"<html><body>Bad gateway"),
                  (404, b"\x00\xff\xfe garbage")]


@pytest.fixture(params=NOT_S3_ANSWERS, ids=lambda a: f"{a[0]}-{len(a[1])}-bytes")
def not_s3(request):
    server = ServerThread(NotS3(*request.param)).start()
    yield server
    server.stop()


@pytest.mark.django_db
def test_an_endpoint_that_answers_no_s3_xml_gives_a_failed_check_on_the_web(client_for, admin, tenant, not_s3):
    client = client_for(admin)
    response = client.post(f"/t/{tenant.slug}/buckets/register/", {
        "name": "acme-not-s3", "region": "us-east-1", "endpoint_url": not_s3.url, "purpose": "destination",
        "auth_mode": "keys", "access_key_id": "AKIAEXAMPLEKEY000001", "secret_access_key": "example-secret-0123456789",
    }, follow=True)
    assert response.status_code == 200
    bucket = Bucket.objects.get(tenant=tenant, name="acme-not-s3")  # registered with its checks, never half
    failed = [c for c in bucket.checks if c["status"] == "fail"]
    assert bucket.status == "failed" and bucket.verified_at is not None
    assert failed and "not an S3 response" in failed[0]["message"] and failed[0]["fix"]
    assert "not an S3 response" in response.content.decode()
    assert AuditEvent.objects.filter(tenant=tenant, action="bucket.verify", target="acme-not-s3").count() == 1

    response = client.post(f"/t/{tenant.slug}/buckets/{bucket.uuid}/verify/", follow=True)
    assert response.status_code == 200 and "failed verification" in response.content.decode()
    bucket.refresh_from_db()
    assert bucket.status == "failed" and "not an S3 response" in bucket.checks[-1]["message"]


@pytest.mark.django_db
def test_an_endpoint_that_answers_no_s3_xml_fails_bucket_register_with_the_reason(tenant, not_s3, monkeypatch,
                                                                                 capsys):
    monkeypatch.setenv("TEST_S3_SECRET", "example-secret-0123456789")
    with pytest.raises(CommandError, match="failed verification"):
        call_command("bucket_register", "--tenant", tenant.slug, "--name", "acme-not-s3", "--region", "us-east-1",
                     "--endpoint-url", not_s3.url, "--access-key-id", "AKIAEXAMPLEKEY000001",
                     "--secret-access-key-env", "TEST_S3_SECRET")
    assert "[FAIL] Bucket location: The endpoint answered, but the answer is not an S3 response" in capsys.readouterr().out
    assert Bucket.objects.get(tenant=tenant, name="acme-not-s3").status == "failed"


def test_answers_of_the_wrong_shape_after_a_good_location_fail_the_probe_not_the_page():
    """A store that answers the location right and the listing with XML of another shape."""
    class Garbled:
        def handle(self, request) -> Response:
            if "location" in request.query:
                return Response(200, b'<?xml version="1.0"?><LocationConstraint/>', {"Content-Type": "application/xml"})
            return Response(200, b"<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
                            {"Content-Type": "application/xml"})

    server = ServerThread(Garbled()).start()
    try:
        target = S3Target("acme-garbled", "us-east-1", server.url, "AKIAEXAMPLEKEY000001", "example-secret-0123456789")
        checks = {c.key: c for c in verify_bucket(target, purpose_write=False, purpose_read=True, allow_private=True)}
    finally:
        server.stop()
    assert checks["location"].status == "pass"
    assert checks["list"].status == "fail" and "shape of an S3 response" in checks["list"].message
    assert checks["read"].status == "fail"  # nothing could be listed, so nothing proves reading

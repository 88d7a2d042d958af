"""connectors.storage.awsrole against moto with IAM enforced: assume, refresh, refuse, name the session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from connectors.storage.awsrole import (
    NoPortalIdentity,
    RoleAccess,
    role_arn_problem,
    role_session,
    session_name,
)
from connectors.storage.s3.client import make_client
from connectors.storage.s3.target import S3Target
from tests.servers.aws import form_fields, signing_key


class Clock:
    """The time botocore's refreshable credentials see; the test moves it forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def test_a_long_lived_client_assumes_the_role_again_before_its_session_expires(portal_on_aws):
    moto = portal_on_aws
    bucket = moto.bucket("acme-long-export")
    role = RoleAccess(moto.customer_role(bucket, external_id="legacyflo-acme-id"), "legacyflo-acme-id",
                      session_name("acme", bucket))
    clock = Clock()
    s3 = role_session(role, region="us-east-1", clock=clock).client("s3")
    moto.forget_requests()

    s3.put_object(Bucket=bucket, Key="part-1", Body=b"first hour")
    s3.put_object(Bucket=bucket, Key="part-2", Body=b"still the first session")
    clock.offset = timedelta(minutes=52)  # the one-hour session is about to end
    s3.put_object(Bucket=bucket, Key="part-3", Body=b"a new session")

    assumed = [form_fields(r) for r in moto.requests() if form_fields(r).get("Action") == "AssumeRole"]
    assert len(assumed) == 2 and all(a["ExternalId"] == "legacyflo-acme-id" for a in assumed)
    puts = [signing_key(r) for r in moto.requests() if r["method"] == "PUT"]
    assert puts[0] == puts[1] != puts[2] and all(k.startswith("ASIA") for k in puts)
    keys = {o["Key"] for o in moto.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"part-1", "part-2", "part-3"}


def test_the_wrong_external_id_is_refused_by_the_roles_trust_policy(portal_on_aws):
    moto = portal_on_aws
    bucket = moto.bucket("acme-trusting")
    role = RoleAccess(moto.customer_role(bucket, external_id="legacyflo-acme-id"), "legacyflo-globex-id",
                      "legacyflo-globex-acme-trusting")
    client = make_client(S3Target(bucket, "us-east-1", role=role))
    with pytest.raises(ClientError, match="AssumeRole"):
        client.put_object(Bucket=bucket, Key="x", Body=b"x")
    assert moto.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_without_an_identity_of_its_own_the_portal_cannot_assume_roles(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    role = RoleAccess("arn:aws:iam::111122223333:role/legacyflo", "legacyflo-x", "legacyflo-acme-b")
    with pytest.raises(NoPortalIdentity, match="no AWS credentials of its own"):
        make_client(S3Target("acme-b", "us-east-1", role=role))


def test_session_names_identify_tenant_and_bucket_within_sts_limits():
    assert session_name("acme", "acme-mail") == "legacyflo-acme-acme-mail"
    long = session_name("a" * 50, "b" * 63)
    assert len(long) == 64 and long.startswith("legacyflo-aaaa")
    assert session_name("acme", "mail.example.com") == "legacyflo-acme-mail.example.com"


@pytest.mark.parametrize("arn,ok", [
    ("arn:aws:iam::123456789012:role/legacyflo", True),
    ("arn:aws:iam::123456789012:role/path/to/legacyflo", True),
    ("arn:aws-cn:iam::123456789012:role/legacyflo", True),
    ("arn:aws:iam::123456789012:user/legacyflo", False),
    ("arn:aws:iam::12345:role/legacyflo", False),
    ("arn:aws:iam::123456789012:role/", False),
    ("arn:aws:iam::123456789012:role/légacy", False),
    ("https://evil.example.com/role", False),
])
def test_role_arns(arn, ok):
    assert (role_arn_problem(arn) is None) == ok

"""Role buckets and one registration per bucket: the confused-deputy fixes (issue 11, item 2).

Against moto's server with IAM enforced (tests/servers/aws.py): the portal's own user may only
call sts:AssumeRole, roles check their trust policy, and every request moto receives is recorded,
so the tests read which key signed what and which ExternalId the portal sent.
"""

from __future__ import annotations

import importlib
import re

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from accounts.models import AuditEvent, Tenant
from buckets import services
from buckets.models import Bucket
from connectors.model import ConnectionFailed
from connectors.storage.s3.client import make_client
from tests.portal_fixtures import (
    archive_digests,
    imap_form,
    run_worker_burst,
    source_digests,
    submit,
)
from tests.servers.aws import form_fields, signing_key
from tests.servers.recorder import RecordingEndpoint

pytestmark = pytest.mark.django_db


def sts_calls(moto) -> list[dict]:
    return [form_fields(r) | {"signed_by": signing_key(r)} for r in moto.requests()
            if form_fields(r).get("Action") == "AssumeRole"]


def s3_calls(moto, bucket: str) -> list[dict]:
    return [r for r in moto.requests() if r["url"].split("?")[0].split("/", 3)[-1].startswith(bucket)]


ROLE = "portal"  # the form's value for "a role the portal assumes" (before roles: "the portal's own credentials")


def register_form(**overrides) -> dict:
    data = {"name": "", "region": "us-east-1", "endpoint_url": "", "purpose": "destination",
            "auth_mode": ROLE, "role_arn": "", "access_key_id": "", "secret_access_key": ""}
    data.update(overrides)
    return data


# ---- the ExternalId -------------------------------------------------------------------------------

def test_each_tenant_has_its_own_unguessable_external_id_that_never_changes(tenant, other_tenant):
    assert re.fullmatch(r"legacyflo-[0-9a-f]{32}", tenant.aws_external_id)
    assert tenant.aws_external_id != other_tenant.aws_external_id
    before = tenant.aws_external_id
    tenant.name = "Acme Corporation"
    tenant.save()
    tenant.refresh_from_db()
    assert tenant.aws_external_id == before
    assert Tenant._meta.get_field("aws_external_id").editable is False  # no form can set it
    with pytest.raises(IntegrityError), transaction.atomic():
        Tenant.objects.filter(pk=other_tenant.pk).update(aws_external_id=before)


def test_admins_see_the_trust_policy_with_their_external_id_and_viewers_do_not(
        client_for, admin, viewer, tenant, settings):
    settings.LEGACYFLO_AWS_PRINCIPAL_ARN = "arn:aws:iam::999988887777:role/legacyflo-portal"
    page = client_for(admin).get(f"/t/{tenant.slug}/buckets/register/").content.decode()
    assert tenant.aws_external_id in page and "arn:aws:iam::999988887777:role/legacyflo-portal" in page
    assert "sts:ExternalId" in page
    bucket = Bucket.objects.create(tenant=tenant, name="acme-role", region="us-east-1", auth_mode=ROLE,
                                   role_arn="arn:aws:iam::111122223333:role/legacyflo")
    page = client_for(admin).get(f"/t/{tenant.slug}/buckets/{bucket.uuid}/").content.decode()
    assert tenant.aws_external_id in page and "Trust policy of the role" in page
    assert "LegacyFloWriteObjects" in page  # the permissions policy
    page = client_for(viewer).get(f"/t/{tenant.slug}/buckets/{bucket.uuid}/").content.decode()
    assert tenant.aws_external_id not in page and "LegacyFloWriteObjects" in page


# ---- one registration per bucket ------------------------------------------------------------------

def test_acme_cannot_register_a_bucket_globex_registered(client_for, admin, tenant, other_tenant, outsider,
                                                          rclone, s3_bucket, monkeypatch):
    held = services.bucket_register(tenant=other_tenant, actor=outsider, name=s3_bucket, region="us-east-1",
                                    endpoint_url=rclone.url, purpose="destination", auth_mode="keys",
                                    access_key_id=rclone.access_key, secret_access_key=rclone.secret_key)
    assert held.status == "verified"

    # The form, with the endpoint spelled another way.
    other_spelling = rclone.url.replace("http://", "HTTP://") + "/"
    response = client_for(admin).post(f"/t/{tenant.slug}/buckets/register/", register_form(
        name=s3_bucket, endpoint_url=other_spelling, auth_mode="keys",
        access_key_id=rclone.access_key, secret_access_key=rclone.secret_key))
    assert list(Bucket.objects.filter(name=s3_bucket)) == [held]
    assert response.status_code == 200
    assert "already registered with this portal by another organisation" in response.content.decode()
    # The command.
    monkeypatch.setenv("TEST_S3_SECRET", rclone.secret_key)
    with pytest.raises(CommandError, match="another organisation"):
        call_command("bucket_register", "--tenant", tenant.slug, "--name", s3_bucket, "--region", "us-east-1",
                     "--endpoint-url", rclone.url, "--access-key-id", rclone.access_key,
                     "--secret-access-key-env", "TEST_S3_SECRET")

    assert list(Bucket.objects.filter(name=s3_bucket)) == [held]
    held.refresh_from_db()
    assert held.status == "verified"
    refused = AuditEvent.objects.filter(action="bucket.register_refused", target=s3_bucket)
    assert refused.filter(tenant=tenant).count() == 2
    assert refused.filter(tenant=other_tenant).count() == 2  # globex learns that someone tried...
    assert not AuditEvent.objects.filter(tenant=other_tenant, actor_email__icontains="acme").exists()  # ...not who


def test_the_same_name_on_another_endpoint_is_another_bucket_and_a_tenant_registers_a_bucket_once(
        tenant, other_tenant, admin):
    services.bucket_register(tenant=other_tenant, actor=None, name="shared-name", region="garage",
                             endpoint_url="https://store-one.example.com", purpose="destination",
                             auth_mode="keys", access_key_id="a", secret_access_key="b", verify=False)
    mine = services.bucket_register(tenant=tenant, actor=admin, name="shared-name", region="garage",
                                    endpoint_url="https://store-two.example.com:443/", purpose="destination",
                                    auth_mode="keys", access_key_id="a", secret_access_key="b", verify=False)
    assert mine.endpoint_url == "https://store-two.example.com"  # stored normalised
    with pytest.raises(ValidationError, match="already registered here"):
        services.bucket_register(tenant=tenant, actor=admin, name="shared-name", region="garage",
                                 endpoint_url="HTTPS://Store-Two.example.com", purpose="source",
                                 auth_mode="keys", access_key_id="a", secret_access_key="b", verify=False)


def test_naming_another_customers_bucket_first_blocks_nobody_and_two_verified_registrations_cannot_exist(
        tenant, other_tenant, admin, outsider, rclone, s3_bucket):
    squatter = services.bucket_register(tenant=other_tenant, actor=outsider, name=s3_bucket, region="us-east-1",
                                        endpoint_url=rclone.url, purpose="destination", auth_mode="keys",
                                        access_key_id=rclone.access_key, secret_access_key="wrong-secret-0123456789")
    assert squatter.status == "failed"  # it could not prove access
    owner = services.bucket_register(tenant=tenant, actor=admin, name=s3_bucket, region="us-east-1",
                                     endpoint_url=rclone.url, purpose="destination", auth_mode="keys",
                                     access_key_id=rclone.access_key, secret_access_key=rclone.secret_key)
    assert owner.status == "verified"
    squatter = services.bucket_verify(bucket=squatter, actor=outsider)
    assert squatter.status == "failed" and [c["key"] for c in squatter.checks] == ["registered"]
    # The database holds the line where two verifications race (the service's check is not enough).
    with pytest.raises(IntegrityError), transaction.atomic():
        Bucket.objects.filter(pk=squatter.pk).update(status="verified")


# ---- role buckets on moto -------------------------------------------------------------------------

def test_a_role_bucket_is_verified_and_written_with_the_roles_credentials_not_the_portals(
        portal_on_aws, client_for, admin, tenant):
    moto = portal_on_aws
    bucket_name = moto.bucket("acme-role-archive")
    role = moto.customer_role(bucket_name, external_id=tenant.aws_external_id)
    with pytest.raises(moto.client("s3").exceptions.ClientError, match="AccessDenied"):  # enforcement has teeth
        moto.client("s3", moto.portal).put_object(Bucket=bucket_name, Key="by-the-portal", Body=b"x")
    moto.forget_requests()

    response = client_for(admin).post(f"/t/{tenant.slug}/buckets/register/",
                                      register_form(name=bucket_name, role_arn=role), follow=True)
    bucket = Bucket.objects.get(tenant=tenant, name=bucket_name)
    checks = {c["key"]: c["status"] for c in bucket.checks}
    assert bucket.status == "verified", bucket.checks
    assert checks["role"] == checks["external_id"] == checks["write"] == checks["list"] == "pass"
    assert tenant.aws_external_id in response.content.decode()  # the trust policy to paste

    assumed = sts_calls(moto)
    assert assumed and all(c["signed_by"] == moto.portal.access_key and c["RoleArn"] == role for c in assumed)
    assert all(c["RoleSessionName"] == "legacyflo-acme-acme-role-archive" for c in assumed)
    external_ids = [c["ExternalId"] for c in assumed]
    assert external_ids.count(tenant.aws_external_id) == len(assumed) - 1
    assert sum(e.startswith("legacyflo-probe-") for e in external_ids) == 1  # the "only ours" probe
    s3 = s3_calls(moto, bucket_name)
    assert any(r["method"] == "PUT" and ".legacyflo-probe/" in r["url"] for r in s3)
    signers = {signing_key(r) for r in s3}
    assert signers and all(k.startswith("ASIA") for k in signers)  # temporary keys of the assumed role
    assert moto.portal.access_key not in signers
    assert {signing_key(r) for r in moto.requests()} <= signers | {moto.portal.access_key}
    assert AuditEvent.objects.filter(tenant=tenant, action="bucket.register", detail__role_arn=role).exists()


@pytest.mark.django_db(transaction=True)
def test_an_export_to_a_role_bucket_is_written_with_the_roles_credentials(
        portal_on_aws, operator, admin, tenant, dovecot, imap_ca, rq_queue):
    """The worker's path (bucket_target → make_client → sink), not only verification."""
    moto = portal_on_aws
    bucket_name = moto.bucket("acme-role-exports")
    role = moto.customer_role(bucket_name, external_id=tenant.aws_external_id)
    bucket = services.bucket_register(tenant=tenant, actor=admin, name=bucket_name, region="us-east-1",
                                      purpose="destination", auth_mode=ROLE, role_arn=role)
    assert bucket.status == "verified", bucket.checks
    moto.forget_requests()

    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, bucket))
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error

    admin_s3 = moto.client("s3")
    expected = source_digests(dovecot.mailbox)
    actual = archive_digests(admin_s3, bucket_name, "mail/alice-backup.zip")
    assert all(sorted(actual.get(folder, [])) == sorted(d) for folder, d in expected.items())
    writes = [r for r in s3_calls(moto, bucket_name) if r["method"] in ("PUT", "POST")]
    assert any("alice-backup.zip" in r["url"] for r in writes) and any("report.csv" in r["url"] for r in writes)
    assert all(signing_key(r).startswith("ASIA") for r in writes)
    assert [c["ExternalId"] for c in sts_calls(moto)] == [tenant.aws_external_id]  # one session for the run
    assert {signing_key(r) for r in moto.requests() if form_fields(r).get("Action") != "AssumeRole"} \
        .isdisjoint({moto.portal.access_key})


def test_a_role_that_trusts_another_tenants_external_id_is_refused_before_any_bucket_request(
        portal_on_aws, tenant, other_tenant, outsider):
    moto = portal_on_aws
    bucket_name = moto.bucket("acme-private-mail")
    acme_role = moto.customer_role(bucket_name, external_id=tenant.aws_external_id)
    moto.forget_requests()
    bucket = services.bucket_register(tenant=other_tenant, actor=outsider, name=bucket_name, region="us-east-1",
                                      purpose="destination", auth_mode=ROLE, role_arn=acme_role)
    role_check = bucket.checks[-1]
    assert bucket.status == "failed" and role_check["key"] == "role" and role_check["status"] == "fail"
    assert other_tenant.aws_external_id in role_check["fix"] and moto.portal.arn in role_check["fix"]
    assert [c["ExternalId"] for c in sts_calls(moto)] == [other_tenant.aws_external_id]  # globex's, not acme's
    assert s3_calls(moto, bucket_name) == []  # nothing reached the bucket
    assert AuditEvent.objects.filter(tenant=other_tenant, action="bucket.verify", detail__failed=["role"]).exists()


def test_a_role_whose_trust_policy_ignores_the_external_id_fails_verification(portal_on_aws, tenant, admin):
    moto = portal_on_aws
    bucket_name = moto.bucket("acme-careless-trust")
    role = moto.customer_role(bucket_name, external_id=None)
    moto.forget_requests()
    bucket = services.bucket_register(tenant=tenant, actor=admin, name=bucket_name, region="us-east-1",
                                      purpose="destination", auth_mode=ROLE, role_arn=role)
    checks = {c["key"]: c for c in bucket.checks}
    assert bucket.status == "failed"
    assert checks["role"]["status"] == "pass" and checks["external_id"]["status"] == "fail"
    assert tenant.aws_external_id in checks["external_id"]["fix"]
    assert s3_calls(moto, bucket_name) == []  # no probe written through a role any tenant could use


def test_a_bucket_registered_with_the_portals_own_identity_stops_working_until_it_gets_a_role(
        portal_on_aws, client_for, admin, tenant):
    """The state the migration leaves an old "portal's own credentials" bucket in, and the way out."""
    moto = portal_on_aws
    bucket_name = moto.bucket("acme-legacy-portal")
    legacy = Bucket.objects.create(tenant=tenant, name=bucket_name, region="us-east-1", auth_mode="portal",
                                   status="verified")
    moto.forget_requests()
    migration = importlib.import_module("buckets.migrations.0002_roles_and_one_registration_per_bucket")
    migration.stop_portal_identity_buckets(apps, None)
    legacy.refresh_from_db()
    assert legacy.status == "failed" and legacy.checks[0]["key"] == "role"

    with pytest.raises(ConnectionFailed, match="no role ARN"):  # what the worker and clean-up build
        make_client(services.bucket_target(legacy))
    legacy = services.bucket_verify(bucket=legacy, actor=admin)
    assert legacy.status == "failed" and "no role to assume" in legacy.checks[-1]["message"]
    assert moto.requests() == []  # the portal's identity went nowhere

    role = moto.customer_role(bucket_name, external_id=tenant.aws_external_id)
    client_for(admin).post(f"/t/{tenant.slug}/buckets/{legacy.uuid}/role/", {"role_arn": role})
    legacy.refresh_from_db()
    assert legacy.status == "verified" and legacy.role_arn == role, legacy.checks
    assert AuditEvent.objects.filter(tenant=tenant, action="bucket.role", detail__role_arn=role).exists()


@pytest.mark.django_db(transaction=True)
def test_a_request_queued_on_a_portal_identity_bucket_fails_with_the_reason_and_sends_nothing(
        portal_on_aws, operator, tenant, dovecot, imap_ca, rq_queue):
    moto = portal_on_aws
    bucket_name = moto.bucket("acme-legacy-queued")
    legacy = Bucket.objects.create(tenant=tenant, name=bucket_name, region="us-east-1", auth_mode="portal",
                                   status="verified", purpose="destination")
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, legacy))  # queued before the upgrade
    migration = importlib.import_module("buckets.migrations.0002_roles_and_one_registration_per_bucket")
    migration.stop_portal_identity_buckets(apps, None)
    moto.forget_requests()
    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "failed" and "has no role ARN" in req.error
    assert moto.requests() == []


def test_bucket_register_command_takes_a_role_arn(portal_on_aws, tenant, capsys):
    moto = portal_on_aws
    bucket_name = moto.bucket("acme-cli-role")
    role = moto.customer_role(bucket_name, external_id=tenant.aws_external_id)
    call_command("bucket_register", "--tenant", tenant.slug, "--name", bucket_name, "--region", "us-east-1",
                 "--role-arn", role)
    out = capsys.readouterr().out
    assert "[PASS] Role" in out and "[PASS] ExternalId" in out and "verified" in out
    call_command("bucket_register", "--tenant", tenant.slug, "--name", bucket_name, "--region", "us-east-1",
                 "--role-arn", role)  # again: verifies the same registration
    assert "already registered: verifying it again" in capsys.readouterr().out
    assert Bucket.objects.filter(name=bucket_name).count() == 1
    with pytest.raises(CommandError, match="either --access-key-id"):
        call_command("bucket_register", "--tenant", tenant.slug, "--name", "acme-x", "--region", "us-east-1")
    with pytest.raises(CommandError, match="AWS S3's own endpoints"):
        call_command("bucket_register", "--tenant", tenant.slug, "--name", "acme-x", "--region", "us-east-1",
                     "--endpoint-url", "https://s3.example.com", "--role-arn", role)


# ---- the portal's identity never goes to a tenant's endpoint ---------------------------------------

PORTAL_KEY, PORTAL_TOKEN = "AKIAPORTALOWNKEY0001", "portal-own-session-token-do-not-leak"


def test_a_tenant_typed_endpoint_never_receives_the_portals_credentials(client_for, admin, tenant, settings,
                                                                         monkeypatch):
    settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS = True  # so that only the role rule can stop it
    settings.LEGACYFLO_AWS_PRINCIPAL_ARN = "arn:aws:iam::999988887777:role/legacyflo-portal"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", PORTAL_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "portal-own-secret-0123456789")
    monkeypatch.setenv("AWS_SESSION_TOKEN", PORTAL_TOKEN)
    role = "arn:aws:iam::111122223333:role/legacyflo"
    with RecordingEndpoint() as endpoint:
        response = client_for(admin).post(f"/t/{tenant.slug}/buckets/register/", register_form(
            name="acme-elsewhere", endpoint_url=endpoint.url, role_arn=role))
        assert not any(r.mentions(PORTAL_KEY) or r.mentions(PORTAL_TOKEN) for r in endpoint.received)
        assert endpoint.received == []
        assert response.status_code == 200 and "AWS S3&#x27;s own endpoints" in response.content.decode()
        with pytest.raises(ValidationError, match="AWS S3's own endpoints"):
            services.bucket_register(tenant=tenant, actor=admin, name="acme-elsewhere", region="us-east-1",
                                     endpoint_url=endpoint.url, purpose="destination", auth_mode=ROLE,
                                     role_arn=role)
        assert not Bucket.objects.filter(name="acme-elsewhere").exists()

        # A row in that state anyway (from before the fix): verification and every client refuse it.
        old = Bucket.objects.create(tenant=tenant, name="acme-old-endpoint", region="us-east-1",
                                    endpoint_url=endpoint.url, auth_mode=ROLE, role_arn=role)
        old = services.bucket_verify(bucket=old, actor=admin)
        assert old.status == "failed" and {c["key"]: c["status"] for c in old.checks}["endpoint"] == "fail"
        with pytest.raises(ConnectionFailed, match="does not send AWS credentials"):
            make_client(services.bucket_target(old), allow_private=True)
        assert endpoint.received == []

        # Control: the recorder does record, and a key bucket sends the tenant's own key there.
        keys = services.bucket_register(tenant=tenant, actor=admin, name="acme-own-store", region="garage",
                                        endpoint_url=endpoint.url, purpose="destination",
                                        auth_mode="keys", access_key_id="AKIATENANTOWNKEY0001",
                                        secret_access_key="tenant-secret-0123456789")
        assert keys.status == "failed" and endpoint.received
        assert all(r.mentions("AKIATENANTOWNKEY0001") for r in endpoint.received)
        assert not any(r.mentions(PORTAL_KEY) or r.mentions(PORTAL_TOKEN) for r in endpoint.received)


@pytest.mark.parametrize("url,aws", [
    ("https://s3.amazonaws.com", True),
    ("https://s3.eu-west-1.amazonaws.com/", True),
    ("https://S3.EU-WEST-1.AMAZONAWS.COM:443", True),
    ("https://s3-eu-west-1.amazonaws.com", True),
    ("https://s3.dualstack.us-east-2.amazonaws.com", True),
    ("https://s3.cn-north-1.amazonaws.com.cn", True),
    ("https://s3.amazonaws.com.evil.example", False),
    ("https://s3.eu-west-1.amazonaws.com.", False),
    ("https://evils3.amazonaws.com", False),
    ("https://s3.evil.amazonaws.com", False),  # not a region
    ("https://s3.eu-west-9.amazonaws.com", False),
    ("https://s3.eu-west-1.amazonaws.com.cn", False),
    ("https://s3.amazonaws.com@evil.example", False),
    ("https://user@s3.amazonaws.com", False),
    ("https://s3.amazonaws.com:8443", False),
    ("https://s3.amazonaws.com/evil-prefix", False),
    ("https://s3.amazonaws.com?x=1", False),
    ("http://s3.amazonaws.com", False),
    ("https://s3.amazonaws.c\u03bfm", False),  # Greek omicron
    ("https://s3.amazonaws.com\u3002evil.example", False),  # ideographic full stop
    ("https://bucket.s3.amazonaws.com", False),
])
def test_only_aws_s3s_own_endpoints_count_as_aws(url, aws):
    from buckets.rules import is_aws_s3_endpoint, normalise_endpoint

    assert is_aws_s3_endpoint(url) is aws
    assert (normalise_endpoint(url) == "") is aws


def test_a_role_bucket_typed_with_aws_s3s_own_endpoint_is_an_aws_bucket(portal_on_aws, client_for, admin, tenant):
    role = portal_on_aws.customer_role("acme-aws-endpoint", external_id=tenant.aws_external_id)
    client_for(admin).post(f"/t/{tenant.slug}/buckets/register/", register_form(
        name="acme-aws-endpoint", endpoint_url="https://s3.eu-west-1.amazonaws.com", region="eu-west-1",
        role_arn=role))
    bucket = Bucket.objects.get(name="acme-aws-endpoint")
    assert bucket.endpoint_url == "" and bucket.role_arn == role
    response = client_for(admin).post(f"/t/{tenant.slug}/buckets/register/", register_form(
        name="acme-look-alike", endpoint_url="https://s3.eu-west-1.amazonaws.com.evil.example", region="eu-west-1",
        role_arn=role))
    assert "AWS S3&#x27;s own endpoints" in response.content.decode()
    assert not Bucket.objects.filter(name="acme-look-alike").exists()


def test_role_mode_needs_the_operator_to_name_the_portals_identity(client_for, admin, tenant, settings):
    settings.LEGACYFLO_AWS_PRINCIPAL_ARN = ""
    response = client_for(admin).post(f"/t/{tenant.slug}/buckets/register/", register_form(
        name="acme-role", role_arn="arn:aws:iam::111122223333:role/legacyflo"))
    assert "LEGACYFLO_AWS_PRINCIPAL_ARN" in response.content.decode()
    response = client_for(admin).post(f"/t/{tenant.slug}/buckets/register/", register_form(
        name="acme-role", role_arn="arn:aws:iam::1111:role/x"))
    assert "Enter the ARN of an IAM role" in response.content.decode()
    assert not Bucket.objects.exists()


def test_a_foreign_buckets_role_cannot_be_changed(client_for, owner, other_tenant):
    foreign = Bucket.objects.create(tenant=other_tenant, name="globex-mail", region="us-east-1")
    response = client_for(owner).post(f"/t/acme/buckets/{foreign.uuid}/role/",
                                      {"role_arn": "arn:aws:iam::111122223333:role/x"})
    assert response.status_code == 404
    foreign.refresh_from_db()
    assert foreign.role_arn == "" and foreign.auth_mode == "keys"


@pytest.mark.django_db(transaction=True)
def test_the_migration_stops_portal_identity_buckets_and_keeps_one_verified_registration_per_bucket():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("buckets", "0001_initial"), ("accounts", "0002_tenant_aws_external_id")]
    latest = [("buckets", "0003_bucket_verified_once")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        OldTenant, OldBucket = old.get_model("accounts", "Tenant"), old.get_model("buckets", "Bucket")
        acme = OldTenant.objects.create(slug="acme", name="Acme")
        globex = OldTenant.objects.create(slug="globex", name="Globex")
        first = OldBucket.objects.create(tenant=globex, name="shared", region="us-east-1", status="verified",
                                         endpoint_url="https://store.example.com", auth_mode="keys")
        second = OldBucket.objects.create(tenant=acme, name="shared", region="us-east-1", status="verified",
                                          endpoint_url="HTTPS://Store.Example.com:443/", auth_mode="keys")
        portal = OldBucket.objects.create(tenant=acme, name="acme-portal", region="us-east-1", status="verified",
                                          auth_mode="portal")
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
        new = executor.loader.project_state(latest).apps.get_model("buckets", "Bucket")
        first, second, portal = (new.objects.get(pk=b.pk) for b in (first, second, portal))
        assert first.status == "verified"
        assert second.status == "failed" and second.checks[0]["key"] == "registered"
        assert second.endpoint_url == "https://store.example.com"
        assert portal.status == "failed" and portal.checks[0]["key"] == "role" and portal.role_arn == ""
    finally:
        MigrationExecutor(connection).migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_every_existing_tenant_its_own_external_id():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, latest = [("accounts", "0001_initial")], [("accounts", "0002_tenant_aws_external_id")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        OldTenant = executor.loader.project_state(before).apps.get_model("accounts", "Tenant")
        pks = [OldTenant.objects.create(slug=slug, name=slug).pk for slug in ("acme", "globex", "initech")]
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
        ids = list(Tenant.objects.filter(pk__in=pks).values_list("aws_external_id", flat=True))
        assert len(set(ids)) == 3 and all(re.fullmatch(r"legacyflo-[0-9a-f]{32}", i) for i in ids)
    finally:
        MigrationExecutor(connection).migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

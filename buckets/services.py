"""Writes for buckets: register, verify, change credentials or role, remove. Audited.

Invariants:
- a bucket has at most one *verified* registration in the whole portal (same name on AWS S3;
  same name and endpoint elsewhere): the first tenant to prove access holds it, and the database
  constraint decides when two verifications race. Registering a bucket another tenant holds is
  refused; an unverified registration holds nothing (naming someone's bucket blocks nobody);
- a role bucket has no endpoint URL: what the portal's identity signs goes to AWS only;
- every S3 client built from a Bucket goes through ``bucket_target``, which carries either the
  tenant's key pair or the tenant's role with the tenant's own ExternalId, never neither.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from accounts.audit import audit
from accounts.models import Tenant
from buckets.models import AuthMode, Bucket, Status
from buckets.rules import normalise_endpoint, role_mode_problems
from buckets.verification import FAIL, Check, verify_bucket
from connectors.storage.awsrole import RoleAccess, session_name
from connectors.storage.s3.target import S3Target

HELD_ELSEWHERE = "The bucket {name} is already registered with this portal by another organisation."
HELD_ELSEWHERE_FIX = "If it is yours, ask the portal's operator."
ALREADY_HERE = ('The bucket {name} is already registered here: open it from the bucket list '
                '(purpose "both" serves backups and restores).')


# Error reports hide every local of these (and of what they call): they handle the secret key.
@sensitive_variables()
def bucket_target(bucket: Bucket) -> S3Target:
    """How the portal reaches ``bucket``: its key pair, or its role with the tenant's ExternalId."""
    if bucket.auth_mode == AuthMode.ROLE:
        role = RoleAccess(role_arn=bucket.role_arn, external_id=bucket.tenant.aws_external_id,
                          session_name=session_name(bucket.tenant.slug, bucket.name))
        return S3Target(bucket=bucket.name, region=bucket.region, endpoint_url=bucket.endpoint_url, role=role)
    return S3Target(bucket=bucket.name, region=bucket.region, endpoint_url=bucket.endpoint_url,
                    access_key_id=bucket.access_key_id, secret_access_key=bucket.secret_access_key)


def _holder_elsewhere(*, tenant: Tenant, name: str, endpoint_url: str) -> Bucket | None:
    """Another tenant's verified registration of this bucket, if any."""
    return (Bucket.objects.filter(name=name, endpoint_url=endpoint_url, status=Status.VERIFIED)
            .exclude(tenant=tenant).select_related("tenant").first())


def _audit_held_elsewhere(*, tenant: Tenant, holder: Bucket | None, actor, name: str, endpoint_url: str,
                          request) -> None:
    where = {"endpoint_url": endpoint_url} if endpoint_url else {}
    audit(tenant=tenant, actor=actor, action="bucket.register_refused", target=name,
          detail={"reason": "registered by another tenant", **where}, request=request)
    if holder is not None:  # the owner learns that someone tried, not who
        audit(tenant=holder.tenant, actor="another tenant of this portal", action="bucket.register_refused",
              target=name, detail={"reason": "another tenant tried to register this bucket", **where})


@sensitive_variables()
def bucket_register(*, tenant: Tenant, actor, name: str, region: str, endpoint_url: str = "",
                    purpose: str, auth_mode: str, access_key_id: str = "", secret_access_key: str = "",
                    role_arn: str = "", request=None, verify: bool = True) -> Bucket:
    """Verify the bucket (by default), then save it with its checks in one transaction.

    A bucket is registered together with its verification result — kept when a check failed, so
    its page shows the fixes — or not at all: nothing is saved before the checks have run, so an
    error while verifying leaves no half-registered row.
    """
    name, endpoint_url, role_arn = name.strip(), normalise_endpoint(endpoint_url), role_arn.strip()
    if auth_mode == AuthMode.ROLE:
        problems = role_mode_problems(endpoint_url=endpoint_url, role_arn=role_arn,
                                      principal=settings.LEGACYFLO_AWS_PRINCIPAL_ARN)
        if problems:
            raise ValidationError(problems)
    holder = _holder_elsewhere(tenant=tenant, name=name, endpoint_url=endpoint_url)
    if holder is not None:
        _audit_held_elsewhere(tenant=tenant, holder=holder, actor=actor, name=name, endpoint_url=endpoint_url,
                              request=request)
        raise ValidationError({"name": f"{HELD_ELSEWHERE.format(name=name)} {HELD_ELSEWHERE_FIX}"})
    if Bucket.objects.filter(tenant=tenant, name=name, endpoint_url=endpoint_url).exists():
        raise ValidationError({"name": ALREADY_HERE.format(name=name)})
    uses_keys = auth_mode == AuthMode.KEYS
    bucket = Bucket(
        tenant=tenant, name=name, region=region.strip(), endpoint_url=endpoint_url,
        purpose=purpose, auth_mode=auth_mode,
        access_key_id=access_key_id.strip() if uses_keys else "",
        secret_access_key=secret_access_key if uses_keys else "",
        role_arn="" if uses_keys else role_arn,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    if verify:
        _record_checks(bucket)  # network I/O, outside any transaction
    try:
        _save_registration(bucket, actor=actor, request=request, verified=verify)
    except IntegrityError:
        if Bucket.objects.filter(tenant=tenant, name=name, endpoint_url=endpoint_url).exists():
            raise ValidationError({"name": ALREADY_HERE.format(name=name)}) from None  # raced this one
        # another tenant's verification of this bucket committed first: kept, as failed
        bucket.pk = None
        bucket.checks = [_held_elsewhere_check(bucket.name).as_dict(), *bucket.checks]
        bucket.status = Status.FAILED
        _save_registration(bucket, actor=actor, request=request, verified=verify)
    return bucket


def _save_registration(bucket: Bucket, *, actor, request, verified: bool) -> None:
    with transaction.atomic():
        bucket.save()
        audit(tenant=bucket.tenant, actor=actor, action="bucket.register", target=bucket.name,
              detail={"region": bucket.region, "endpoint_url": bucket.endpoint_url, "purpose": bucket.purpose,
                      "auth_mode": bucket.auth_mode, **({"role_arn": bucket.role_arn} if bucket.role_arn else {})},
              request=request)
        if verified:
            _audit_verify(bucket, actor=actor, request=request)


def _audit_verify(bucket: Bucket, *, actor, request) -> None:
    failed = [c["key"] for c in bucket.checks if c["status"] == FAIL]
    audit(tenant=bucket.tenant, actor=actor, action="bucket.verify", target=bucket.name,
          detail={"status": bucket.status, **({"failed": failed} if failed else {})}, request=request)


def _held_elsewhere_check(name: str) -> Check:
    return Check("registered", "Registration", FAIL, HELD_ELSEWHERE.format(name=name), HELD_ELSEWHERE_FIX)


@sensitive_variables()
def _record_checks(bucket: Bucket) -> None:
    """Run every check and put the results on ``bucket`` (not saved). verify_bucket never raises
    for what the endpoint answers; a bucket another tenant holds is not contacted at all."""
    holder = _holder_elsewhere(tenant=bucket.tenant, name=bucket.name, endpoint_url=bucket.endpoint_url)
    if holder is not None:
        checks = [_held_elsewhere_check(bucket.name)]
    else:
        checks = verify_bucket(
            bucket_target(bucket), purpose_write=bucket.is_destination, purpose_read=bucket.is_source,
            allow_private=settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS,
            principal_arn=settings.LEGACYFLO_AWS_PRINCIPAL_ARN,
        )
    bucket.checks = [c.as_dict() for c in checks]
    bucket.status = Status.FAILED if any(c.status == FAIL for c in checks) else Status.VERIFIED
    bucket.verified_at = timezone.now()


@sensitive_variables()
def bucket_verify(*, bucket: Bucket, actor, request=None) -> Bucket:
    """Run every check (network I/O happens outside any transaction) and store the results.

    A verification that loses the race against another tenant's is stored as failed (the
    database constraint decides).
    """
    holder = _holder_elsewhere(tenant=bucket.tenant, name=bucket.name, endpoint_url=bucket.endpoint_url)
    if holder is not None:
        _audit_held_elsewhere(tenant=bucket.tenant, holder=holder, actor=actor, name=bucket.name,
                              endpoint_url=bucket.endpoint_url, request=request)
    _record_checks(bucket)
    try:
        with transaction.atomic():
            bucket.save(update_fields=["checks", "status", "verified_at"])
    except IntegrityError:  # another tenant's verification of this bucket committed first
        bucket.checks = [_held_elsewhere_check(bucket.name).as_dict(), *bucket.checks]
        bucket.status = Status.FAILED
        bucket.save(update_fields=["checks", "status", "verified_at"])
    _audit_verify(bucket, actor=actor, request=request)
    return bucket


@sensitive_variables()
@transaction.atomic
def bucket_set_credentials(*, bucket: Bucket, actor, access_key_id: str, secret_access_key: str, request=None) -> Bucket:
    bucket.auth_mode = AuthMode.KEYS
    bucket.access_key_id = access_key_id.strip()
    bucket.secret_access_key = secret_access_key
    bucket.role_arn = ""
    bucket.status = Status.UNVERIFIED
    bucket.save(update_fields=["auth_mode", "access_key_id", "secret_access_key", "role_arn", "status"])
    audit(tenant=bucket.tenant, actor=actor, action="bucket.credentials", target=bucket.name, request=request)
    return bucket


@transaction.atomic
def bucket_set_role(*, bucket: Bucket, actor, role_arn: str, request=None) -> Bucket:
    """Reach the bucket through ``role_arn`` from now on (its key pair, if any, is forgotten)."""
    role_arn = role_arn.strip()
    problems = role_mode_problems(endpoint_url=bucket.endpoint_url, role_arn=role_arn,
                                  principal=settings.LEGACYFLO_AWS_PRINCIPAL_ARN)
    if problems:
        raise ValidationError(problems)
    previous = bucket.role_arn
    bucket.auth_mode = AuthMode.ROLE
    bucket.role_arn = role_arn
    bucket.access_key_id = bucket.secret_access_key = ""
    bucket.status = Status.UNVERIFIED
    bucket.save(update_fields=["auth_mode", "role_arn", "access_key_id", "secret_access_key", "status"])
    audit(tenant=bucket.tenant, actor=actor, action="bucket.role", target=bucket.name,
          detail={"role_arn": role_arn, **({"previous_role_arn": previous} if previous else {})}, request=request)
    return bucket


@transaction.atomic
def bucket_remove(*, bucket: Bucket, actor, request=None) -> None:
    """Forget a bucket (its objects stay in S3). Refused while requests still use it."""
    from requests_app.selectors import requests_for_bucket

    if requests_for_bucket(bucket).exists():
        raise ValidationError("Requests refer to this bucket; it stays registered so their reports remain reachable.")
    name = bucket.name
    bucket.delete()
    audit(tenant=bucket.tenant, actor=actor, action="bucket.remove", target=name, request=request)

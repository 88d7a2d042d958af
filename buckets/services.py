"""Writes for buckets: register, verify, change credentials, remove. Audited."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.audit import audit
from accounts.models import Tenant
from buckets.models import AuthMode, Bucket, Status
from buckets.verification import FAIL, verify_bucket
from connectors.s3target import S3Target


def bucket_target(bucket: Bucket) -> S3Target:
    return S3Target(
        bucket=bucket.name, region=bucket.region, endpoint_url=bucket.endpoint_url,
        access_key_id=bucket.access_key_id if bucket.auth_mode == AuthMode.KEYS else "",
        secret_access_key=bucket.secret_access_key if bucket.auth_mode == AuthMode.KEYS else "",
        uses_keys=bucket.auth_mode == AuthMode.KEYS,
    )


def bucket_register(*, tenant: Tenant, actor, name: str, region: str, endpoint_url: str = "",
                    purpose: str, auth_mode: str, access_key_id: str = "", secret_access_key: str = "",
                    request=None, verify: bool = True) -> Bucket:
    """Verify the bucket (by default), then save it with its checks in one transaction.

    A bucket is registered together with its verification result — kept when a check failed, so
    its page shows the fixes — or not at all: nothing is saved before the checks have run, so an
    error while verifying leaves no half-registered row.
    """
    endpoint_url = endpoint_url.strip().rstrip("/")
    name = name.strip()
    if Bucket.objects.filter(tenant=tenant, name=name, endpoint_url=endpoint_url).exists():
        raise ValidationError(f"The bucket {name} is already registered.")
    bucket = Bucket(
        tenant=tenant, name=name, region=region.strip(), endpoint_url=endpoint_url,
        purpose=purpose, auth_mode=auth_mode,
        access_key_id=access_key_id.strip() if auth_mode == AuthMode.KEYS else "",
        secret_access_key=secret_access_key if auth_mode == AuthMode.KEYS else "",
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    if verify:
        _record_checks(bucket)  # network I/O, outside any transaction
    try:
        with transaction.atomic():
            bucket.save()
            audit(tenant=tenant, actor=actor, action="bucket.register", target=bucket.name,
                  detail={"region": bucket.region, "endpoint_url": endpoint_url, "purpose": purpose,
                          "auth_mode": auth_mode}, request=request)
            if verify:
                audit(tenant=tenant, actor=actor, action="bucket.verify", target=bucket.name,
                      detail={"status": bucket.status}, request=request)
    except IntegrityError as exc:  # registered concurrently
        raise ValidationError(f"The bucket {name} is already registered.") from exc
    return bucket


def _record_checks(bucket: Bucket) -> None:
    """Run every check and put the results on ``bucket`` (not saved). verify_bucket never raises
    for what the endpoint answers."""
    checks = verify_bucket(
        bucket_target(bucket), purpose_write=bucket.is_destination, purpose_read=bucket.is_source,
        allow_private=settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS,
        principal_arn=settings.LEGACYFLO_AWS_PRINCIPAL_ARN,
    )
    bucket.checks = [c.as_dict() for c in checks]
    bucket.status = Status.FAILED if any(c.status == FAIL for c in checks) else Status.VERIFIED
    bucket.verified_at = timezone.now()


def bucket_verify(*, bucket: Bucket, actor, request=None) -> Bucket:
    """Run every check (network I/O happens outside any transaction) and store the results."""
    _record_checks(bucket)
    with transaction.atomic():
        bucket.save(update_fields=["checks", "status", "verified_at"])
        audit(tenant=bucket.tenant, actor=actor, action="bucket.verify", target=bucket.name,
              detail={"status": bucket.status}, request=request)
    return bucket


@transaction.atomic
def bucket_set_credentials(*, bucket: Bucket, actor, access_key_id: str, secret_access_key: str, request=None) -> Bucket:
    bucket.auth_mode = AuthMode.KEYS
    bucket.access_key_id = access_key_id.strip()
    bucket.secret_access_key = secret_access_key
    bucket.status = Status.UNVERIFIED
    bucket.save(update_fields=["auth_mode", "access_key_id", "secret_access_key", "status"])
    audit(tenant=bucket.tenant, actor=actor, action="bucket.credentials", target=bucket.name, request=request)
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

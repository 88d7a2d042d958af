"""Writes for buckets: register, verify, change credentials, remove. Audited."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from accounts.audit import audit
from accounts.models import Tenant
from buckets.models import AuthMode, Bucket, Status
from buckets.verification import FAIL, verify_bucket
from connectors.s3target import S3Target


# Error reports hide every local of these (and of what they call): they handle the secret key.
@sensitive_variables()
def bucket_target(bucket: Bucket) -> S3Target:
    return S3Target(
        bucket=bucket.name, region=bucket.region, endpoint_url=bucket.endpoint_url,
        access_key_id=bucket.access_key_id if bucket.auth_mode == AuthMode.KEYS else "",
        secret_access_key=bucket.secret_access_key if bucket.auth_mode == AuthMode.KEYS else "",
        uses_keys=bucket.auth_mode == AuthMode.KEYS,
    )


@sensitive_variables()
def bucket_register(*, tenant: Tenant, actor, name: str, region: str, endpoint_url: str = "",
                    purpose: str, auth_mode: str, access_key_id: str = "", secret_access_key: str = "",
                    request=None, verify: bool = True) -> Bucket:
    """Save the bucket and (by default) verify it right away; the bucket is kept even if a check fails."""
    endpoint_url = endpoint_url.strip().rstrip("/")
    if Bucket.objects.filter(tenant=tenant, name=name, endpoint_url=endpoint_url).exists():
        raise ValidationError(f"The bucket {name} is already registered.")
    with transaction.atomic():
        bucket = Bucket.objects.create(
            tenant=tenant, name=name.strip(), region=region.strip(), endpoint_url=endpoint_url,
            purpose=purpose, auth_mode=auth_mode,
            access_key_id=access_key_id.strip() if auth_mode == AuthMode.KEYS else "",
            secret_access_key=secret_access_key if auth_mode == AuthMode.KEYS else "",
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        audit(tenant=tenant, actor=actor, action="bucket.register", target=bucket.name,
              detail={"region": bucket.region, "endpoint_url": endpoint_url, "purpose": purpose,
                      "auth_mode": auth_mode}, request=request)
    if verify:
        bucket = bucket_verify(bucket=bucket, actor=actor, request=request)
    return bucket


@sensitive_variables()
def bucket_verify(*, bucket: Bucket, actor, request=None) -> Bucket:
    """Run every check (network I/O happens outside any transaction) and store the results."""
    checks = verify_bucket(
        bucket_target(bucket), purpose_write=bucket.is_destination, purpose_read=bucket.is_source,
        allow_private=settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS,
        principal_arn=settings.LEGACYFLO_AWS_PRINCIPAL_ARN,
    )
    failed = any(c.status == FAIL for c in checks)
    bucket.checks = [c.as_dict() for c in checks]
    bucket.status = Status.FAILED if failed else Status.VERIFIED
    bucket.verified_at = timezone.now()
    bucket.save(update_fields=["checks", "status", "verified_at"])
    audit(tenant=bucket.tenant, actor=actor, action="bucket.verify", target=bucket.name,
          detail={"status": bucket.status}, request=request)
    return bucket


@sensitive_variables()
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

"""Buckets a tenant registers as backup destinations or restore sources."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from accounts.access import TenantQuerySet
from accounts.fields import EncryptedTextField
from accounts.models import Tenant


class Purpose(models.TextChoices):
    DESTINATION = "destination", "Destination (backups are written here)"
    SOURCE = "source", "Source (archives are restored from here)"
    BOTH = "both", "Both"


class AuthMode(models.TextChoices):
    KEYS = "keys", "An access key pair (stored encrypted)"
    # Stored as "portal", the mode's value from before roles, so forms, scripts and old rows keep
    # their meaning: "the portal reaches it with its AWS identity" — now only through the
    # tenant's role, never directly (a row without a role ARN fails verification).
    ROLE = "portal", "A role in your AWS account that the portal assumes (AWS S3 only)"


class Status(models.TextChoices):
    UNVERIFIED = "unverified", "Not verified"
    VERIFIED = "verified", "Verified"
    FAILED = "failed", "Verification failed"


class Bucket(models.Model):
    """A bucket of one tenant. ROLE buckets are on AWS S3 (no endpoint URL) and have a role ARN;
    KEYS buckets have an access key pair. Nothing is ever reached with the portal's own identity."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="buckets")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=63)
    region = models.CharField(max_length=64)
    endpoint_url = models.CharField(max_length=300, blank=True)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.DESTINATION)
    auth_mode = models.CharField(max_length=16, choices=AuthMode.choices, default=AuthMode.KEYS)
    access_key_id = models.CharField(max_length=128, blank=True)
    secret_access_key = EncryptedTextField(blank=True)
    role_arn = models.CharField(max_length=2048, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNVERIFIED)
    checks = models.JSONField(default=list, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        # ``endpoint_url`` is stored normalised (``rules.normalise_endpoint``); "" is AWS S3.
        constraints = [
            # A tenant registers a bucket once (purpose "both" serves backups and restores).
            models.UniqueConstraint(fields=["tenant", "name", "endpoint_url"], name="bucket_unique_per_tenant"),
            # One *verified* registration per bucket in the whole portal: the first tenant to prove
            # access holds it, others are refused, even when two verifications race. Unverified rows
            # do not count, so naming another customer's bucket first blocks nobody.
            models.UniqueConstraint(fields=["name", "endpoint_url"], condition=models.Q(status="verified"),
                                    name="bucket_verified_once"),
        ]

    def __str__(self) -> str:
        return self.name if not self.endpoint_url else f"{self.name} @ {self.endpoint_url}"

    @property
    def is_destination(self) -> bool:
        return self.purpose in (Purpose.DESTINATION, Purpose.BOTH)

    @property
    def is_source(self) -> bool:
        return self.purpose in (Purpose.SOURCE, Purpose.BOTH)

    @property
    def access_key_hint(self) -> str:
        """Enough of the key id to recognise it, never the secret."""
        key = self.access_key_id
        return f"{key[:4]}…{key[-4:]}" if len(key) > 8 else ("set" if key else "")

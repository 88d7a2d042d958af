"""Provider connections: a tenant's Google / Microsoft app credentials and the mailboxes that consented.

A :class:`ProviderConnection` holds what the tenant registered with the provider (an OAuth web
client, a Google service account with domain-wide delegation, a Microsoft app registration).
A :class:`MailboxAuthorization` is one mailbox user's consent through that connection: the
refresh token the portal redeems for access tokens when it backs the mailbox up.

Every secret (client secret, service-account key, refresh token) is an EncryptedTextField and is
write-only everywhere: forms never render it, templates never show it, logs never print it.
"""

from __future__ import annotations

import json
import uuid

from django.conf import settings
from django.db import models

from accounts.access import TenantQuerySet
from accounts.fields import EncryptedTextField
from accounts.models import Tenant


class Provider(models.TextChoices):
    GOOGLE = "google", "Google Workspace / Gmail"
    MICROSOFT = "microsoft", "Microsoft 365"


class TokenState(models.TextChoices):
    UNKNOWN = "", "Not checked"
    VALID = "valid", "Valid"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"
    ERROR = "error", "Error"


class ProviderConnection(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="provider_connections")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    provider = models.CharField(max_length=16, choices=Provider.choices)
    name = models.CharField(max_length=100, help_text="How requests and CSV files refer to this connection.")

    # Google: OAuth web client; Microsoft: app registration (application / client id).
    client_id = models.CharField(max_length=255, blank=True)
    client_secret = EncryptedTextField(blank=True)
    # Microsoft: the directory (tenant id or domain) for sign-in and app-only tokens.
    directory_tenant = models.CharField(max_length=255, blank=True)
    # Microsoft: the tenant whose administrator granted admin consent (recorded by the callback).
    consented_tenant_id = models.CharField(max_length=64, blank=True)
    admin_consented_at = models.DateTimeField(null=True, blank=True)
    # Google: service-account JSON key (domain-wide delegation); the two public fields are shown.
    service_account_key = EncryptedTextField(blank=True)
    service_account_email = models.CharField(max_length=320, blank=True)
    service_account_client_id = models.CharField(max_length=64, blank=True)

    # The last "Test" of the connection itself (app-only token, service-account token).
    check_state = models.CharField(max_length=16, choices=TokenState.choices, blank=True, default="")
    check_detail = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="provider_connection_name_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_provider_display()})"

    @property
    def is_google(self) -> bool:
        return self.provider == Provider.GOOGLE

    @property
    def is_microsoft(self) -> bool:
        return self.provider == Provider.MICROSOFT

    @property
    def has_web_client(self) -> bool:
        """Per-user (delegated) consent is possible."""
        return bool(self.client_id and self.client_secret)

    @property
    def has_service_account(self) -> bool:
        return self.is_google and bool(self.service_account_key)

    @property
    def app_only_tenant(self) -> str:
        """Microsoft app-only tokens are issued by the tenant that granted admin consent."""
        return self.consented_tenant_id or self.directory_tenant

    @property
    def supports_app_only(self) -> bool:
        return self.is_microsoft and self.has_web_client and bool(self.app_only_tenant) and \
            self.app_only_tenant.lower() not in ("organizations", "common")

    def service_account_info(self) -> dict:
        return json.loads(self.service_account_key) if self.service_account_key else {}


class MailboxAuthorization(models.Model):
    """One mailbox user's consent through a connection (one row per connection and address)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="mailbox_authorizations")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    connection = models.ForeignKey(ProviderConnection, on_delete=models.CASCADE, related_name="authorizations")
    email = models.CharField(max_length=320, help_text="The account that consented, as the provider reports it.")
    refresh_token = EncryptedTextField(blank=True)
    scopes = models.JSONField(default=list, blank=True)
    provider_tenant_id = models.CharField(max_length=64, blank=True)  # Microsoft: tid of the account

    status = models.CharField(max_length=16, choices=TokenState.choices, blank=True, default=TokenState.VALID)
    status_detail = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    access_expires_at = models.DateTimeField(null=True, blank=True)

    consented_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    consented_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["email"]
        constraints = [models.UniqueConstraint(fields=["connection", "email"], name="mailbox_authorization_unique")]

    def __str__(self) -> str:
        return f"{self.email} via {self.connection.name}"

    @property
    def has_token(self) -> bool:
        return bool(self.refresh_token)

    @property
    def usable(self) -> bool:
        return bool(self.refresh_token) and self.status != TokenState.REVOKED

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])

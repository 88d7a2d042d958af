"""Reads for provider connections and mailbox authorizations (always through the tenant)."""

from __future__ import annotations

import re

from django.db.models import QuerySet

from providers.models import MailboxAuthorization, ProviderConnection

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def connections_of(tenant, provider: str | None = None) -> QuerySet[ProviderConnection]:
    qs = ProviderConnection.objects.for_tenant(tenant)
    return qs.filter(provider=provider) if provider else qs


def connection_by_ref(tenant, ref: str, provider: str | None = None) -> ProviderConnection | None:
    """A connection by uuid (the web form) or by name (CSV files), within the tenant."""
    ref = (ref or "").strip()
    if not ref:
        return None
    qs = connections_of(tenant, provider)
    if _UUID.match(ref):
        found = qs.filter(uuid=ref).first()
        if found:
            return found
    return qs.filter(name=ref).first() or qs.filter(name__iexact=ref).first()


def authorizations_of(connection: ProviderConnection) -> QuerySet[MailboxAuthorization]:
    return MailboxAuthorization.objects.for_tenant(connection.tenant).filter(connection=connection)


def authorization_for(connection: ProviderConnection, email: str, *, scope: str | None = None) -> MailboxAuthorization | None:
    """The mailbox's usable consent through ``connection`` (with ``scope`` if given), else None."""
    found = authorizations_of(connection).filter(email=(email or "").strip().lower()).first()
    if found is None or not found.usable or (scope and not found.has_scope(scope)):
        return None
    return found


def requests_using(connection: ProviderConnection):
    from requests_app.models import MigrationRequest

    return MigrationRequest.objects.for_tenant(connection.tenant).filter(options__connection=str(connection.uuid))

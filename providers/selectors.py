"""Reads for provider connections and mailbox authorizations (always through the tenant)."""

from __future__ import annotations

import re
import uuid

from django.db.models import QuerySet

from providers.models import MailboxAuthorization, ProviderConnection

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def connections_of(tenant, provider: str | None = None) -> QuerySet[ProviderConnection]:
    qs = ProviderConnection.objects.for_tenant(tenant)
    return qs.filter(provider=provider) if provider else qs


def connection_by_ref(tenant, ref: str, provider: str | None = None) -> ProviderConnection | None:
    """A connection by uuid (the web form) or by name (CSV files), within the tenant."""
    return pick_connection(list(connections_of(tenant, provider)), ref) if (ref or "").strip() else None


def pick_connection(connections: list[ProviderConnection], ref: str) -> ProviderConnection | None:
    """The connection ``ref`` names among ``connections`` (one tenant's): its uuid, else its exact
    name, else its name ignoring case."""
    ref = (ref or "").strip()
    if not ref:
        return None
    if _UUID.match(ref):
        wanted = uuid.UUID(ref)
        for connection in connections:
            if connection.uuid == wanted:
                return connection
    for same in (lambda c: c.name == ref, lambda c: c.name.lower() == ref.lower()):
        for connection in connections:
            if same(connection):
                return connection
    return None


def authorizations_of(connection: ProviderConnection) -> QuerySet[MailboxAuthorization]:
    return MailboxAuthorization.objects.for_tenant(connection.tenant).filter(connection=connection)


def authorization_for(connection: ProviderConnection, email: str, *, scope: str | None = None) -> MailboxAuthorization | None:
    """The mailbox's usable consent through ``connection`` (with ``scope`` if given), else None."""
    return usable_consent(authorizations_of(connection).filter(email=(email or "").strip().lower()).first(), scope)


def usable_consent(found: MailboxAuthorization | None, scope: str | None = None) -> MailboxAuthorization | None:
    """``found`` if it can be used now (with ``scope`` if given), else None."""
    if found is None or not found.usable or (scope and not found.has_scope(scope)):
        return None
    return found


def requests_using(connection: ProviderConnection):
    from requests_app.models import MigrationRequest

    return MigrationRequest.objects.for_tenant(connection.tenant).filter(options__connection=str(connection.uuid))

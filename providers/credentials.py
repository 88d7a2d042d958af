"""Provider clients and credentials built from a connection and the portal's endpoint settings.

The one place that turns stored rows into connector objects (GoogleClient, MicrosoftClient,
google-auth credentials, MicrosoftTokenProvider), so the consent views, the connection tests
and the workers all talk to the same endpoints (settings GOOGLE_*, GMAIL_API_URL,
MICROSOFT_*, LEGACYFLO_CA_BUNDLE) in the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import requests
from django.conf import settings

from connectors.sources import tokens
from providers.models import MailboxAuthorization, ProviderConnection

GOOGLE_USER_SCOPES = (tokens.GMAIL_READONLY_SCOPE,)
# What a Google Workspace admin authorises for the service account's client id (Admin console →
# Security → API controls → Domain-wide delegation): IMAP needs mail.google.com, the API readonly.
GOOGLE_DELEGATION_SCOPES = (tokens.GMAIL_IMAP_SCOPE, tokens.GMAIL_READONLY_SCOPE)

# Delegated Microsoft consent is asked per purpose: one token request may name one resource only,
# and a refresh token redeems for every scope the user consented to (Graph and IMAP alike).
MICROSOFT_PURPOSES: dict[str, tuple[str, ...]] = {
    "graph": tokens.GRAPH_MAIL_SCOPES,
    "imap": (tokens.OUTLOOK_IMAP_DELEGATED_SCOPE,),
}
GRAPH_READ_SCOPE = tokens.GRAPH_MAIL_SCOPES[0]
OUTLOOK_IMAP_SCOPE = tokens.OUTLOOK_IMAP_DELEGATED_SCOPE


def ca_bundle() -> str | None:
    return settings.LEGACYFLO_CA_BUNDLE or None


def http_session() -> requests.Session:
    return tokens.http_session(ca_bundle())


def google_client(connection: ProviderConnection) -> tokens.GoogleClient:
    return tokens.GoogleClient(connection.client_id, connection.client_secret,
                               auth_uri=settings.GOOGLE_AUTH_URI, token_uri=settings.GOOGLE_TOKEN_URI,
                               revoke_uri=settings.GOOGLE_REVOKE_URI)


def microsoft_client(connection: ProviderConnection, *, tenant: str | None = None) -> tokens.MicrosoftClient:
    """Delegated sign-in uses the configured directory (or any work account); app-only passes ``tenant``."""
    return tokens.MicrosoftClient(connection.client_id, connection.client_secret,
                                  tenant=tenant or connection.directory_tenant or "organizations",
                                  authority_host=settings.MICROSOFT_AUTHORITY_HOST, ca_bundle=ca_bundle())


def google_service_account(connection: ProviderConnection, *, subject: str, scopes: Sequence[str]):
    """Domain-wide delegation: the service account acting as ``subject``."""
    return tokens.google_service_account_credentials(connection.service_account_info(), subject=subject,
                                                     scopes=scopes, token_uri=settings.GOOGLE_TOKEN_URI)


def google_user(connection: ProviderConnection, authorization: MailboxAuthorization):
    return tokens.google_user_credentials(google_client(connection), refresh_token=authorization.refresh_token,
                                          scopes=GOOGLE_USER_SCOPES)


def microsoft_delegated(connection: ProviderConnection, authorization: MailboxAuthorization, *,
                        scopes: Sequence[str],
                        on_refresh_token: Callable[[str], None] | None = None) -> tokens.MicrosoftTokenProvider:
    """Tokens from the mailbox user's refresh token; Microsoft rotates it, ``on_refresh_token`` stores each."""
    return tokens.MicrosoftTokenProvider(microsoft_client(connection), scopes=scopes,
                                         refresh_token=authorization.refresh_token,
                                         on_refresh_token=on_refresh_token)


def microsoft_app_only(connection: ProviderConnection, *, scopes: Sequence[str]) -> tokens.MicrosoftTokenProvider:
    tenant = connection.app_only_tenant
    return tokens.MicrosoftTokenProvider(microsoft_client(connection, tenant=tenant), scopes=scopes, tenant=tenant)


def redirect_uri(request, route: str) -> str:
    """The absolute callback URL registered with the provider (LEGACYFLO_PUBLIC_URL when set)."""
    from django.urls import reverse

    path = reverse(route)
    if settings.LEGACYFLO_PUBLIC_URL:
        return settings.LEGACYFLO_PUBLIC_URL + path
    return request.build_absolute_uri(path)

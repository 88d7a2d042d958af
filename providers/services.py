"""Writes for provider connections and mailbox authorizations. Atomic where they touch the
database, audited (facts only: never a secret, token or key), network calls outside transactions.

Errors the admin can act on are raised as ``connectors.sources.tokens.OAuthError`` (or TransientError for
network trouble) or Django ``ValidationError``; their messages are safe to show.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from accounts.audit import audit
from connectors import oauth
from connectors.model import TransientError
from connectors.sources import tokens
from providers import credentials
from providers.consent import PendingConsent
from providers.models import MailboxAuthorization, Provider, ProviderConnection, TokenState

log = logging.getLogger(__name__)


# Error reports hide every local of the functions marked @sensitive_variables() and of what they
# call (legacyflo.errorreports): they handle client secrets, keys, codes and tokens.


# --- connections -------------------------------------------------------------------------------
@sensitive_variables()
def parse_service_account_key(text: str) -> dict:
    """The Google JSON key's fields, checked; messages never quote the key."""
    try:
        info = json.loads(text)
    except ValueError:
        raise ValidationError("This is not a JSON key file (download it again from Google Cloud → "
                              "IAM → Service accounts → Keys → Add key → JSON).") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValidationError("This JSON is not a service-account key (its type must be service_account).")
    missing = [k for k in ("client_email", "client_id", "private_key", "token_uri") if not info.get(k)]
    if missing:
        raise ValidationError(f"The key file lacks {', '.join(missing)}.")
    if "PRIVATE KEY" not in str(info["private_key"]):
        raise ValidationError("The key file's private_key is not a PEM private key.")
    return info


def _name_taken(tenant, name: str, exclude_pk: int | None = None) -> bool:
    qs = ProviderConnection.objects.for_tenant(tenant).filter(name__iexact=name)
    return qs.exclude(pk=exclude_pk).exists() if exclude_pk else qs.exists()


@sensitive_variables()
def _apply_service_account(connection: ProviderConnection, key_text: str) -> None:
    info = parse_service_account_key(key_text)
    connection.service_account_key = json.dumps(info)
    connection.service_account_email = info["client_email"]
    connection.service_account_client_id = str(info["client_id"])


@sensitive_variables()
@transaction.atomic
def connection_create(*, tenant, actor, provider: str, name: str, client_id: str = "", client_secret: str = "",
                      directory_tenant: str = "", service_account_key: str = "", request=None) -> ProviderConnection:
    name = name.strip()
    if _name_taken(tenant, name):
        raise ValidationError(f"A connection named {name} already exists.")
    if provider not in Provider.values:
        raise ValidationError("Unknown provider.")
    connection = ProviderConnection(
        tenant=tenant, provider=provider, name=name, client_id=client_id.strip(), client_secret=client_secret,
        directory_tenant=directory_tenant.strip() if provider == Provider.MICROSOFT else "",
        created_by=actor if getattr(actor, "is_authenticated", False) else None)
    if service_account_key and provider == Provider.GOOGLE:
        _apply_service_account(connection, service_account_key)
    if not connection.has_web_client and not connection.has_service_account:
        raise ValidationError("Give a client id and secret" + (" or a service-account key." if provider == Provider.GOOGLE else "."))
    connection.save()
    audit(tenant=tenant, actor=actor, action="provider.connection_create", target=connection.name,
          detail={"provider": provider, "client_id": connection.client_id,
                  "client_secret": bool(client_secret), "service_account": connection.service_account_email,
                  "directory_tenant": connection.directory_tenant}, request=request)
    return connection


@sensitive_variables()
@transaction.atomic
def connection_update(*, connection: ProviderConnection, actor, name: str, client_id: str, client_secret: str = "",
                      directory_tenant: str = "", service_account_key: str = "", request=None) -> ProviderConnection:
    """Change a connection; empty secret fields keep the stored secret (they are write-only)."""
    connection = ProviderConnection.objects.select_for_update().get(pk=connection.pk)
    name, client_id = name.strip(), client_id.strip()
    if _name_taken(connection.tenant, name, exclude_pk=connection.pk):
        raise ValidationError(f"A connection named {name} already exists.")
    changed = []
    if name != connection.name:
        changed.append("name")
    client_changed = client_id != connection.client_id
    if client_changed:
        changed.append("client_id")
    connection.name, connection.client_id = name, client_id
    if client_secret:
        connection.client_secret = client_secret
        changed.append("client_secret")
    if connection.is_microsoft and directory_tenant.strip() != connection.directory_tenant:
        connection.directory_tenant = directory_tenant.strip()
        changed.append("directory_tenant")
    if service_account_key and connection.is_google:
        _apply_service_account(connection, service_account_key)
        changed.append("service_account_key")
    if client_changed:
        # Refresh tokens and admin consent belong to the old app: they cannot be used any more.
        connection.consented_tenant_id, connection.admin_consented_at = "", None
        MailboxAuthorization.objects.filter(connection=connection).update(
            refresh_token="", status=TokenState.REVOKED, status_detail="The connection's client id changed: connect the mailbox again.")
    connection.check_state, connection.check_detail = TokenState.UNKNOWN, ""
    connection.save()
    audit(tenant=connection.tenant, actor=actor, action="provider.credentials_change", target=connection.name,
          detail={"changed": changed}, request=request)
    return connection


def connection_remove(*, connection: ProviderConnection, actor, request=None) -> None:
    """Forget a connection and its mailbox authorizations (Google tokens are revoked, best effort).

    Refused while a queued or running request uses it.
    """
    from providers.selectors import requests_using
    from requests_app.models import ACTIVE_STATES

    if requests_using(connection).filter(state__in=ACTIVE_STATES).exists():
        raise ValidationError("Queued or running requests use this connection; wait for them or cancel them first.")
    if connection.is_google:
        client = credentials.google_client(connection)
        for authorization in connection.authorizations.exclude(refresh_token=""):
            try:
                oauth.google_revoke(client, authorization.refresh_token)
            except TransientError:
                log.warning("could not revoke the Google token of %s while removing %s", authorization.email, connection.name)
    with transaction.atomic():
        name, tenant = connection.name, connection.tenant
        connection.delete()
        audit(tenant=tenant, actor=actor, action="provider.connection_remove", target=name, request=request)


@sensitive_variables()
def connection_check(*, connection: ProviderConnection, actor, mailbox: str = "", request=None) -> ProviderConnection:
    """Test what the connection can do without a user's consent and record the outcome.

    Google: the service account's delegated tokens for ``mailbox``, one per scope (an admin may
    have authorised only one of them). Microsoft: an app-only token from the consented tenant.
    """
    mailbox = mailbox.strip().lower()
    if connection.is_google:
        if not connection.has_service_account:
            raise ValidationError("This connection has no service account; test each consented mailbox instead.")
        if not mailbox:
            raise ValidationError("Enter a mailbox of your domain to test the service account's delegation.")
        results, ok = [], True
        for scope, label in ((tokens.GMAIL_IMAP_SCOPE, "IMAP (GMAILOAUTH)"), (tokens.GMAIL_READONLY_SCOPE, "Gmail API (GMAILAPI)")):
            try:
                tokens.google_access_token(credentials.google_service_account(connection, subject=mailbox, scopes=[scope]),
                                           session=credentials.http_session())
                results.append(f"{label}: a token for {mailbox} was issued.")
            except (tokens.OAuthError, TransientError) as exc:
                ok = False
                results.append(f"{label}: {exc}")
        state, detail = (TokenState.VALID if ok else TokenState.ERROR), " ".join(results)
    else:
        if not connection.supports_app_only:
            raise ValidationError("App-only access needs the directory (tenant id or domain) or a completed admin consent.")
        try:
            tokens.microsoft_app_token(credentials.microsoft_client(connection, tenant=connection.app_only_tenant),
                                       tenant=connection.app_only_tenant)
            state, detail = TokenState.VALID, f"Microsoft issued an app-only token for {connection.app_only_tenant}."
        except (tokens.OAuthError, TransientError) as exc:
            state, detail = TokenState.ERROR, str(exc)
    with transaction.atomic():
        ProviderConnection.objects.filter(pk=connection.pk).update(check_state=state, check_detail=detail[:2000],
                                                                   checked_at=timezone.now())
        audit(tenant=connection.tenant, actor=actor, action="provider.connection_test", target=connection.name,
              detail={"state": state, "mailbox": mailbox}, request=request)
    connection.refresh_from_db()
    return connection


# --- consent -------------------------------------------------------------------------------------
@sensitive_variables()
def _store_authorization(*, connection: ProviderConnection, actor, email: str, refresh_token: str,
                         scopes: list[str], provider_tenant_id: str = "", expires_at=None,
                         request=None) -> MailboxAuthorization:
    with transaction.atomic():
        authorization = (MailboxAuthorization.objects.select_for_update()
                         .filter(connection=connection, email=email).first())
        now = timezone.now()
        if authorization is None:
            authorization = MailboxAuthorization(tenant=connection.tenant, connection=connection, email=email)
            merged = list(scopes)
        else:
            old = authorization.scopes if authorization.usable else []
            merged = sorted(set(old) | set(scopes))
        authorization.refresh_token = refresh_token
        authorization.scopes = merged
        authorization.provider_tenant_id = provider_tenant_id or authorization.provider_tenant_id
        authorization.status, authorization.status_detail = TokenState.VALID, "Consent granted."
        authorization.checked_at, authorization.access_expires_at = now, expires_at
        authorization.consented_by = actor if getattr(actor, "is_authenticated", False) else None
        authorization.consented_at = now
        authorization.save()
        audit(tenant=connection.tenant, actor=actor, action="provider.consent_granted", target=email,
              detail={"connection": connection.name, "provider": connection.provider, "scopes": list(scopes)},
              request=request)
    return authorization


@sensitive_variables()
def consent_google_finish(*, connection: ProviderConnection, actor, pending: PendingConsent,
                          authorization_response: str, request=None) -> MailboxAuthorization:
    """Redeem the code (state and PKCE checked), learn which account consented, store its refresh token."""
    client = credentials.google_client(connection)
    issued = oauth.google_exchange_code(client, redirect_uri=pending.redirect_uri, scopes=list(credentials.GOOGLE_USER_SCOPES),
                                        authorization_response=authorization_response, state=pending.state,
                                        code_verifier=pending.code_verifier)
    if not issued.refresh_token:
        raise tokens.OAuthError("Google issued no refresh token, so backups could not run unattended. "
                                "Remove LegacyFlo's access in the Google account's security settings and connect again.")
    user_credentials = tokens.google_user_credentials(client, refresh_token=issued.refresh_token,
                                                      scopes=list(credentials.GOOGLE_USER_SCOPES),
                                                     access_token=issued.access_token)
    email = oauth.google_account_email(user_credentials, api_url=settings.GMAIL_API_URL,
                                       session=credentials.http_session()).strip().lower()
    return _store_authorization(connection=connection, actor=actor, email=email, refresh_token=issued.refresh_token,
                                scopes=list(issued.scopes), expires_at=issued.expires_at, request=request)


@sensitive_variables()
def consent_microsoft_finish(*, connection: ProviderConnection, actor, pending: PendingConsent,
                             query: dict[str, str], request=None) -> MailboxAuthorization:
    """msal checks state, nonce and PKCE; the id token names the account that consented."""
    issued = oauth.microsoft_finish_auth(credentials.microsoft_client(connection), pending.flow, query)
    email = (issued.username or "").strip().lower()
    if not email:
        raise tokens.OAuthError("Microsoft did not say which account signed in (no preferred_username in the id token).")
    if not issued.refresh_token:
        raise tokens.OAuthError("Microsoft issued no refresh token (offline_access was not granted); connect again.")
    scopes = list(credentials.MICROSOFT_PURPOSES.get(pending.purpose, tokens.GRAPH_MAIL_SCOPES))
    return _store_authorization(connection=connection, actor=actor, email=email, refresh_token=issued.refresh_token,
                                scopes=scopes, provider_tenant_id=issued.tenant_id or "",
                                expires_at=issued.expires_at, request=request)


@sensitive_variables()
def admin_consent_finish(*, connection: ProviderConnection, actor, pending: PendingConsent,
                         query: dict[str, str], request=None) -> ProviderConnection:
    """Record the tenant whose administrator granted the app's application permissions."""
    tenant_id = oauth.parse_admin_consent(query, state=pending.state)
    with transaction.atomic():
        ProviderConnection.objects.filter(pk=connection.pk).update(
            consented_tenant_id=tenant_id[:64], admin_consented_at=timezone.now(),
            check_state=TokenState.UNKNOWN, check_detail="")
        audit(tenant=connection.tenant, actor=actor, action="provider.admin_consent_granted", target=connection.name,
              detail={"microsoft_tenant": tenant_id}, request=request)
    connection.refresh_from_db()
    return connection


# --- mailbox authorizations ---------------------------------------------------------------------
def _microsoft_state(exc: tokens.OAuthError) -> str:
    """AADSTS700082 is an inactive (expired) refresh token; other refusals mean consent is gone."""
    return TokenState.EXPIRED if "700082" in str(exc) else TokenState.REVOKED


@sensitive_variables()
def authorization_check(*, authorization: MailboxAuthorization, actor, request=None) -> MailboxAuthorization:
    """Redeem the refresh token once and record whether it still works (Microsoft's rotated one is kept)."""
    connection = authorization.connection
    new_refresh, expires_at = "", None
    if not authorization.refresh_token:
        state, detail = TokenState.REVOKED, "No token is stored: connect the mailbox again."
    elif connection.is_google:
        status = oauth.google_token_status(credentials.google_client(connection), refresh_token=authorization.refresh_token)
        state, detail, expires_at = status.state, status.detail, status.expires_at
    else:
        purpose = "graph" if authorization.has_scope(credentials.GRAPH_READ_SCOPE) else "imap"
        try:
            issued = tokens.microsoft_refresh(credentials.microsoft_client(connection), authorization.refresh_token,
                                              scopes=credentials.MICROSOFT_PURPOSES[purpose])
            state, detail, expires_at = TokenState.VALID, "Microsoft issued a fresh access token.", issued.expires_at
            new_refresh = issued.refresh_token or ""
        except tokens.TokenRevoked as exc:
            state, detail = _microsoft_state(exc), str(exc)
        except tokens.ConsentRequired as exc:
            state, detail = TokenState.REVOKED, str(exc)
    with transaction.atomic():
        fields = {"status": state, "status_detail": detail[:2000], "checked_at": timezone.now(),
                  "access_expires_at": expires_at}
        if new_refresh and new_refresh != authorization.refresh_token:
            authorization.refresh_token = new_refresh
            authorization.save(update_fields=["refresh_token", "updated_at"])
        MailboxAuthorization.objects.filter(pk=authorization.pk).update(**fields)
        audit(tenant=authorization.tenant, actor=actor, action="provider.consent_test", target=authorization.email,
              detail={"connection": connection.name, "state": state}, request=request)
    authorization.refresh_from_db()
    return authorization


@sensitive_variables()
def authorization_revoke(*, authorization: MailboxAuthorization, actor, request=None) -> MailboxAuthorization:
    """Withdraw the mailbox's consent: Google revokes the grant; Microsoft has no per-token
    revocation, so the stored refresh token is destroyed (remove the app in Entra to go further)."""
    connection = authorization.connection
    remote = "none"
    if authorization.refresh_token and connection.is_google:
        revoked = oauth.google_revoke(credentials.google_client(connection), authorization.refresh_token)
        remote = "revoked" if revoked else "already invalid"
    with transaction.atomic():
        authorization.refresh_token = ""
        authorization.status = TokenState.REVOKED
        authorization.status_detail = ("Revoked at Google and deleted from the portal." if connection.is_google else
                                       "Deleted from the portal (Microsoft has no per-token revocation; remove the "
                                       "app's consent in Entra ID to withdraw it entirely).")
        authorization.checked_at = timezone.now()
        authorization.access_expires_at = None
        authorization.save()
        audit(tenant=authorization.tenant, actor=actor, action="provider.consent_revoked", target=authorization.email,
              detail={"connection": connection.name, "provider": connection.provider, "at_provider": remote},
              request=request)
    return authorization


@sensitive_variables()
def authorization_store_refresh_token(*, authorization_id: int, refresh_token: str) -> None:
    """Keep the refresh token Microsoft rotated during a backup (the old one may stop working).

    Called from worker threads; a single UPDATE, not audited (it happens on every run and the
    consent itself did not change).
    """
    if not refresh_token:
        return
    # A consent revoked while the backup ran stays revoked (its token was emptied).
    (MailboxAuthorization.objects.filter(pk=authorization_id).exclude(refresh_token="")
     .exclude(status=TokenState.REVOKED).update(refresh_token=refresh_token, updated_at=timezone.now()))

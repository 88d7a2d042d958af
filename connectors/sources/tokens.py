"""OAuth access tokens for the sources, thin layers over google-auth and msal.

What a source needs to authenticate: Google credentials (a user's refresh token, or a service
account's domain-wide delegation) and the access tokens they give, Microsoft token providers
(delegated with a refresh token that Microsoft rotates, or app-only), the SASL XOAUTH2 string,
and the errors a refused token becomes. The consent flows the portal runs (authorization URLs,
code exchange, admin consent, revocation, token health) are ``connectors.oauth``.

Every provider URL is passed in (the portal's settings GOOGLE_TOKEN_URI, MICROSOFT_AUTHORITY_HOST,
MICROSOFT_GRAPH_URL and the extra CA LEGACYFLO_CA_BUNDLE), so the same code talks to
Google/Microsoft or to the local fakes. Failures the user can act on raise ``OAuthError``
subclasses whose message is safe to show; network trouble raises ``TransientError``. Tokens and
secrets are never logged or put in messages, and the token dataclasses keep them out of ``repr``.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import requests
from google.auth.exceptions import RefreshError, TransportError
from google.auth.transport.requests import Request as GoogleAuthRequest

from connectors.model import AuthenticationFailed, TransientError

GMAIL_READONLY_SCOPE = "https://www.googleapis.com/auth/gmail.readonly"
GMAIL_IMAP_SCOPE = "https://mail.google.com/"
GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
GRAPH_MAIL_SCOPES = ("https://graph.microsoft.com/Mail.Read", "https://graph.microsoft.com/User.Read")
OUTLOOK_IMAP_APP_SCOPE = "https://outlook.office365.com/.default"
OUTLOOK_IMAP_DELEGATED_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"
GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_REVOKE_URI = "https://oauth2.googleapis.com/revoke"
MICROSOFT_AUTHORITY_HOST = "https://login.microsoftonline.com"
MICROSOFT_GRAPH_URL = "https://graph.microsoft.com/v1.0"
HTTP_TIMEOUT = 30


class OAuthError(AuthenticationFailed):
    """An OAuth step failed in a way the user or the admin must fix; ``str()`` is safe to show."""


class ConsentDenied(OAuthError):
    """The user (or admin) pressed Deny / Cancel on the consent page."""


class StateMismatch(OAuthError):
    """The redirect's ``state`` is not the one this session started: a stale tab or a forged link."""


class AuthorizationCodeRejected(OAuthError):
    """The provider refused the authorization code: expired, already used, or for another client."""


class TokenRevoked(OAuthError):
    """The stored refresh token no longer works (revoked by the user/admin, or expired)."""


class ConsentRequired(OAuthError):
    """The permission asked for was never consented (sign in again and accept it)."""


class AdminConsentRequired(ConsentRequired):
    """App-only access needs a tenant administrator to grant consent first."""


class PinnedCASession(requests.Session):
    """A requests session that always verifies TLS with ``ca_bundle``.

    requests lets ``REQUESTS_CA_BUNDLE`` override ``Session.verify``; passing ``verify`` on every
    request wins over the environment, so a configured CA bundle is really the one used.
    """

    def __init__(self, ca_bundle: str):
        super().__init__()
        self.verify = ca_bundle

    def request(self, method, url, **kwargs):
        if kwargs.get("verify") in (None, True):
            kwargs["verify"] = self.verify
        return super().request(method, url, **kwargs)


def http_session(ca_bundle: str | None = None) -> requests.Session:
    """The session every provider call uses: the extra CA if one is configured, else the defaults."""
    return PinnedCASession(ca_bundle) if ca_bundle else requests.Session()


def xoauth2_string(user: str, access_token: str) -> str:
    """The SASL XOAUTH2 initial response (before base64), as Gmail and Exchange Online expect it."""
    return f"user={user}\x01auth=Bearer {access_token}\x01\x01"


def expiry_of(expires_in) -> dt.datetime | None:
    try:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=int(expires_in))
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class GoogleClient:
    """A Google OAuth web client and the endpoints it talks to."""

    client_id: str
    client_secret: str = field(repr=False)
    auth_uri: str = GOOGLE_AUTH_URI
    token_uri: str = GOOGLE_TOKEN_URI
    revoke_uri: str = GOOGLE_REVOKE_URI

    @property
    def tokeninfo_uri(self) -> str:
        """Google serves tokeninfo next to the token endpoint (oauth2.googleapis.com/tokeninfo)."""
        return self.token_uri.rsplit("/", 1)[0] + "/tokeninfo"

    def client_config(self, redirect_uri: str) -> dict:
        return {"web": {"client_id": self.client_id, "client_secret": self.client_secret,
                        "auth_uri": self.auth_uri, "token_uri": self.token_uri,
                        "redirect_uris": [redirect_uri]}}


def google_user_credentials(client: GoogleClient, *, refresh_token: str, scopes: Sequence[str] | None = None,
                            access_token: str | None = None):
    """Credentials from a stored refresh token; google-auth refreshes them when needed."""
    from google.oauth2.credentials import Credentials

    return Credentials(token=access_token, refresh_token=refresh_token, token_uri=client.token_uri,
                       client_id=client.client_id, client_secret=client.client_secret,
                       scopes=list(scopes) if scopes else None)


def google_service_account_credentials(info: Mapping, *, subject: str, scopes: Sequence[str],
                                       token_uri: str | None = None):
    """Domain-wide delegation: the service account acts as ``subject``.

    ``token_uri`` (GOOGLE_TOKEN_URI) replaces the key file's own; the JWT ``aud`` stays Google's.
    """
    from google.oauth2 import service_account

    key = dict(info)
    if token_uri:
        key["token_uri"] = token_uri
    try:
        credentials = service_account.Credentials.from_service_account_info(key, scopes=list(scopes))
    except (ValueError, KeyError) as exc:
        raise OAuthError("The service-account key is not a valid Google JSON key file "
                         f"({type(exc).__name__}: missing or malformed field).") from None
    return credentials.with_subject(subject)


def google_refresh_failure(exc: RefreshError) -> OAuthError | TransientError:
    """The user-facing error for a failed Google token refresh or JWT bearer grant."""
    if getattr(exc, "retryable", False):
        return TransientError("Google's token endpoint is temporarily failing; try again later.")
    # google-auth words it "<error>: <error_description>"; neither part holds a token.
    text = str(exc.args[0]) if exc.args else ""
    error, _, description = text.partition(": ")
    if "Invalid email or User ID" in description:
        return OAuthError("Google does not know the impersonated user (check the mailbox address).")
    if "Invalid JWT" in description:
        return OAuthError("Google rejected the service-account key (" + description.rstrip(".")
                          + "): the key may have been deleted or belong to another account.")
    if error == "unauthorized_client":
        return OAuthError("The service account is not authorized for these scopes: add them to its "
                          "domain-wide delegation in the Google Admin console.")
    if error == "invalid_grant":
        return TokenRevoked("Google no longer accepts the stored authorization (expired or revoked). "
                            "Please connect the mailbox again.")
    return OAuthError(f"Google refused to issue an access token: {error}"
                      + (f" ({description})" if description else ""))


def google_access_token(credentials, *, session: requests.Session | None = None) -> str:
    """A valid access token (refreshed if needed), e.g. for IMAP XOAUTH2."""
    if not credentials.valid:
        try:
            credentials.refresh(GoogleAuthRequest(session=session or http_session()))
        except RefreshError as exc:
            raise google_refresh_failure(exc) from None
        except TransportError as exc:
            raise TransientError(f"Cannot reach Google's token endpoint ({type(exc).__name__}).") from None
    return credentials.token


@dataclass(frozen=True)
class MicrosoftClient:
    """An Entra ID (Azure AD) app registration and where its authority lives.

    ``tenant`` is a tenant id or domain for app-only access, or ``organizations`` / ``common``
    for delegated sign-in of any work account.
    """

    client_id: str
    client_secret: str = field(repr=False)
    tenant: str = "organizations"
    authority_host: str = MICROSOFT_AUTHORITY_HOST
    ca_bundle: str | None = None

    def authority(self, tenant: str | None = None) -> str:
        return f"{self.authority_host.rstrip('/')}/{tenant or self.tenant}"


@dataclass(frozen=True)
class MicrosoftTokens:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: dt.datetime | None
    scopes: tuple[str, ...]
    username: str | None = None  # preferred_username (UPN) of the signed-in user, delegated only
    tenant_id: str | None = None
    object_id: str | None = None


def msal_app(client: MicrosoftClient, *, tenant: str | None = None, token_cache=None):
    """A ConfidentialClientApplication on the configured authority (OIDC discovery, no instance discovery)."""
    import msal

    try:
        return msal.ConfidentialClientApplication(
            client.client_id, client_credential=client.client_secret,
            authority=client.authority(tenant), instance_discovery=False, token_cache=token_cache,
            http_client=http_session(client.ca_bundle) if client.ca_bundle else None, timeout=HTTP_TIMEOUT)
    except ValueError as exc:
        raise OAuthError(f"Microsoft does not know the tenant {tenant or client.tenant!r} "
                         f"({str(exc).split('.', 1)[0]}).") from None
    except requests.RequestException as exc:
        raise TransientError(f"Cannot reach the Microsoft identity platform ({type(exc).__name__}).") from None


def microsoft_error(result: Mapping, *, action: str) -> OAuthError:
    error = result.get("error", "error")
    description = str(result.get("error_description", "")).split("\r\n", 1)[0].split("\n", 1)[0]
    codes = set(result.get("error_codes") or [])
    if error == "access_denied":
        return ConsentDenied(f"Consent was declined on Microsoft's page ({action}).")
    if codes & {700016, 7000229, 500011}:
        return AdminConsentRequired(
            f"An administrator of the tenant must grant consent to the app first ({action}): {description}")
    if 65001 in codes or "AADSTS65001" in description:
        return ConsentRequired(f"The permission was never consented ({action}): sign in again and accept "
                               f"it, or ask an administrator to consent for the organization. ({description})")
    if error == "invalid_grant":
        if codes & {70008, 54005, 70002, 9002313} or action == "authorization code":
            return AuthorizationCodeRejected(
                f"Microsoft rejected the authorization code (expired or already used). Please sign in "
                f"again. ({description})")
        return TokenRevoked(f"Microsoft no longer accepts the stored authorization ({description}). "
                            "Please connect the mailbox again.")
    return OAuthError(f"Microsoft refused the {action}: {error} ({description})")


def microsoft_tokens(result: Mapping) -> MicrosoftTokens:
    claims = result.get("id_token_claims") or {}
    return MicrosoftTokens(result["access_token"], result.get("refresh_token"),
                           expiry_of(result.get("expires_in")), tuple(str(result.get("scope", "")).split()),
                           claims.get("preferred_username"), claims.get("tid"), claims.get("oid"))


def microsoft_refresh(client: MicrosoftClient, refresh_token: str, *, scopes: Sequence[str]) -> MicrosoftTokens:
    """A new access token (and usually a new refresh token: store it) for ``scopes``."""
    try:
        result = msal_app(client).acquire_token_by_refresh_token(refresh_token, list(scopes))
    except requests.RequestException as exc:
        raise TransientError(f"Cannot reach the Microsoft identity platform ({type(exc).__name__}).") from None
    if "access_token" not in result:
        raise microsoft_error(result, action="token refresh")
    return microsoft_tokens(result)


def microsoft_app_token(client: MicrosoftClient, *, scopes: Sequence[str] = (GRAPH_DEFAULT_SCOPE,),
                        tenant: str | None = None) -> MicrosoftTokens:
    """App-only token (client credentials) for a tenant that granted admin consent."""
    try:
        result = msal_app(client, tenant=tenant).acquire_token_for_client(list(scopes))
    except requests.RequestException as exc:
        raise TransientError(f"Cannot reach the Microsoft identity platform ({type(exc).__name__}).") from None
    if "access_token" not in result:
        raise microsoft_error(result, action="app-only token request")
    return microsoft_tokens(result)


def microsoft_imap_token(client: MicrosoftClient, *, refresh_token: str | None = None) -> MicrosoftTokens:
    """An Exchange Online IMAP token: app-only without ``refresh_token``, delegated with one."""
    if refresh_token:
        return microsoft_refresh(client, refresh_token, scopes=[OUTLOOK_IMAP_DELEGATED_SCOPE])
    return microsoft_app_token(client, scopes=[OUTLOOK_IMAP_APP_SCOPE])


class MicrosoftTokenProvider:
    """``provider(force_refresh=False) -> access token`` for Graph or IMAP, thread-safe.

    Delegated when built with a refresh token (Microsoft rotates them: ``on_refresh_token`` gets
    each new one to store); app-only otherwise (msal caches the token until shortly before expiry).
    """

    def __init__(self, client: MicrosoftClient, *, scopes: Sequence[str] = (GRAPH_DEFAULT_SCOPE,),
                 refresh_token: str | None = None, tenant: str | None = None,
                 on_refresh_token: Callable[[str], None] | None = None, margin: float = 300.0):
        self.client, self.scopes, self.tenant = client, list(scopes), tenant
        self._refresh_token = refresh_token
        self._on_refresh_token = on_refresh_token
        self._margin = margin
        self._token: str | None = None
        self._expires: float = 0.0
        self._app = None
        self._lock = threading.Lock()

    @property
    def delegated(self) -> bool:
        return self._refresh_token is not None

    def __call__(self, force_refresh: bool = False) -> str:
        with self._lock:
            if self._token and not force_refresh and time.time() < self._expires - self._margin:
                return self._token
            tokens = self._delegated() if self.delegated else self._app_only(force_refresh)
            self._token = tokens.access_token
            self._expires = tokens.expires_at.timestamp() if tokens.expires_at else time.time() + 600
            return self._token

    def _delegated(self) -> MicrosoftTokens:
        tokens = microsoft_refresh(self.client, self._refresh_token, scopes=self.scopes)
        if tokens.refresh_token and tokens.refresh_token != self._refresh_token:
            self._refresh_token = tokens.refresh_token
            if self._on_refresh_token:
                self._on_refresh_token(tokens.refresh_token)
        return tokens

    def _app_only(self, force_refresh: bool) -> MicrosoftTokens:
        if self._app is None:
            self._app = msal_app(self.client, tenant=self.tenant)
        if force_refresh:
            self._app.remove_tokens_for_client()
        try:
            result = self._app.acquire_token_for_client(self.scopes)
        except requests.RequestException as exc:
            raise TransientError(f"Cannot reach the Microsoft identity platform ({type(exc).__name__}).") from None
        if "access_token" not in result:
            raise microsoft_error(result, action="app-only token request")
        return microsoft_tokens(result)

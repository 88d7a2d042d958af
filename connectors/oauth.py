"""OAuth helpers for Google and Microsoft, thin layers over google-auth(-oauthlib) and msal.

Every provider URL is passed in (the portal's settings GOOGLE_AUTH_URI, GOOGLE_TOKEN_URI,
GOOGLE_REVOKE_URI, GMAIL_API_URL, MICROSOFT_AUTHORITY_HOST, MICROSOFT_GRAPH_URL and the extra CA
LEGACYFLO_CA_BUNDLE), so the same code talks to Google/Microsoft or to the local fakes.

Failures the user can act on raise :class:`OAuthError` subclasses whose message is safe to show;
network trouble raises ``TransientError``. Tokens and secrets are never logged or put in messages,
and the token dataclasses keep them out of ``repr``.

oauthlib refuses plain-http endpoints and redirect URIs unless ``OAUTHLIB_INSECURE_TRANSPORT=1``
(tests and local development only).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from google.auth.exceptions import RefreshError, TransportError
from google.auth.transport.requests import Request as GoogleAuthRequest

from connectors.model import AuthenticationFailed, TransientError

# --- scopes ------------------------------------------------------------------------------------
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


# --- errors ------------------------------------------------------------------------------------
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


# --- shared ----------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class TokenStatus:
    """The health of a stored credential, for the portal's connection page."""

    state: Literal["valid", "expired", "revoked"]
    detail: str
    expires_at: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return self.state == "valid"


def xoauth2_string(user: str, access_token: str) -> str:
    """The SASL XOAUTH2 initial response (before base64), as Gmail and Exchange Online expect it."""
    return f"user={user}\x01auth=Bearer {access_token}\x01\x01"


def _expires_at(expires_in) -> dt.datetime | None:
    try:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=int(expires_in))
    except (TypeError, ValueError):
        return None


# --- Google --------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class AuthorizationStart:
    """Send the user to ``url``; keep ``state`` and ``code_verifier`` in the session for the callback."""

    url: str
    state: str
    code_verifier: str = field(repr=False)

    def __iter__(self):
        """``url, state, code_verifier = google_authorization_url(...)`` works too."""
        return iter((self.url, self.state, self.code_verifier))


@dataclass(frozen=True)
class GoogleTokens:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: dt.datetime | None
    scopes: tuple[str, ...]


def _flow(client: GoogleClient, redirect_uri: str, scopes: Sequence[str], **kwargs):
    from google_auth_oauthlib.flow import Flow

    return Flow.from_client_config(client.client_config(redirect_uri), scopes=list(scopes),
                                   redirect_uri=redirect_uri, **kwargs)


def _plain_http_refusal(client: GoogleClient, redirect_uri: str) -> OAuthError | None:
    """oauthlib (not Google) refuses to finish a web flow over plain http — the callback URL or the
    token endpoint — unless OAUTHLIB_INSECURE_TRANSPORT is set. Say which address is http and
    what to do, instead of its bare "insecure_transport"."""
    from oauthlib.oauth2.rfc6749.utils import is_secure_transport

    if not is_secure_transport(redirect_uri):
        return OAuthError(
            f"LegacyFlo is reached over plain http ({redirect_uri}), and its OAuth library refuses to finish "
            "a Google sign-in over http (the authorization code would travel unencrypted); Google refused "
            "nothing, and nothing was connected. Serve the portal over https: behind a reverse proxy that "
            "terminates TLS, set LEGACYFLO_PUBLIC_URL=https://your-host (or LEGACYFLO_BEHIND_PROXY=1 when "
            "the proxy sends X-Forwarded-Proto) and register https://your-host/oauth/google/callback/ with "
            "the OAuth client. Then connect again. (A local trial on http only: OAUTHLIB_INSECURE_TRANSPORT=1.)")
    if not is_secure_transport(client.token_uri):
        return OAuthError(
            f"Google's token endpoint is configured as plain http ({client.token_uri}, GOOGLE_TOKEN_URI), and "
            "LegacyFlo's OAuth library refuses to send an authorization code over http; nothing was "
            "connected. Set GOOGLE_TOKEN_URI to an https address (the default is Google's own). "
            "(Local trials with the test fakes only: OAUTHLIB_INSECURE_TRANSPORT=1.)")
    return None


def google_authorization_url(client: GoogleClient, *, redirect_uri: str, scopes: Sequence[str],
                             login_hint: str | None = None) -> AuthorizationStart:
    """Start the web flow (offline access, consent forced so a refresh token is always issued, PKCE S256).

    Refused at once (OAuthError) when the flow could not be finished over plain http: better than
    sending the person through Google's consent for nothing.
    """
    refusal = _plain_http_refusal(client, redirect_uri)
    if refusal is not None:
        raise refusal
    flow = _flow(client, redirect_uri, scopes, autogenerate_code_verifier=True)
    extra = {"login_hint": login_hint} if login_hint else {}
    url, state = flow.authorization_url(access_type="offline", prompt="consent", **extra)
    return AuthorizationStart(url, state, flow.code_verifier)


def _callback_params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def google_exchange_code(client: GoogleClient, *, redirect_uri: str, scopes: Sequence[str],
                         authorization_response: str, state: str, code_verifier: str) -> GoogleTokens:
    """Finish the web flow from the full callback URL; check state, consent and granted scopes."""
    from oauthlib.oauth2.rfc6749 import errors as oauth_errors

    params = _callback_params(authorization_response)
    if params.get("error") == "access_denied":
        raise ConsentDenied("Access was denied on Google's consent page; nothing was connected.")
    if not state or params.get("state") != state:
        raise StateMismatch("This Google sign-in does not belong to the current session (state mismatch). "
                            "Please start the connection again.")
    if params.get("error"):
        raise OAuthError(f"Google returned an error: {params['error']}.")
    flow = _flow(client, redirect_uri, scopes, state=state, code_verifier=code_verifier)
    try:
        token = flow.fetch_token(authorization_response=authorization_response, timeout=HTTP_TIMEOUT)
    except Warning as changed:  # oauthlib: "Scope has changed" (Google adds previously granted ones)
        token = changed.token
    except oauth_errors.MismatchingStateError:
        raise StateMismatch("This Google sign-in does not belong to the current session (state "
                            "mismatch). Please start the connection again.") from None
    except oauth_errors.AccessDeniedError:
        raise ConsentDenied("Access was denied on Google's consent page; nothing was connected.") from None
    except oauth_errors.InsecureTransportError:
        raise _plain_http_refusal(client, redirect_uri) or OAuthError(
            "LegacyFlo's OAuth library refused plain http for this sign-in; serve the portal and the "
            "token endpoint over https.") from None
    except oauth_errors.InvalidGrantError as exc:
        raise AuthorizationCodeRejected(
            "Google rejected the authorization code (it expired or was already used: codes live a few "
            f"minutes). Please connect again. ({exc.description or exc.error})") from None
    except oauth_errors.OAuth2Error as exc:
        raise OAuthError(f"Google refused the token request: {exc.error}"
                         + (f" ({exc.description})" if exc.description else "")) from None
    except requests.RequestException as exc:
        raise TransientError(f"Cannot reach Google's token endpoint ({type(exc).__name__}).") from None
    granted_scope = token.get("scope") or list(scopes)  # oauthlib turns it into a list
    granted = tuple(granted_scope.split() if isinstance(granted_scope, str) else granted_scope)
    missing = set(scopes) - set(granted)
    if missing:
        raise OAuthError("The consent did not grant every permission LegacyFlo needs: "
                         + ", ".join(sorted(missing)) + ". Please connect again and allow all of them.")
    return GoogleTokens(token["access_token"], token.get("refresh_token"),
                        _expires_at(token.get("expires_in")), granted)


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


def google_token_status(client: GoogleClient, *, refresh_token: str | None = None,
                        access_token: str | None = None) -> TokenStatus:
    """Refresh tokens are checked by refreshing; access tokens with Google's tokeninfo."""
    if refresh_token:
        credentials = google_user_credentials(client, refresh_token=refresh_token)
        try:
            google_access_token(credentials)
        except TokenRevoked:
            return TokenStatus("revoked", "Google reports the authorization as expired or revoked.")
        expiry = credentials.expiry.replace(tzinfo=dt.UTC) if credentials.expiry else None
        return TokenStatus("valid", "Google issued a fresh access token.", expiry)
    try:
        answer = requests.get(client.tokeninfo_uri, params={"access_token": access_token or ""},
                              timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        raise TransientError(f"Cannot reach Google's tokeninfo endpoint ({type(exc).__name__}).") from None
    if answer.status_code == 200:
        return TokenStatus("valid", "Google accepts the access token.",
                           _expires_at(answer.json().get("expires_in")))
    return TokenStatus("expired", "Google no longer accepts the access token (expired or revoked).")


def google_revoke(client: GoogleClient, token: str) -> bool:
    """Revoke a refresh or access token (with it, the whole grant); False if it was already dead."""
    try:
        answer = requests.post(client.revoke_uri, data={"token": token}, timeout=HTTP_TIMEOUT,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    except requests.RequestException as exc:
        raise TransientError(f"Cannot reach Google's revocation endpoint ({type(exc).__name__}).") from None
    if answer.status_code == 200:
        return True
    if answer.status_code == 400:
        return False
    raise TransientError(f"Google's revocation endpoint answered HTTP {answer.status_code}.")


def google_account_email(credentials, *, api_url: str, session: requests.Session | None = None) -> str:
    """The address that consented (Gmail ``users.getProfile``), to check it is the requested mailbox."""
    token = google_access_token(credentials, session=session)
    url = api_url.rstrip("/") + "/gmail/v1/users/me/profile"
    try:
        answer = (session or http_session()).get(url, headers={"Authorization": f"Bearer {token}"},
                                                 timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        raise TransientError(f"Cannot reach the Gmail API ({type(exc).__name__}).") from None
    if answer.status_code != 200:
        raise OAuthError(f"Gmail refused to tell which account consented (HTTP {answer.status_code}).")
    return answer.json()["emailAddress"]


# --- Microsoft -----------------------------------------------------------------------------------
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


def _ms_error(result: Mapping, *, action: str) -> OAuthError:
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


def _ms_tokens(result: Mapping) -> MicrosoftTokens:
    claims = result.get("id_token_claims") or {}
    return MicrosoftTokens(result["access_token"], result.get("refresh_token"),
                           _expires_at(result.get("expires_in")), tuple(str(result.get("scope", "")).split()),
                           claims.get("preferred_username"), claims.get("tid"), claims.get("oid"))


def microsoft_start_auth(client: MicrosoftClient, *, redirect_uri: str,
                         scopes: Sequence[str] = GRAPH_MAIL_SCOPES, login_hint: str | None = None,
                         prompt: str | None = None, response_mode: str | None = None) -> dict:
    """Start delegated sign-in; keep the returned dict in the session, send the user to ``["auth_uri"]``.

    msal adds ``openid profile offline_access`` itself (passing them is an error) and handles
    state, nonce and PKCE. The default response mode is ``query`` (msal warns that ``form_post``
    is safer, but a cross-site POST does not carry a SameSite=Lax session cookie, so the view
    would lose the flow); pass ``response_mode="form_post"`` with a session cookie that allows it.
    """
    return msal_app(client).initiate_auth_code_flow(
        list(scopes), redirect_uri=redirect_uri, login_hint=login_hint, prompt=prompt,
        response_mode=response_mode)


def microsoft_finish_auth(client: MicrosoftClient, flow: Mapping, query: Mapping[str, str]) -> MicrosoftTokens:
    """Finish delegated sign-in with the callback's query parameters (``request.GET.dict()``)."""
    if query.get("error") == "access_denied":
        raise ConsentDenied("Consent was declined on Microsoft's page; nothing was connected.")
    if not flow.get("state") or query.get("state") != flow.get("state"):
        raise StateMismatch("This Microsoft sign-in does not belong to the current session (state "
                            "mismatch). Please start the connection again.")
    try:
        result = msal_app(client).acquire_token_by_auth_code_flow(dict(flow), dict(query))
    except ValueError as exc:  # msal: state mismatch, nonce mismatch, malformed flow
        raise StateMismatch(f"The Microsoft sign-in could not be verified ({str(exc).split(':', 1)[0]}). "
                            "Please start the connection again.") from None
    except requests.RequestException as exc:
        raise TransientError(f"Cannot reach the Microsoft identity platform ({type(exc).__name__}).") from None
    if "access_token" not in result:
        raise _ms_error(result, action="authorization code")
    return _ms_tokens(result)


def microsoft_refresh(client: MicrosoftClient, refresh_token: str, *, scopes: Sequence[str]) -> MicrosoftTokens:
    """A new access token (and usually a new refresh token: store it) for ``scopes``."""
    try:
        result = msal_app(client).acquire_token_by_refresh_token(refresh_token, list(scopes))
    except requests.RequestException as exc:
        raise TransientError(f"Cannot reach the Microsoft identity platform ({type(exc).__name__}).") from None
    if "access_token" not in result:
        raise _ms_error(result, action="token refresh")
    return _ms_tokens(result)


def microsoft_app_token(client: MicrosoftClient, *, scopes: Sequence[str] = (GRAPH_DEFAULT_SCOPE,),
                        tenant: str | None = None) -> MicrosoftTokens:
    """App-only token (client credentials) for a tenant that granted admin consent."""
    try:
        result = msal_app(client, tenant=tenant).acquire_token_for_client(list(scopes))
    except requests.RequestException as exc:
        raise TransientError(f"Cannot reach the Microsoft identity platform ({type(exc).__name__}).") from None
    if "access_token" not in result:
        raise _ms_error(result, action="app-only token request")
    return _ms_tokens(result)


def microsoft_imap_token(client: MicrosoftClient, *, refresh_token: str | None = None) -> MicrosoftTokens:
    """An Exchange Online IMAP token: app-only without ``refresh_token``, delegated with one."""
    if refresh_token:
        return microsoft_refresh(client, refresh_token, scopes=[OUTLOOK_IMAP_DELEGATED_SCOPE])
    return microsoft_app_token(client, scopes=[OUTLOOK_IMAP_APP_SCOPE])


def admin_consent_url(client: MicrosoftClient, *, redirect_uri: str, state: str,
                      tenant: str | None = None, scope: str = GRAPH_DEFAULT_SCOPE) -> str:
    """Where a tenant admin grants the app's application permissions for the whole tenant."""
    query = urlencode({"client_id": client.client_id, "redirect_uri": redirect_uri, "state": state,
                       "scope": scope})
    return f"{client.authority(tenant or 'organizations')}/v2.0/adminconsent?{query}"


_DIRECTORY_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def parse_admin_consent(query: Mapping[str, str], *, state: str) -> str:
    """The consenting tenant's id from the admin-consent redirect; raise if denied or forged."""
    if not state or query.get("state") != state:
        raise StateMismatch("This admin consent does not belong to the current session (state mismatch).")
    if query.get("error"):
        if query["error"] == "access_denied":
            raise ConsentDenied("The administrator declined to grant consent.")
        description = (str(query.get("error_description") or "").splitlines() or [""])[0]
        raise OAuthError(f"Admin consent failed: {query['error']} ({description})")
    if str(query.get("admin_consent", "")).lower() != "true" or not query.get("tenant"):
        raise OAuthError("Microsoft did not confirm the admin consent.")
    # The tenant becomes part of the authority URL of every later app-only token request, and the
    # query string is the browser's to forge: only a directory id (a GUID) is accepted.
    if not _DIRECTORY_ID.fullmatch(str(query["tenant"])):
        raise OAuthError("The admin consent did not name a Microsoft directory id.")
    return str(query["tenant"]).lower()


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
            raise _ms_error(result, action="app-only token request")
        return _ms_tokens(result)


def microsoft_token_status(client: MicrosoftClient, *, refresh_token: str | None = None,
                           scopes: Sequence[str] = GRAPH_MAIL_SCOPES, tenant: str | None = None) -> TokenStatus:
    """Delegated: can the refresh token still be redeemed? App-only: does the tenant still grant it?"""
    try:
        if refresh_token:
            tokens = microsoft_refresh(client, refresh_token, scopes=scopes)
        else:
            tokens = microsoft_app_token(client, tenant=tenant)
    except TokenRevoked as exc:
        return TokenStatus("revoked", str(exc))
    except ConsentRequired as exc:
        return TokenStatus("revoked", str(exc))
    return TokenStatus("valid", "Microsoft issued a fresh access token.", tokens.expires_at)


def microsoft_revoke_sessions(access_token: str, *, graph_url: str = MICROSOFT_GRAPH_URL,
                              user: str | None = None, ca_bundle: str | None = None) -> bool:
    """Invalidate every refresh token of the user (Graph ``revokeSignInSessions``).

    Microsoft has no per-token revocation: this signs the user out of *all* apps, so the portal
    should normally just delete its stored refresh token and let the admin remove the app.
    """
    path = f"/users/{user}/revokeSignInSessions" if user else "/me/revokeSignInSessions"
    try:
        answer = http_session(ca_bundle).post(graph_url.rstrip("/") + path, timeout=HTTP_TIMEOUT,
                                              headers={"Authorization": f"Bearer {access_token}"})
    except requests.RequestException as exc:
        raise TransientError(f"Cannot reach Microsoft Graph ({type(exc).__name__}).") from None
    if answer.status_code == 200:
        return True
    if answer.status_code in (401, 403):
        return False
    raise TransientError(f"Microsoft Graph answered HTTP {answer.status_code}.")

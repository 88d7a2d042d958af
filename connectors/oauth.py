"""The OAuth consent flows the portal runs for Google and Microsoft, over google-auth-oauthlib and msal.

Authorization URLs and the code exchange (Google's web flow with PKCE, Microsoft's delegated
sign-in), Microsoft's admin consent, revocation, and the health of a stored credential for the
connection page. The tokens the sources then use, and the errors a refusal becomes, are
``connectors.sources.tokens``.

oauthlib refuses plain-http endpoints and redirect URIs unless ``OAUTHLIB_INSECURE_TRANSPORT=1``
(tests and local development only).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from connectors.model import TransientError
from connectors.sources.tokens import (
    GRAPH_DEFAULT_SCOPE,
    GRAPH_MAIL_SCOPES,
    HTTP_TIMEOUT,
    MICROSOFT_GRAPH_URL,
    AuthorizationCodeRejected,
    ConsentDenied,
    ConsentRequired,
    GoogleClient,
    MicrosoftClient,
    MicrosoftTokens,
    OAuthError,
    StateMismatch,
    TokenRevoked,
    expiry_of,
    google_access_token,
    google_user_credentials,
    http_session,
    microsoft_app_token,
    microsoft_error,
    microsoft_refresh,
    microsoft_tokens,
    msal_app,
)


@dataclass(frozen=True)
class TokenStatus:
    """The health of a stored credential, for the portal's connection page."""

    state: Literal["valid", "expired", "revoked"]
    detail: str
    expires_at: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return self.state == "valid"


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
                        expiry_of(token.get("expires_in")), granted)


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
                           expiry_of(answer.json().get("expires_in")))
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
        raise microsoft_error(result, action="authorization code")
    return microsoft_tokens(result)


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

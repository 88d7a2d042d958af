"""The Google authorization server, as google-auth, google-auth-oauthlib and Dovecot see it.

Endpoints (paths as on Google, all on one host):

- ``GET /o/oauth2/auth``: consent page with Allow / Deny buttons (``POST /o/oauth2/approve``),
  redirecting back with ``code`` & ``state`` or ``error=access_denied``.
- ``POST /token``: ``authorization_code`` (PKCE S256/plain verified), ``refresh_token`` and the
  JWT bearer grant of service accounts (RS256 signature checked against the registered key,
  ``sub`` = impersonated user, scopes checked against the domain-wide delegation grant).
- ``POST /revoke``: revokes an access or refresh token (a refresh token takes its access tokens).
- ``GET /oauth2/v3/tokeninfo?access_token=`` and ``/oauth2/v3/userinfo`` as on Google, and
  ``/oauth2/v3/introspect`` (RFC 7662; POST ``token=``, GET ``?token=`` or Bearer) for
  Dovecot's ``passdb { driver = oauth2 }`` in every ``introspection_mode``.

Codes and access tokens expire on the fake's clock; JWT assertions are checked against the wall
clock because the client signs them with the wall clock.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote_plus, urlencode, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.httpserver import Request, Response

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
GMAIL_SCOPES_READ = frozenset({
    "https://mail.google.com/",
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.modify",
})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def user_id_for(email: str) -> str:
    """Google's numeric account id, stable per address."""
    return str(int(hashlib.sha256(email.lower().encode()).hexdigest()[:15], 16))


@dataclass
class WebClient:
    client_id: str
    client_secret: str
    redirect_uris: list[str] = field(default_factory=list)  # empty: any loopback URI is accepted
    name: str = "LegacyFlo"


@dataclass
class ServiceAccount:
    client_email: str
    client_id: str
    key_id: str
    private_key: rsa.RSAPrivateKey
    delegated_scopes: set[str]

    def private_key_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()

    def info(self, token_uri: str) -> dict:
        """The JSON key file Google hands out, with ``token_uri`` pointed at the fake."""
        return {
            "type": "service_account",
            "project_id": "legacyflo-test",
            "private_key_id": self.key_id,
            "private_key": self.private_key_pem(),
            "client_email": self.client_email,
            "client_id": self.client_id,
            "auth_uri": token_uri.rsplit("/", 1)[0] + "/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/" + self.client_email,
            "universe_domain": "googleapis.com",
        }


@dataclass
class Grant:
    """An authorization code, refresh token or access token and what it stands for."""

    kind: str  # "code" | "refresh" | "access"
    token: str
    client_id: str
    user: str
    scopes: tuple[str, ...]
    expires_at: float | None = None
    revoked: bool = False
    parent: str | None = None  # the refresh token an access token came from
    redirect_uri: str = ""
    code_challenge: str = ""
    code_challenge_method: str = ""
    used: bool = False
    offline: bool = False  # a code from access_type=offline consent also yields a refresh token

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def oauth_error(error: str, description: str, status: int = 400) -> Response:
    return Response.json({"error": error, "error_description": description}, status)


CONSENT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - Google Accounts (fake)</title></head>
<body>
<h1>{app} wants to access your Google Account</h1>
<form method="post" action="/o/oauth2/approve">
<input type="hidden" name="request_id" value="{request_id}">
<label for="user">Account</label>
<select id="user" name="user">{options}</select>
<p>This will allow {app} to:</p>
<ul>{scopes}</ul>
<button type="submit" id="deny" name="decision" value="deny">Deny</button>
<button type="submit" id="allow" name="decision" value="allow">Allow</button>
</form>
</body></html>
"""


class GoogleAuthServer:
    def __init__(self, *, clock: Callable[[], float], users: list[str], base_url: str = "",
                 access_token_lifetime: int = 3599, code_lifetime: int = 600):
        self.clock = clock
        self.users = [u.lower() for u in users]
        self.base_url = base_url
        self.access_token_lifetime = access_token_lifetime
        self.code_lifetime = code_lifetime
        self.clients: dict[str, WebClient] = {}
        self.service_accounts: dict[str, ServiceAccount] = {}  # by client_email
        self.grants: dict[str, Grant] = {}
        self._pending: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.token_requests: list[str] = []  # grant types seen, for tests

    # --- registration -----------------------------------------------------------------
    def register_client(self, client_id: str, client_secret: str,
                        redirect_uris: list[str] | None = None, name: str = "LegacyFlo") -> WebClient:
        client = WebClient(client_id, client_secret, list(redirect_uris or []), name)
        self.clients[client_id] = client
        return client

    def register_service_account(self, client_email: str, scopes: set[str]) -> ServiceAccount:
        account = ServiceAccount(
            client_email=client_email,
            client_id=str(100000000000000000000 + len(self.service_accounts)),
            key_id=secrets.token_hex(20),
            private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            delegated_scopes=set(scopes),
        )
        self.service_accounts[client_email] = account
        return account

    # --- token bookkeeping ------------------------------------------------------------
    def _issue(self, kind: str, prefix: str, **fields) -> Grant:
        grant = Grant(kind=kind, token=prefix + secrets.token_urlsafe(40), **fields)
        with self._lock:
            self.grants[grant.token] = grant
        return grant

    def _issue_access(self, client_id: str, user: str, scopes: tuple[str, ...],
                      parent: str | None = None) -> Grant:
        return self._issue("access", "ya29.fake-", client_id=client_id, user=user, scopes=scopes,
                           expires_at=self.clock() + self.access_token_lifetime, parent=parent)

    def access_grant(self, token: str | None) -> Grant | None:
        """The live access grant behind ``token``, or None if unknown, expired or revoked."""
        grant = self.grants.get(token or "")
        if grant is None or grant.kind != "access" or grant.revoked or grant.expired(self.clock()):
            return None
        parent = self.grants.get(grant.parent or "")
        if parent is not None and parent.revoked:
            return None
        return grant

    def expire_access_tokens(self, user: str | None = None) -> None:
        """Test hook: every access token (of ``user``) is expired from now on."""
        now = self.clock()
        for grant in list(self.grants.values()):
            if grant.kind == "access" and (user is None or grant.user == user.lower()):
                grant.expires_at = now

    def revoke_user(self, user: str) -> None:
        """Test hook: the user removed the app's access (every token of theirs dies)."""
        for grant in list(self.grants.values()):
            if grant.user == user.lower():
                grant.revoked = True

    # --- routing ----------------------------------------------------------------------
    def handle(self, request: Request) -> Response | None:
        path = request.path
        if path in ("/o/oauth2/auth", "/o/oauth2/v2/auth") and request.method == "GET":
            return self.authorize(request)
        if path == "/o/oauth2/approve" and request.method == "POST":
            return self.approve(request)
        if path == "/token" and request.method == "POST":
            return self.token(request)
        if path in ("/revoke", "/o/oauth2/revoke"):
            return self.revoke(request)
        if path in ("/oauth2/v3/tokeninfo", "/tokeninfo"):
            return self.tokeninfo(request)
        if path == "/oauth2/v3/introspect":
            return self.introspect(request)
        if path in ("/oauth2/v3/userinfo", "/oauth2/v2/userinfo"):
            return self.userinfo(request)
        return None

    # --- authorization endpoint ------------------------------------------------------
    def _redirect_allowed(self, client: WebClient, redirect_uri: str) -> bool:
        if client.redirect_uris:
            return redirect_uri in client.redirect_uris
        host = urlsplit(redirect_uri).hostname or ""
        return host in ("127.0.0.1", "localhost", "::1", "testserver")

    def authorize(self, request: Request) -> Response:
        args = {k: v[0] for k, v in request.query.items()}
        client = self.clients.get(args.get("client_id", ""))
        if client is None:
            return Response.html("<h1>Error 401: invalid_client</h1><p>The OAuth client was not found.</p>", 401)
        redirect_uri = args.get("redirect_uri", "")
        if not self._redirect_allowed(client, redirect_uri):
            return Response.html("<h1>Error 400: redirect_uri_mismatch</h1>", 400)
        if args.get("response_type") != "code":
            return Response.redirect(redirect_uri + "?" + urlencode(
                {"error": "unsupported_response_type", "state": args.get("state", "")}))
        scopes = tuple(args.get("scope", "").split())
        if not scopes:
            return Response.html("<h1>Error 400: invalid_request</h1><p>Missing required parameter: scope</p>", 400)
        request_id = secrets.token_urlsafe(16)
        self._pending[request_id] = {
            "client_id": client.client_id, "redirect_uri": redirect_uri, "scopes": scopes,
            "state": args.get("state"), "code_challenge": args.get("code_challenge", ""),
            "code_challenge_method": args.get("code_challenge_method", ""),
            "access_type": args.get("access_type", "online"),
        }
        hint = (args.get("login_hint") or "").lower()
        options = "".join(
            f'<option value="{html.escape(u)}"{" selected" if u == hint else ""}>{html.escape(u)}</option>'
            for u in self.users)
        scope_items = "".join(f"<li>{html.escape(s)}</li>" for s in scopes)
        return Response.html(CONSENT_PAGE.format(app=html.escape(client.name), request_id=request_id,
                                                 options=options, scopes=scope_items))

    def approve(self, request: Request) -> Response:
        form = request.form()
        pending = self._pending.pop(form.get("request_id", ""), None)
        if pending is None:
            return Response.html("<h1>Error 400: invalid_request</h1><p>Unknown or used consent.</p>", 400)
        params: dict[str, str] = {}
        if form.get("decision") != "allow":
            params["error"] = "access_denied"
        else:
            user = (form.get("user") or self.users[0]).lower()
            code = self._issue(
                "code", "4/0fake-", client_id=pending["client_id"], user=user, scopes=pending["scopes"],
                expires_at=self.clock() + self.code_lifetime, redirect_uri=pending["redirect_uri"],
                code_challenge=pending["code_challenge"],
                code_challenge_method=pending["code_challenge_method"],
                offline=pending["access_type"] == "offline")
            params.update(code=code.token, scope=" ".join(pending["scopes"]), authuser="0",
                          prompt="consent")
        if pending["state"] is not None:
            params["state"] = pending["state"]
        separator = "&" if "?" in pending["redirect_uri"] else "?"
        return Response.redirect(pending["redirect_uri"] + separator + urlencode(params))

    # --- token endpoint ----------------------------------------------------------------
    def _client_from(self, request: Request, form: dict[str, str]) -> WebClient | None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            decoded = base64.b64decode(header[6:]).decode()
            client_id, _, secret = decoded.partition(":")
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
        client = self.clients.get(client_id or "")
        if client is None or not secrets.compare_digest(client.client_secret, secret or ""):
            return None
        return client

    def token(self, request: Request) -> Response:
        form = request.form()
        grant_type = form.get("grant_type", "")
        self.token_requests.append(grant_type)
        if grant_type == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._jwt_bearer(form.get("assertion", ""))
        client = self._client_from(request, form)
        if client is None:
            return oauth_error("invalid_client", "Unauthorized", 401)
        if grant_type == "authorization_code":
            return self._authorization_code(client, form)
        if grant_type == "refresh_token":
            return self._refresh(client, form)
        return oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _token_response(self, access: Grant, refresh: Grant | None = None) -> Response:
        body = {"access_token": access.token, "expires_in": self.access_token_lifetime,
                "scope": " ".join(access.scopes), "token_type": "Bearer"}
        if refresh is not None:
            body["refresh_token"] = refresh.token
        return Response.json(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _authorization_code(self, client: WebClient, form: dict[str, str]) -> Response:
        with self._lock:
            code = self.grants.get(form.get("code", ""))
            if code is None or code.kind != "code":
                return oauth_error("invalid_grant", "Malformed auth code.")
            if code.client_id != client.client_id:
                return oauth_error("invalid_grant", "Bad Request")
            if code.used:
                return oauth_error("invalid_grant", "Bad Request (the code was already redeemed)")
            if code.expired(self.clock()):
                return oauth_error("invalid_grant", "Bad Request (the code has expired)")
            if form.get("redirect_uri", "") != code.redirect_uri:
                return oauth_error("redirect_uri_mismatch", "Bad Request")
            verifier = form.get("code_verifier", "")
            if code.code_challenge:
                if not verifier:
                    return oauth_error("invalid_grant", "Missing code verifier.")
                if code.code_challenge_method == "S256":
                    computed = b64url(hashlib.sha256(verifier.encode("ascii")).digest())
                else:
                    computed = verifier
                if not secrets.compare_digest(computed, code.code_challenge):
                    return oauth_error("invalid_grant", "Invalid code verifier.")
            code.used = True
        refresh = None
        if code.offline:
            refresh = self._issue("refresh", "1//0fake-", client_id=client.client_id, user=code.user,
                                  scopes=code.scopes)
        access = self._issue_access(client.client_id, code.user, code.scopes,
                                    parent=refresh.token if refresh else None)
        return self._token_response(access, refresh)

    def _refresh(self, client: WebClient, form: dict[str, str]) -> Response:
        refresh = self.grants.get(form.get("refresh_token", ""))
        if refresh is None or refresh.kind != "refresh" or refresh.revoked:
            return oauth_error("invalid_grant", "Token has been expired or revoked.")
        if refresh.client_id != client.client_id:
            return oauth_error("unauthorized_client", "Unauthorized")
        scopes = tuple(form["scope"].split()) if form.get("scope") else refresh.scopes
        if not set(scopes) <= set(refresh.scopes):
            return oauth_error("invalid_scope", "Bad Request")
        return self._token_response(self._issue_access(client.client_id, refresh.user, scopes,
                                                       parent=refresh.token))

    def _jwt_bearer(self, assertion: str) -> Response:
        try:
            header_b64, payload_b64, signature_b64 = assertion.split(".")
            header = json.loads(b64url_decode(header_b64))
            claims = json.loads(b64url_decode(payload_b64))
            signature = b64url_decode(signature_b64)
        except (ValueError, json.JSONDecodeError):
            return oauth_error("invalid_grant", "Invalid JWT.")
        account = self.service_accounts.get(claims.get("iss", ""))
        if account is None:
            return oauth_error("invalid_grant", "Invalid issuer: the service account does not exist.")
        if header.get("alg") != "RS256" or header.get("kid", account.key_id) != account.key_id:
            return oauth_error("invalid_grant", "Invalid JWT Signature.")
        try:
            account.private_key.public_key().verify(
                signature, f"{header_b64}.{payload_b64}".encode("ascii"), padding.PKCS1v15(),
                hashes.SHA256())
        except InvalidSignature:
            return oauth_error("invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") not in (GOOGLE_TOKEN_AUDIENCE, self.base_url + "/token"):
            return oauth_error("invalid_grant", "Invalid JWT: Invalid audience.")
        now = time.time()
        iat, exp = claims.get("iat", 0), claims.get("exp", 0)
        if exp - iat > 3600 or not (iat - 300 <= now <= exp + 300):
            return oauth_error("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) "
                               "and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
        scopes = tuple(claims.get("scope", "").split())
        if not scopes or not set(scopes) <= account.delegated_scopes:
            return oauth_error("unauthorized_client", "Client is unauthorized to retrieve access tokens using "
                               "this method, or client not authorized for any of the scopes requested.")
        subject = (claims.get("sub") or account.client_email).lower()
        if claims.get("sub") and subject not in self.users:
            return oauth_error("invalid_grant", "Invalid email or User ID")
        access = self._issue_access(account.client_id, subject, scopes)
        return Response.json({"access_token": access.token, "expires_in": self.access_token_lifetime,
                              "token_type": "Bearer"})

    # --- revocation and inspection --------------------------------------------------------
    def revoke(self, request: Request) -> Response:
        token = request.form().get("token") or request.arg("token") or ""
        grant = self.grants.get(token)
        if grant is None or grant.kind == "code" or grant.revoked or grant.expired(self.clock()):
            return oauth_error("invalid_token", "Token expired or revoked")
        grant.revoked = True
        if grant.kind == "refresh":
            for other in self.grants.values():
                if other.parent == grant.token:
                    other.revoked = True
        elif grant.parent and grant.parent in self.grants:
            self.grants[grant.parent].revoked = True  # Google revokes the whole grant
        return Response.json({})

    def _describe(self, grant: Grant) -> dict[str, str]:
        remaining = max(0, int(grant.expires_at - self.clock())) if grant.expires_at else 0
        return {"azp": grant.client_id, "aud": grant.client_id, "sub": user_id_for(grant.user),
                "scope": " ".join(grant.scopes), "exp": str(int(time.time()) + remaining),
                "expires_in": str(remaining), "email": grant.user, "email_verified": "true",
                "access_type": "offline" if grant.parent else "online"}

    def tokeninfo(self, request: Request) -> Response:
        token = request.arg("access_token") or (request.form().get("access_token") if request.body else None)
        grant = self.access_grant(token)
        if grant is None:
            return oauth_error("invalid_token", "Invalid Value")
        return Response.json(self._describe(grant))

    def introspect(self, request: Request) -> Response:
        """RFC 7662 introspection: flat JSON (Dovecot 2.3 only reads top-level scalar fields)."""
        token = (request.form().get("token") if request.method == "POST" else None) \
            or request.arg("token") or request.bearer_token()
        grant = self.access_grant(token)
        if grant is None:
            return Response.json({"active": False})
        info = self._describe(grant)
        return Response.json({"active": True, "scope": info["scope"], "client_id": grant.client_id,
                              "username": grant.user, "email": grant.user, "sub": info["sub"],
                              "exp": int(info["exp"]), "expires_in": int(info["expires_in"]),
                              "token_type": "Bearer"})

    def userinfo(self, request: Request) -> Response:
        grant = self.access_grant(request.bearer_token())
        if grant is None:
            return Response.json({"error": "invalid_request",
                                  "error_description": "Invalid Credentials"}, 401,
                                 {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        return Response.json({"sub": user_id_for(grant.user), "email": grant.user, "email_verified": True})

"""The Microsoft identity platform (Entra ID v2.0 endpoints), as msal sees it.

Paths as on login.microsoftonline.com, ``{tenant}`` being a tenant id, a domain, ``organizations``
or ``common``:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``/{tenant}/discovery/v2.0/keys``;
- ``GET /{tenant}/oauth2/v2.0/authorize``: consent page with Accept / Cancel, redirecting with
  ``code``/``state`` (or ``error=access_denied``); the ``nonce`` msal sent is put in the id_token;
- ``GET /{tenant}/v2.0/adminconsent``: admin consent page, redirecting with
  ``admin_consent=True&tenant=...&state=...`` (or ``error=access_denied``);
- ``POST /{tenant}/oauth2/v2.0/token``: ``authorization_code`` (PKCE checked), ``refresh_token``
  (rotated) and ``client_credentials`` (``{resource}/.default`` only, admin consent required);
  errors carry AADSTS codes in ``error_description`` and ``error_codes`` like the real service.

Access tokens are RS256 JWTs (aud, scp or roles, oid, tid, upn) and are also remembered here,
so the Graph fake can check expiry and revocation.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.httpserver import Request, Response

GRAPH = "https://graph.microsoft.com"
OUTLOOK = "https://outlook.office.com"
OUTLOOK_365 = "https://outlook.office365.com"
RESERVED_SCOPES = {"openid", "profile", "offline_access", "email"}
APP_ROLES = {GRAPH: ["Mail.Read", "User.Read.All"], OUTLOOK: ["IMAP.AccessAsApp"],
             OUTLOOK_365: ["IMAP.AccessAsApp"]}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def split_scope(scope: str) -> tuple[str, str]:
    """'https://graph.microsoft.com/Mail.Read' → (graph, 'Mail.Read'); bare names are Graph's."""
    if scope.startswith("https://"):
        resource, _, permission = scope.rpartition("/")
        resource = OUTLOOK if resource == OUTLOOK_365 and permission != ".default" else resource
        return resource, permission
    return GRAPH, scope


@dataclass
class Tenant:
    tenant_id: str
    domain: str
    users: dict[str, str] = field(default_factory=dict)  # upn → object id
    consented_apps: set[str] = field(default_factory=set)  # admin consent (app-only allowed)


@dataclass
class App:
    client_id: str
    client_secret: str
    name: str


@dataclass
class IssuedToken:
    kind: str  # "code" | "refresh" | "access"
    token: str
    client_id: str
    tenant_id: str
    user: str | None  # upn; None for app-only tokens
    resource: str
    permissions: tuple[str, ...]  # scp (delegated) or roles (app-only)
    expires_at: float
    nonce: str = ""
    redirect_uri: str = ""
    code_challenge: str = ""
    code_challenge_method: str = ""
    scopes: tuple[str, ...] = ()
    used: bool = False
    revoked: bool = False

    @property
    def app_only(self) -> bool:
        return self.user is None


def aad_error(error: str, code: int, description: str, status: int = 400) -> Response:
    return Response.json({
        "error": error, "error_description": f"AADSTS{code}: {description} Trace ID: {uuid.uuid4()} "
        f"Correlation ID: {uuid.uuid4()} Timestamp: {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}",
        "error_codes": [code], "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())}, status)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>
<form method="post" action="{action}">
<input type="hidden" name="request_id" value="{request_id}">
{account}
<p>{app} would like to:</p><ul>{scopes}</ul>
<button type="submit" id="cancel" name="decision" value="cancel">Cancel</button>
<button type="submit" id="accept" name="decision" value="accept">Accept</button>
</form></body></html>
"""


class MicrosoftIdentity:
    def __init__(self, *, clock: Callable[[], float], base_url: str = "",
                 access_token_lifetime: int = 3599, code_lifetime: int = 600):
        self.clock = clock
        self.base_url = base_url
        self.access_token_lifetime = access_token_lifetime
        self.code_lifetime = code_lifetime
        self.tenants: dict[str, Tenant] = {}
        self.apps: dict[str, App] = {}
        self.tokens: dict[str, IssuedToken] = {}
        self.consents: dict[tuple[str, str], set[str]] = {}  # (client_id, upn) → consented scopes
        self._pending: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = secrets.token_hex(8)
        self.token_requests: list[str] = []

    # --- registration -------------------------------------------------------------------
    def add_tenant(self, domain: str, users: list[str], tenant_id: str | None = None) -> Tenant:
        tenant = Tenant(tenant_id or str(uuid.uuid5(uuid.NAMESPACE_DNS, domain)), domain,
                        {u.lower(): str(uuid.uuid5(uuid.NAMESPACE_URL, u.lower())) for u in users})
        self.tenants[tenant.tenant_id] = tenant
        return tenant

    def add_app(self, client_id: str, client_secret: str, name: str = "LegacyFlo") -> App:
        self.apps[client_id] = App(client_id, client_secret, name)
        return self.apps[client_id]

    def tenant_for(self, name: str) -> Tenant | None:
        name = name.lower()
        for tenant in self.tenants.values():
            if name in (tenant.tenant_id, tenant.domain):
                return tenant
        return None

    def tenant_of_user(self, upn: str) -> Tenant | None:
        return next((t for t in self.tenants.values() if upn.lower() in t.users), None)

    # --- tokens ----------------------------------------------------------------------------
    def sign(self, claims: dict) -> str:
        header = b64url(json.dumps({"typ": "JWT", "alg": "RS256", "kid": self.key_id}).encode())
        payload = b64url(json.dumps(claims).encode())
        signature = self.key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{payload}.{b64url(signature)}"

    def issuer(self, tenant_id: str) -> str:
        return f"{self.base_url}/{tenant_id}/v2.0"

    def _remember(self, token: IssuedToken) -> IssuedToken:
        with self._lock:
            self.tokens[token.token] = token
        return token

    def _access_token(self, client_id: str, tenant: Tenant, user: str | None, resource: str,
                      permissions: tuple[str, ...]) -> IssuedToken:
        now = int(time.time())
        claims = {"aud": resource, "iss": f"https://sts.windows.net/{tenant.tenant_id}/", "iat": now,
                  "nbf": now, "exp": now + self.access_token_lifetime, "appid": client_id,
                  "tid": tenant.tenant_id, "jti": secrets.token_hex(8)}
        if user:
            claims.update(oid=tenant.users[user], upn=user, scp=" ".join(permissions))
        else:
            claims.update(oid=str(uuid.uuid5(uuid.NAMESPACE_URL, client_id)), roles=list(permissions))
        return self._remember(IssuedToken("access", self.sign(claims), client_id, tenant.tenant_id, user,
                                          resource, permissions,
                                          self.clock() + self.access_token_lifetime))

    def access_token(self, token: str | None) -> IssuedToken | None:
        issued = self.tokens.get(token or "")
        if issued is None or issued.kind != "access" or issued.revoked or self.clock() >= issued.expires_at:
            return None
        return issued

    def expire_access_tokens(self) -> None:
        now = self.clock()
        for token in list(self.tokens.values()):
            if token.kind == "access":
                token.expires_at = now

    def revoke_sessions(self, upn: str) -> None:
        """Graph revokeSignInSessions: every refresh token of the user dies."""
        for token in list(self.tokens.values()):
            if token.user == upn.lower() and token.kind == "refresh":
                token.revoked = True

    # --- routing -------------------------------------------------------------------------
    def handle(self, request: Request) -> Response | None:
        segments = request.path.strip("/").split("/")
        if len(segments) < 2 or segments[0] in ("v1.0", "beta", "_fake"):
            return None
        tenant_name, rest = unquote(segments[0]), "/".join(segments[1:])
        if rest == "v2.0/.well-known/openid-configuration":
            return self.discovery(tenant_name)
        if rest == "discovery/v2.0/keys":
            return self.keys()
        if rest == "oauth2/v2.0/authorize" and request.method == "GET":
            return self.authorize(tenant_name, request)
        if rest == "v2.0/adminconsent" and request.method == "GET":
            return self.admin_consent(tenant_name, request)
        if rest == "oauth2/v2.0/approve" and request.method == "POST":
            return self.approve(request)
        if rest == "oauth2/v2.0/token" and request.method == "POST":
            return self.token(tenant_name, request)
        return None

    def _known_tenant(self, name: str) -> bool:
        return name in ("organizations", "common") or self.tenant_for(name) is not None

    def discovery(self, tenant_name: str) -> Response:
        if not self._known_tenant(tenant_name):
            return aad_error("invalid_tenant", 90002, f"Tenant '{tenant_name}' not found.", 400)
        tenant = self.tenant_for(tenant_name)
        issuer_tenant = tenant.tenant_id if tenant else "{tenantid}"
        base = f"{self.base_url}/{tenant_name}"
        return Response.json({
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": self.issuer(issuer_tenant),
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.base_url}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "preferred_username",
                                 "name", "tid", "ver", "oid"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        })

    def keys(self) -> Response:
        numbers = self.key.public_key().public_numbers()
        return Response.json({"keys": [{
            "kty": "RSA", "use": "sig", "kid": self.key_id, "alg": "RS256",
            "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url(numbers.e.to_bytes(3, "big"))}]})

    # --- interactive pages ----------------------------------------------------------------
    def _users_for(self, tenant_name: str) -> list[str]:
        tenant = self.tenant_for(tenant_name)
        if tenant:
            return sorted(tenant.users)
        return sorted(u for t in self.tenants.values() for u in t.users)

    def _page(self, title: str, request_id: str, app: App, scopes: list[str], tenant_name: str,
              users: list[str] | None, hint: str = "") -> Response:
        account = ""
        if users is not None:
            options = "".join(f'<option value="{html.escape(u)}"{" selected" if u == hint else ""}>'
                              f"{html.escape(u)}</option>" for u in users)
            account = f'<label for="user">Account</label> <select id="user" name="user">{options}</select>'
        return Response.html(PAGE.format(
            title=title, action=f"/{tenant_name}/oauth2/v2.0/approve", request_id=request_id,
            account=account, app=html.escape(app.name),
            scopes="".join(f"<li>{html.escape(s)}</li>" for s in scopes)))

    def authorize(self, tenant_name: str, request: Request) -> Response:
        args = {k: v[0] for k, v in request.query.items()}
        app = self.apps.get(args.get("client_id", ""))
        if app is None or not self._known_tenant(tenant_name):
            return Response.html("<h1>AADSTS700016: Application not found in the directory.</h1>", 400)
        redirect_uri = args.get("redirect_uri", "")
        if args.get("response_type") != "code" or not redirect_uri:
            return Response.html("<h1>AADSTS900144: The request body must contain response_type and "
                                 "redirect_uri.</h1>", 400)
        scopes = args.get("scope", "").split()
        request_id = secrets.token_urlsafe(16)
        self._pending[request_id] = {"kind": "authorize", "tenant": tenant_name, "client_id": app.client_id,
                                     "redirect_uri": redirect_uri, "scopes": scopes,
                                     "state": args.get("state"), "nonce": args.get("nonce", ""),
                                     "code_challenge": args.get("code_challenge", ""),
                                     "code_challenge_method": args.get("code_challenge_method", "plain"),
                                     "response_mode": args.get("response_mode", "query")}
        return self._page("Permissions requested", request_id, app, scopes, tenant_name,
                          self._users_for(tenant_name), (args.get("login_hint") or "").lower())

    def admin_consent(self, tenant_name: str, request: Request) -> Response:
        args = {k: v[0] for k, v in request.query.items()}
        app = self.apps.get(args.get("client_id", ""))
        if app is None or not self._known_tenant(tenant_name) or not args.get("redirect_uri"):
            return Response.html("<h1>AADSTS700016: Application not found in the directory.</h1>", 400)
        request_id = secrets.token_urlsafe(16)
        self._pending[request_id] = {"kind": "admin", "tenant": tenant_name, "client_id": app.client_id,
                                     "redirect_uri": args["redirect_uri"], "state": args.get("state")}
        admins = [u for u in self._users_for(tenant_name) if u.startswith("admin@")]
        scopes = [f"{r}: {', '.join(p)} (application)" for r, p in APP_ROLES.items() if r != OUTLOOK_365]
        return self._page("Permissions requested — accept for your organization", request_id, app,
                          scopes, tenant_name, admins or self._users_for(tenant_name))

    def approve(self, request: Request) -> Response:
        form = request.form()
        pending = self._pending.pop(form.get("request_id", ""), None)
        if pending is None:
            return Response.html("<h1>AADSTS90015: The consent request expired or was used.</h1>", 400)
        accepted = form.get("decision") == "accept"
        params: dict[str, str] = {}
        if pending["kind"] == "admin":
            user = (form.get("user") or "").lower()
            tenant = self.tenant_of_user(user) if user else self.tenant_for(pending["tenant"])
            if not accepted or tenant is None:
                params.update(error="access_denied", error_subcode="cancel",
                              error_description="AADSTS65004: User declined to consent to access the app.")
            else:
                tenant.consented_apps.add(pending["client_id"])
                params.update(admin_consent="True", tenant=tenant.tenant_id,
                              scope=f"{GRAPH}/.default")
        elif not accepted:
            params.update(error="access_denied", error_subcode="cancel",
                          error_description="AADSTS65004: User declined to consent to access the app.")
        else:
            user = (form.get("user") or self._users_for(pending["tenant"])[0]).lower()
            tenant = self.tenant_of_user(user)
            self.consents.setdefault((pending["client_id"], user), set()).update(pending["scopes"])
            code = self._remember(IssuedToken(
                "code", "0.fake-code-" + secrets.token_urlsafe(48), pending["client_id"], tenant.tenant_id,
                user, "", (), self.clock() + self.code_lifetime, nonce=pending["nonce"],
                redirect_uri=pending["redirect_uri"], code_challenge=pending["code_challenge"],
                code_challenge_method=pending["code_challenge_method"], scopes=tuple(pending["scopes"])))
            params.update(code=code.token, session_state=str(uuid.uuid4()))
        if pending.get("state") is not None:
            params["state"] = pending["state"]
        if pending.get("response_mode") == "form_post":
            fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                             for k, v in params.items())
            return Response.html(f'<!doctype html><html><body onload="document.forms[0].submit()">'
                                 f'<form method="post" action="{html.escape(pending["redirect_uri"])}">'
                                 f"{fields}</form></body></html>")
        separator = "&" if "?" in pending["redirect_uri"] else "?"
        return Response.redirect(pending["redirect_uri"] + separator + urlencode(params))

    # --- token endpoint ----------------------------------------------------------------------
    def token(self, tenant_name: str, request: Request) -> Response:
        form = request.form()
        grant_type = form.get("grant_type", "")
        self.token_requests.append(grant_type)
        app = self.apps.get(form.get("client_id", ""))
        if app is None:
            return aad_error("unauthorized_client", 700016, f"Application with identifier "
                             f"'{form.get('client_id')}' was not found in the directory '{tenant_name}'.")
        if not secrets.compare_digest(app.client_secret, form.get("client_secret", "")):
            return aad_error("invalid_client", 7000215, "Invalid client secret provided. Ensure the secret "
                             "being sent in the request is the client secret value, not the client secret ID.",
                             401)
        if grant_type == "client_credentials":
            return self._client_credentials(tenant_name, app, form)
        if grant_type == "authorization_code":
            return self._authorization_code(app, form)
        if grant_type == "refresh_token":
            return self._refresh(app, form)
        return aad_error("unsupported_grant_type", 70003, f"The app requested an unsupported grant type "
                         f"'{grant_type}'.")

    def _delegated_response(self, app: App, user: str, scopes: list[str], nonce: str = "") -> Response:
        tenant = self.tenant_of_user(user)
        wanted = [s for s in scopes if s not in RESERVED_SCOPES]
        resource = split_scope(wanted[0])[0] if wanted else GRAPH
        permissions = tuple(split_scope(s)[1] for s in wanted if split_scope(s)[0] == resource)
        access = self._access_token(app.client_id, tenant, user, resource, permissions)
        body = {"token_type": "Bearer", "scope": " ".join(f"{resource}/{p}" for p in permissions),
                "expires_in": self.access_token_lifetime, "ext_expires_in": self.access_token_lifetime,
                "access_token": access.token,
                "client_info": b64url(json.dumps({"uid": tenant.users[user], "utid": tenant.tenant_id}).encode())}
        if "offline_access" in scopes:
            refresh = self._remember(IssuedToken("refresh", "1.fake-refresh-" + secrets.token_urlsafe(48),
                                                 app.client_id, tenant.tenant_id, user, "", (),
                                                 self.clock() + 90 * 86400))
            body["refresh_token"] = refresh.token
        if "openid" in scopes:
            now = int(time.time())
            claims = {"aud": app.client_id, "iss": self.issuer(tenant.tenant_id), "iat": now, "nbf": now,
                      "exp": now + 3600, "name": user.split("@")[0].title(), "oid": tenant.users[user],
                      "preferred_username": user, "sub": b64url(hashlib.sha256(user.encode()).digest()),
                      "tid": tenant.tenant_id, "ver": "2.0"}
            if nonce:
                claims["nonce"] = nonce
            body["id_token"] = self.sign(claims)
        return Response.json(body)

    def _consented(self, app: App, user: str, scopes: list[str]) -> bool:
        granted = self.consents.get((app.client_id, user), set())
        granted_pairs = {split_scope(s) for s in granted}
        return all(split_scope(s) in granted_pairs for s in scopes if s not in RESERVED_SCOPES)

    def _authorization_code(self, app: App, form: dict[str, str]) -> Response:
        with self._lock:
            code = self.tokens.get(form.get("code", ""))
            if code is None or code.kind != "code" or code.client_id != app.client_id:
                return aad_error("invalid_grant", 70000, "The provided value for the 'code' parameter is "
                                 "not valid.")
            if code.used:
                return aad_error("invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, "
                                 "please retry with a new valid code or use an existing refresh token.")
            if self.clock() >= code.expires_at:
                return aad_error("invalid_grant", 70008, "The provided authorization code or refresh token "
                                 "has expired due to inactivity.")
            if form.get("redirect_uri") != code.redirect_uri:
                return aad_error("invalid_grant", 50148, "The redirect_uri does not match the one used in "
                                 "the authorization request.")
            if code.code_challenge:
                verifier = form.get("code_verifier", "")
                computed = b64url(hashlib.sha256(verifier.encode()).digest()) \
                    if code.code_challenge_method == "S256" else verifier
                if not verifier or not secrets.compare_digest(computed, code.code_challenge):
                    return aad_error("invalid_grant", 501481, "The Code_Verifier does not match the "
                                     "code_challenge supplied in the authorization request.")
            code.used = True
        scopes = form.get("scope", "").split() or list(code.scopes)
        return self._delegated_response(app, code.user, scopes, code.nonce)

    def _refresh(self, app: App, form: dict[str, str]) -> Response:
        refresh = self.tokens.get(form.get("refresh_token", ""))
        if refresh is None or refresh.kind != "refresh" or refresh.client_id != app.client_id:
            return aad_error("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if refresh.revoked:
            return aad_error("invalid_grant", 50173, "The provided grant has expired due to it being "
                             "revoked, a fresh auth token is needed.")
        if self.clock() >= refresh.expires_at:
            return aad_error("invalid_grant", 700082, "The refresh token has expired due to inactivity.")
        scopes = form.get("scope", "").split()
        if not self._consented(app, refresh.user, scopes):
            return aad_error("invalid_grant", 65001, "The user or administrator has not consented to use "
                             f"the application with ID '{app.client_id}'.")
        return self._delegated_response(app, refresh.user, scopes)

    def _client_credentials(self, tenant_name: str, app: App, form: dict[str, str]) -> Response:
        tenant = self.tenant_for(tenant_name)
        if tenant is None:
            return aad_error("invalid_request", 90002, f"Tenant '{tenant_name}' not found. Client "
                             "credentials need a tenant id or domain, not 'organizations' or 'common'.")
        scopes = [s for s in form.get("scope", "").split() if s not in RESERVED_SCOPES]
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return aad_error("invalid_scope", 1002012, f"The provided value for scope {' '.join(scopes)} "
                             "is not valid. Client credential flows must have a scope value with /.default "
                             "suffixed to the resource identifier (application ID URI).")
        if app.client_id not in tenant.consented_apps:
            return aad_error("unauthorized_client", 700016, f"Application with identifier '{app.client_id}' "
                             f"was not found in the directory '{tenant.domain}'. This can happen if the "
                             "application has not been installed by the administrator of the tenant.")
        resource = split_scope(scopes[0])[0]
        resource = OUTLOOK if resource == OUTLOOK_365 else resource
        access = self._access_token(app.client_id, tenant, None, resource, tuple(APP_ROLES.get(resource, [])))
        return Response.json({"token_type": "Bearer", "expires_in": self.access_token_lifetime,
                              "ext_expires_in": self.access_token_lifetime, "access_token": access.token})

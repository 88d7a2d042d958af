"""OAuth consent in flight, kept in the browser's session and bound to the tenant that started it.

A consent leaves the portal (to Google's or Microsoft's page) and comes back to one callback URL
outside ``/t/<tenant>/``. What the callback needs is remembered here under the OAuth ``state``:
the kind of flow, the tenant slug, the connection, the user who started it, the redirect URI and
the flow's secrets (PKCE verifier, msal's flow dict). An entry is used once (taken on the
callback, whatever the outcome) and expires after ``PENDING_SECONDS``; the callback re-checks
the user's membership and role in that tenant before touching anything.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

SESSION_KEY = "providers.pending_consents"
PENDING_SECONDS = 15 * 60  # Google and Microsoft codes live minutes; a consent page left open longer is stale
MAX_PENDING = 5  # a few tabs at once; older entries are dropped

GOOGLE = "google"
MICROSOFT = "microsoft"
MICROSOFT_ADMIN = "microsoft_admin"


@dataclass
class PendingConsent:
    kind: str  # google | microsoft | microsoft_admin
    state: str
    tenant_slug: str
    connection_uuid: str
    user_id: int
    redirect_uri: str
    started_at: float = field(default_factory=time.time)
    code_verifier: str = ""  # Google PKCE
    flow: dict = field(default_factory=dict)  # msal's auth code flow (state, nonce, PKCE)
    purpose: str = ""  # Microsoft delegated: graph | imap


def remember(session, pending: PendingConsent) -> None:
    entries = [e for e in session.get(SESSION_KEY, []) if _fresh(e)]
    entries.append(asdict(pending))
    session[SESSION_KEY] = entries[-MAX_PENDING:]


def take(session, state: str | None, *, kinds: tuple[str, ...], user_id: int) -> PendingConsent | None:
    """The entry for ``state`` (removed from the session), or None if unknown, used, expired or foreign."""
    entries = session.get(SESSION_KEY, [])
    if not state or not entries:
        return None
    found = None
    keep = []
    for entry in entries:
        if entry.get("state") == state and found is None:
            found = entry
        elif _fresh(entry):
            keep.append(entry)
    session[SESSION_KEY] = keep
    if found is None or not _fresh(found) or found.get("kind") not in kinds or found.get("user_id") != user_id:
        return None
    return PendingConsent(**found)


def _fresh(entry: dict) -> bool:
    return time.time() - float(entry.get("started_at", 0)) < PENDING_SECONDS


# --- starting a consent (no database writes: the session remembers it) ------------------------------
def start_google(connection, *, redirect_uri: str, login_hint: str, tenant_slug: str,
                 user_id: int) -> tuple[str, PendingConsent]:
    """Google's web flow: offline access, forced consent (so a refresh token is issued), PKCE S256."""
    from connectors import oauth
    from providers import credentials

    start = oauth.google_authorization_url(credentials.google_client(connection), redirect_uri=redirect_uri,
                                           scopes=list(credentials.GOOGLE_USER_SCOPES), login_hint=login_hint or None)
    return start.url, PendingConsent(kind=GOOGLE, state=start.state, tenant_slug=tenant_slug,
                                     connection_uuid=str(connection.uuid), user_id=user_id,
                                     redirect_uri=redirect_uri, code_verifier=start.code_verifier)


def start_microsoft(connection, *, redirect_uri: str, login_hint: str, purpose: str, tenant_slug: str,
                    user_id: int) -> tuple[str, PendingConsent]:
    """Delegated sign-in with msal (state, nonce, PKCE inside its flow dict; response_mode=query)."""
    from connectors import oauth
    from providers import credentials

    flow = oauth.microsoft_start_auth(credentials.microsoft_client(connection), redirect_uri=redirect_uri,
                                      scopes=credentials.MICROSOFT_PURPOSES[purpose], login_hint=login_hint or None,
                                      prompt="select_account")
    return flow["auth_uri"], PendingConsent(kind=MICROSOFT, state=flow["state"], tenant_slug=tenant_slug,
                                            connection_uuid=str(connection.uuid), user_id=user_id,
                                            redirect_uri=redirect_uri, flow=flow, purpose=purpose)


def start_microsoft_admin(connection, *, redirect_uri: str, tenant_slug: str, user_id: int) -> tuple[str, PendingConsent]:
    """The admin-consent URL for the configured directory (any tenant's admin when none is set)."""
    import secrets

    from connectors import oauth
    from providers import credentials

    state = secrets.token_urlsafe(32)
    directory = connection.directory_tenant or "organizations"
    url = oauth.admin_consent_url(credentials.microsoft_client(connection), redirect_uri=redirect_uri,
                                  state=state, tenant=directory)
    return url, PendingConsent(kind=MICROSOFT_ADMIN, state=state, tenant_slug=tenant_slug,
                               connection_uuid=str(connection.uuid), user_id=user_id, redirect_uri=redirect_uri)

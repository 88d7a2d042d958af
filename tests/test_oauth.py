"""connectors.oauth against the Google and Microsoft fakes, through the real client libraries."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from connectors import oauth
from connectors.sources import tokens
from tests.fakes.clock import FakeClock
from tests.fakes.google import GoogleFake

# msal recommends form_post; the portal deliberately uses query (see microsoft_start_auth).
pytestmark = pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended:UserWarning")

REDIRECT = "http://127.0.0.1:8000/oauth/google/callback"
ALICE, BOB = "alice@legacyflo.test", "bob@legacyflo.test"


@pytest.fixture(autouse=True)
def _plain_http_oauth(monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the Google fake speaks http


@pytest.fixture(scope="module")
def clock():
    return FakeClock()


@pytest.fixture(scope="module")
def google(clock):
    fake = GoogleFake(mailboxes={ALICE: 3, BOB: 2}, big_message_bytes=0, clock=clock).start()
    yield fake
    fake.stop()


@pytest.fixture
def google_client(google):
    return tokens.GoogleClient(google.client_id, google.client_secret, auth_uri=google.auth_uri,
                               token_uri=google.token_uri, revoke_uri=google.revoke_uri)


def _start(google_client, user=BOB, scopes=(tokens.GMAIL_READONLY_SCOPE,)):
    return oauth.google_authorization_url(google_client, redirect_uri=REDIRECT, scopes=list(scopes),
                                          login_hint=user)


def _exchange(google_client, start, callback, **overrides):
    arguments = dict(redirect_uri=REDIRECT, scopes=[tokens.GMAIL_READONLY_SCOPE],
                     authorization_response=callback, state=start.state,
                     code_verifier=start.code_verifier)
    arguments.update(overrides)
    return oauth.google_exchange_code(google_client, **arguments)


def test_google_code_flow_with_pkce_gives_refreshable_credentials(google, google_client):
    start = _start(google_client)
    query = parse_qs(urlsplit(start.url).query)
    assert query["code_challenge_method"] == ["S256"] and query["access_type"] == ["offline"]
    assert query["prompt"] == ["consent"] and start.code_verifier and start.state
    assert tuple(start) == (start.url, start.state, start.code_verifier)
    assert start.code_verifier not in repr(start)

    callback = google.consent(start.url, user=BOB)
    issued = _exchange(google_client, start, callback)

    assert issued.refresh_token and issued.access_token
    assert "access_token" not in repr(issued) and issued.access_token not in repr(issued)
    assert google.auth.access_grant(issued.access_token).user == BOB
    credentials = tokens.google_user_credentials(google_client, refresh_token=issued.refresh_token,
                                                scopes=[tokens.GMAIL_READONLY_SCOPE])
    assert oauth.google_account_email(credentials, api_url=google.gmail_api_url) == BOB
    assert "refresh_token" in google.auth.token_requests


def test_wrong_pkce_verifier_is_rejected(google, google_client):
    start = _start(google_client)
    callback = google.consent(start.url)
    with pytest.raises(tokens.AuthorizationCodeRejected, match="Invalid code verifier"):
        _exchange(google_client, start, callback, code_verifier="x" * 64)


def test_denied_consent(google, google_client):
    start = _start(google_client)
    callback = google.consent(start.url, allow=False)
    assert "error=access_denied" in callback
    with pytest.raises(tokens.ConsentDenied):
        _exchange(google_client, start, callback)


def test_mismatched_state_is_refused_before_any_token_request(google, google_client):
    start, other = _start(google_client), _start(google_client)
    callback = google.consent(start.url)
    before = len(google.auth.token_requests)
    with pytest.raises(tokens.StateMismatch):
        _exchange(google_client, other, callback, code_verifier=start.code_verifier)
    assert len(google.auth.token_requests) == before


def test_a_sign_in_over_plain_http_is_explained_as_ours_not_googles(google, google_client, monkeypatch):
    """oauthlib refuses http unless OAUTHLIB_INSECURE_TRANSPORT is set: the error says which address
    is http and what to do (https, LEGACYFLO_PUBLIC_URL), not "Google refused ... insecure_transport"."""
    start = _start(google_client)
    callback = google.consent(start.url, user=BOB)
    before = len(google.auth.token_requests)
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT")  # a portal served on plain http, as in production
    with pytest.raises(tokens.OAuthError) as refused:
        _exchange(google_client, start, callback)
    text = str(refused.value)
    assert REDIRECT in text and "refuses to finish a Google sign-in over http" in text
    assert "Google refused nothing" in text and "LEGACYFLO_PUBLIC_URL=https://" in text
    assert "insecure_transport" not in text and len(google.auth.token_requests) == before
    with pytest.raises(tokens.OAuthError, match="refuses to finish a Google sign-in over http"):
        _start(google_client)  # and a new sign-in is refused before anyone is sent to Google for nothing

    https_redirect = "https://portal.example/oauth/google/callback/"  # the portal is fine; the endpoint is not
    with pytest.raises(tokens.OAuthError, match=r"token endpoint is configured as plain http \(http://.*GOOGLE_TOKEN_URI"):
        oauth.google_authorization_url(google_client, redirect_uri=https_redirect, scopes=[tokens.GMAIL_READONLY_SCOPE])
    with pytest.raises(tokens.OAuthError, match="GOOGLE_TOKEN_URI"):
        _exchange(google_client, start, https_redirect + "?" + urlsplit(callback).query, redirect_uri=https_redirect)


def test_expired_and_reused_codes_are_rejected(google, google_client, clock):
    start = _start(google_client)
    callback = google.consent(start.url)
    clock.advance(google.auth.code_lifetime + 1)
    with pytest.raises(tokens.AuthorizationCodeRejected, match="expired"):
        _exchange(google_client, start, callback)

    start = _start(google_client)
    callback = google.consent(start.url)
    _exchange(google_client, start, callback)
    with pytest.raises(tokens.AuthorizationCodeRejected):
        _exchange(google_client, start, callback)


def test_consent_missing_a_scope_is_reported(google, google_client):
    start = _start(google_client)
    callback = google.consent(start.url)
    with pytest.raises(tokens.OAuthError, match="did not grant"):
        _exchange(google_client, start, callback,
                  scopes=[tokens.GMAIL_READONLY_SCOPE, tokens.GMAIL_IMAP_SCOPE])


def test_service_account_delegation_uses_a_verified_jwt_bearer_grant(google):
    credentials = tokens.google_service_account_credentials(
        google.service_account_info | {"token_uri": "https://oauth2.googleapis.com/token"},
        subject=ALICE, scopes=[tokens.GMAIL_IMAP_SCOPE], token_uri=google.token_uri)
    token = tokens.google_access_token(credentials)
    grant = google.auth.access_grant(token)
    assert grant.user == ALICE and grant.scopes == (tokens.GMAIL_IMAP_SCOPE,)
    assert tokens.xoauth2_string(ALICE, token) == f"user={ALICE}\x01auth=Bearer {token}\x01\x01"


def test_service_account_errors_are_explained(google):
    info = google.service_account_info

    def token_for(subject, scopes, key_info=info):
        credentials = tokens.google_service_account_credentials(key_info, subject=subject, scopes=scopes)
        return tokens.google_access_token(credentials)

    with pytest.raises(tokens.OAuthError, match="does not know the impersonated user"):
        token_for("nobody@legacyflo.test", [tokens.GMAIL_READONLY_SCOPE])
    with pytest.raises(tokens.OAuthError, match="domain-wide delegation"):
        token_for(ALICE, ["https://www.googleapis.com/auth/drive"])

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(tokens.OAuthError, match="Invalid JWT Signature"):
        token_for(ALICE, [tokens.GMAIL_READONLY_SCOPE], info | {"private_key": other_key.decode()})
    with pytest.raises(tokens.OAuthError, match="not a valid Google JSON key"):
        tokens.google_service_account_credentials({"type": "service_account"}, subject=ALICE,
                                                 scopes=[tokens.GMAIL_READONLY_SCOPE])


def test_token_status_and_revocation(google, google_client):
    start = _start(google_client)
    issued = _exchange(google_client, start, google.consent(start.url))

    assert oauth.google_token_status(google_client, refresh_token=issued.refresh_token).state == "valid"
    assert oauth.google_token_status(google_client, access_token=issued.access_token).ok

    assert oauth.google_revoke(google_client, issued.refresh_token) is True
    assert oauth.google_revoke(google_client, issued.refresh_token) is False
    assert oauth.google_token_status(google_client, refresh_token=issued.refresh_token).state == "revoked"
    assert oauth.google_token_status(google_client, access_token=issued.access_token).state == "expired"
    with pytest.raises(tokens.TokenRevoked):
        tokens.google_access_token(tokens.google_user_credentials(google_client,
                                                                refresh_token=issued.refresh_token))


# --- Microsoft ---------------------------------------------------------------------------------
MS_REDIRECT = "http://localhost:8000/oauth/microsoft/callback"
ADELE, MEGAN = "adele@legacyflo.onmicrosoft.com", "megan@legacyflo.onmicrosoft.com"


@pytest.fixture(scope="module")
def ms_clock():
    return FakeClock()


@pytest.fixture(scope="module")
def ms(tmp_path_factory, ms_clock):
    from tests.fakes.microsoft import MicrosoftFake

    fake = MicrosoftFake(tmp_path_factory.mktemp("ms-ca"), mailboxes={ADELE: 2, MEGAN: 2},
                         big_message_bytes=0, clock=ms_clock).start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _system_ca_in_environment(monkeypatch):
    """requests would let REQUESTS_CA_BUNDLE win over a session's CA; the helpers must not."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")


def ms_client(ms, tenant: str = "organizations") -> tokens.MicrosoftClient:
    return tokens.MicrosoftClient(ms.client_id, ms.client_secret, tenant=tenant,
                                  authority_host=ms.authority_host, ca_bundle=ms.ca_path)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _sign_in(ms, client, user=MEGAN, scopes=tokens.GRAPH_MAIL_SCOPES, **consent):
    flow = oauth.microsoft_start_auth(client, redirect_uri=MS_REDIRECT, scopes=scopes, login_hint=user)
    return flow, _query(ms.consent(flow["auth_uri"], user=user, **consent))


def test_microsoft_delegated_flow_over_tls_with_the_test_ca(ms):
    client = ms_client(ms)
    flow, callback = _sign_in(ms, client)
    auth_query = _query(flow["auth_uri"])
    assert auth_query["code_challenge_method"] == "S256" and auth_query["nonce"]
    assert "offline_access" in auth_query["scope"]

    issued = oauth.microsoft_finish_auth(client, flow, callback)

    assert issued.username == MEGAN and issued.tenant_id == ms.tenant_id and issued.refresh_token
    assert issued.access_token not in repr(issued)
    assert ms.identity.access_token(issued.access_token).permissions == ("Mail.Read", "User.Read")
    refreshed = tokens.microsoft_refresh(client, issued.refresh_token, scopes=tokens.GRAPH_MAIL_SCOPES)
    assert refreshed.refresh_token and refreshed.refresh_token != issued.refresh_token


def test_microsoft_cancel_state_and_code_errors(ms, ms_clock):
    client = ms_client(ms)
    flow, callback = _sign_in(ms, client, accept=False)
    with pytest.raises(tokens.ConsentDenied):
        oauth.microsoft_finish_auth(client, flow, callback)

    flow, callback = _sign_in(ms, client)
    with pytest.raises(tokens.StateMismatch):
        oauth.microsoft_finish_auth(client, flow, callback | {"state": "forged"})

    flow, callback = _sign_in(ms, client)
    ms_clock.advance(ms.identity.code_lifetime + 1)
    with pytest.raises(tokens.AuthorizationCodeRejected, match="AADSTS70008"):
        oauth.microsoft_finish_auth(client, flow, callback)

    flow, callback = _sign_in(ms, client)
    oauth.microsoft_finish_auth(client, flow, callback)
    with pytest.raises(tokens.AuthorizationCodeRejected, match="AADSTS54005"):
        oauth.microsoft_finish_auth(client, flow, callback)

    flow, callback = _sign_in(ms, client)
    with pytest.raises(tokens.AuthorizationCodeRejected, match="AADSTS501481"):  # PKCE verifier
        oauth.microsoft_finish_auth(client, flow | {"code_verifier": "y" * 50}, callback)


def test_microsoft_form_post_response_mode(ms):
    client = ms_client(ms)
    flow = oauth.microsoft_start_auth(client, redirect_uri=MS_REDIRECT, response_mode="form_post")
    posted = _query(ms.consent(flow["auth_uri"], user=ADELE))
    assert oauth.microsoft_finish_auth(client, flow, posted).username == ADELE


def test_app_only_token_and_admin_consent_for_a_new_tenant(ms):
    token = tokens.microsoft_app_token(ms_client(ms, ms.tenant_id))
    grant = ms.identity.access_token(token.access_token)
    assert grant.app_only and grant.resource == "https://graph.microsoft.com"
    assert "Mail.Read" in grant.permissions

    other = ms_client(ms, ms.other_tenant_id)
    with pytest.raises(tokens.AdminConsentRequired, match="AADSTS700016"):
        tokens.microsoft_app_token(other)
    assert oauth.microsoft_token_status(other).state == "revoked"

    url = oauth.admin_consent_url(ms_client(ms), redirect_uri=MS_REDIRECT, state="s-1")
    assert url.startswith(f"{ms.authority_host}/organizations/v2.0/adminconsent?")
    denied = _query(ms.admin_consent(url, accept=False, admin="admin@contoso.onmicrosoft.com"))
    with pytest.raises(tokens.ConsentDenied):
        oauth.parse_admin_consent(denied, state="s-1")

    granted = _query(ms.admin_consent(url, admin="admin@contoso.onmicrosoft.com"))
    with pytest.raises(tokens.StateMismatch):
        oauth.parse_admin_consent(granted, state="s-2")
    assert granted["admin_consent"] == "True"
    assert oauth.parse_admin_consent(granted, state="s-1") == ms.other_tenant_id
    for forged in ("evil.example", "../../evil.example/x", f"{ms.other_tenant_id}/../x", ""):
        with pytest.raises(tokens.OAuthError, match="directory id|did not confirm"):
            oauth.parse_admin_consent(granted | {"tenant": forged}, state="s-1")
    assert tokens.microsoft_app_token(other).access_token
    assert oauth.microsoft_token_status(other).ok


def test_imap_tokens_have_outlook_audience_and_scopes(ms):
    app_token = tokens.microsoft_imap_token(ms_client(ms, ms.tenant_id))
    grant = ms.identity.access_token(app_token.access_token)
    assert grant.resource == "https://outlook.office.com" and grant.permissions == ("IMAP.AccessAsApp",)

    client = ms_client(ms)
    flow, callback = _sign_in(ms, client, user=ADELE, scopes=[tokens.OUTLOOK_IMAP_DELEGATED_SCOPE])
    issued = oauth.microsoft_finish_auth(client, flow, callback)
    delegated = tokens.microsoft_imap_token(client, refresh_token=issued.refresh_token)
    grant = ms.identity.access_token(delegated.access_token)
    assert grant.user == ADELE and grant.permissions == ("IMAP.AccessAsUser.All",)

    graph_flow, graph_callback = _sign_in(ms, client, user=MEGAN)
    graph_only = oauth.microsoft_finish_auth(client, graph_flow, graph_callback)
    with pytest.raises(tokens.ConsentRequired, match="AADSTS65001"):  # IMAP was never consented
        tokens.microsoft_imap_token(client, refresh_token=graph_only.refresh_token)


def test_microsoft_token_status_and_sign_in_revocation(ms):
    client = ms_client(ms)
    flow, callback = _sign_in(ms, client)
    issued = oauth.microsoft_finish_auth(client, flow, callback)
    assert oauth.microsoft_token_status(client, refresh_token=issued.refresh_token).ok

    assert oauth.microsoft_revoke_sessions(issued.access_token, graph_url=ms.graph_url, ca_bundle=ms.ca_path)
    status = oauth.microsoft_token_status(client, refresh_token=issued.refresh_token)
    assert status.state == "revoked" and "AADSTS50173" in status.detail
    with pytest.raises(tokens.TokenRevoked):
        tokens.MicrosoftTokenProvider(client, scopes=tokens.GRAPH_MAIL_SCOPES,
                                     refresh_token=issued.refresh_token)()


def test_app_only_provider_caches_and_force_refreshes(ms):
    provider = tokens.MicrosoftTokenProvider(ms_client(ms, ms.tenant_id))
    first = provider()
    assert provider() == first
    before = ms.identity.token_requests.count("client_credentials")
    assert provider(force_refresh=True) != first
    assert ms.identity.token_requests.count("client_credentials") == before + 1


def test_unknown_tenant_is_reported(ms):
    with pytest.raises(tokens.OAuthError, match="does not know the tenant"):
        tokens.microsoft_app_token(ms_client(ms, "nope.onmicrosoft.com"))

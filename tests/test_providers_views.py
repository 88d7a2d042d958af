"""Connection pages and consent callbacks through the portal's views, against the Google and
Microsoft fakes (real google-auth-oauthlib and msal on the portal side): access rules, write-only
secrets, and every way a consent can come back (granted, denied, forged or stale state, expired or
reused code, admin consent)."""

from __future__ import annotations

import logging
import uuid

import pytest

from accounts.models import AuditEvent, Membership
from providers import consent
from providers.models import MailboxAuthorization, ProviderConnection
from tests.fakes.clock import FakeClock
from tests.fakes.google import GoogleFake
from tests.fakes.microsoft import MicrosoftFake
from tests.providers_fixtures import (
    ADELE,
    ALICE,
    BOB,
    CONTOSO,
    CONTOSO_ADMIN,
    MEGAN,
    MSAL_WARNING,
    admin_consent,
    google_connection,
    google_consent,
    local_path,
    microsoft_connection,
    microsoft_consent,
    page_text,
    point_at_fakes,  # noqa: F401  (fixture, used by name)
    start_consent,
)
from tests.test_crypto import database_dump

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings(MSAL_WARNING)]


@pytest.fixture(scope="module")
def clock():
    return FakeClock()


@pytest.fixture(scope="module")
def google(clock):
    fake = GoogleFake(mailboxes={ALICE: 3, BOB: 2}, big_message_bytes=0, clock=clock).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def ms(tmp_path_factory):
    fake = MicrosoftFake(tmp_path_factory.mktemp("ms-ca"), mailboxes={ADELE: 3, MEGAN: 2}, big_message_bytes=0).start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fakes(request, google, ms):
    request.getfixturevalue("point_at_fakes")(google, ms)


# --- pages and access --------------------------------------------------------------------------
def test_admin_registers_a_google_connection_and_the_page_explains_delegation(client_for, admin, tenant, google):
    client = client_for(admin)
    key = google.service_account_info
    import json

    response = client.post(f"/t/{tenant.slug}/connections/new/google/", {
        "name": "Workspace", "client_id": google.client_id, "client_secret": google.client_secret,
        "service_account_key": json.dumps(key)}, follow=True)
    page = page_text(response)
    connection = ProviderConnection.objects.get(tenant=tenant, name="Workspace")
    assert response.redirect_chain[-1][0].endswith(f"/connections/{connection.uuid}/")
    assert connection.service_account_email == key["client_email"]
    # What the Workspace admin must paste into the Admin console, verbatim.
    assert f'<code id="sa-client-id">{key["client_id"]}</code>' in page
    assert '<code id="sa-scopes">https://mail.google.com/,https://www.googleapis.com/auth/gmail.readonly</code>' in page
    assert "http://testserver/oauth/google/callback/" in page
    assert google.client_secret not in page and "PRIVATE KEY" not in page and key["private_key_id"] not in page
    event = AuditEvent.objects.get(action="provider.connection_create")
    assert google.client_secret not in str(event.detail) and "PRIVATE" not in str(event.detail)


def test_invalid_forms_never_echo_secrets(client_for, admin, tenant, google, ms):
    client = client_for(admin)
    bad_google = client.post(f"/t/{tenant.slug}/connections/new/google/", {
        "name": "", "client_id": "not-a-google-id", "client_secret": google.client_secret,
        "service_account_key": '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----SECRETKEYDATA"}'})
    assert bad_google.status_code == 200
    text = page_text(bad_google)
    assert "apps.googleusercontent.com" in text and "lacks client_email" in text
    assert google.client_secret not in text and "SECRETKEYDATA" not in text
    bad_ms = client.post(f"/t/{tenant.slug}/connections/new/microsoft/", {
        "name": "m", "client_id": "nope", "client_secret": ms.client_secret})
    assert bad_ms.status_code == 200 and ms.client_secret not in page_text(bad_ms) and "GUID" in page_text(bad_ms)
    assert not ProviderConnection.objects.exists()


def test_viewer_sees_status_but_no_actions_and_cannot_change_anything(client_for, admin, viewer, tenant, google):
    connection = google_connection(tenant, admin, google)
    client = client_for(viewer)
    assert "workspace" in page_text(client.get(f"/t/{tenant.slug}/connections/"))
    detail = page_text(client.get(f"/t/{tenant.slug}/connections/{connection.uuid}/"))
    assert "Domain-wide delegation" in detail and "consent-start" not in detail and "Remove the connection" not in detail
    base = f"/t/{tenant.slug}/connections/{connection.uuid}"
    for url in (f"{base}/consent/", f"{base}/remove/", f"{base}/test/", f"{base}/edit/",
                f"/t/{tenant.slug}/connections/new/google/"):
        assert client.post(url, {"name": "x"}).status_code == 403, url
    assert client.get(f"{base}/edit/").status_code == 403
    assert ProviderConnection.objects.get(pk=connection.pk).name == "workspace"


def test_outsiders_and_other_tenants_get_404(client_for, admin, outsider, tenant, other_tenant, google):
    connection = google_connection(tenant, admin, google)
    foreign = google_connection(other_tenant, outsider, google, name="globex")
    outside = client_for(outsider)
    assert outside.get(f"/t/{tenant.slug}/connections/{connection.uuid}/").status_code == 404
    assert outside.post(f"/t/{tenant.slug}/connections/{connection.uuid}/remove/").status_code == 404
    # A connection of another tenant through one's own tenant URL: 404 as well.
    assert outside.get(f"/t/{other_tenant.slug}/connections/{connection.uuid}/").status_code == 404
    inside = client_for(admin)
    assert inside.post(f"/t/{tenant.slug}/connections/{foreign.uuid}/remove/").status_code == 404
    assert ProviderConnection.objects.filter(pk=foreign.pk).exists()


def test_edit_keeps_secrets_left_empty_and_audits_what_changed(client_for, admin, tenant, google):
    connection = google_connection(tenant, admin, google)
    client = client_for(admin)
    form = page_text(client.get(f"/t/{tenant.slug}/connections/{connection.uuid}/edit/"))
    assert google.client_secret not in form and "PRIVATE KEY" not in form and "Leave empty to keep it" in form
    client.post(f"/t/{tenant.slug}/connections/{connection.uuid}/edit/",
                {"name": "Workspace EU", "client_id": google.client_id, "client_secret": "", "service_account_key": ""})
    connection.refresh_from_db()
    assert connection.name == "Workspace EU" and connection.client_secret == google.client_secret
    assert connection.has_service_account
    assert AuditEvent.objects.get(action="provider.credentials_change").detail == {"changed": ["name"]}


# --- Google consent ------------------------------------------------------------------------------
def test_google_consent_stores_an_encrypted_refresh_token_for_the_consenting_account(client_for, admin, tenant, google,
                                                                                   caplog):
    caplog.set_level(logging.DEBUG)
    connection = google_connection(tenant, admin, google)
    client = client_for(admin)
    url = start_consent(client, tenant, connection, login_hint=BOB)
    assert url.startswith(google.auth_uri) and "code_challenge_method=S256" in url and "access_type=offline" in url
    pending = client.session[consent.SESSION_KEY]
    assert len(pending) == 1 and pending[0]["tenant_slug"] == tenant.slug and pending[0]["code_verifier"]
    response = client.get(local_path(google.consent(url, user=BOB)), follow=True)
    page = page_text(response)
    assert f"{BOB} is connected through workspace" in page
    authorization = MailboxAuthorization.objects.get(connection=connection)
    assert authorization.email == BOB and authorization.status == "valid"
    assert authorization.scopes == ["https://www.googleapis.com/auth/gmail.readonly"]
    token = authorization.refresh_token
    assert token.startswith("1//") and token not in page
    assert consent.SESSION_KEY not in client.session or client.session[consent.SESSION_KEY] == []
    assert all(token not in r.getMessage() for r in caplog.records)
    assert AuditEvent.objects.filter(action="provider.consent_granted", target=BOB).exists()
    assert all(token not in str(e.detail) for e in AuditEvent.objects.all())


def test_denied_google_consent_connects_nothing(client_for, admin, tenant, google):
    connection = google_connection(tenant, admin, google)
    response = google_consent(client_for(admin), tenant, connection, google, ALICE, allow=False)
    assert "Access was denied on Google's consent page" in page_text(response)
    assert not MailboxAuthorization.objects.exists()


def test_forged_or_foreign_state_is_refused_before_any_token_request(client_for, admin, tenant, google):
    connection = google_connection(tenant, admin, google)
    client = client_for(admin)
    callback = google.consent(start_consent(client, tenant, connection), user=ALICE)
    forged = local_path(callback).replace("state=", "state=x")
    before = len(google.auth.token_requests)
    response = client.get(forged, follow=True)
    assert "state mismatch" in page_text(response) and response.redirect_chain
    assert len(google.auth.token_requests) == before and not MailboxAuthorization.objects.exists()
    # The forged state did not consume the genuine one, which works once...
    assert "is connected" in page_text(client.get(local_path(callback), follow=True))
    # ...and only once: the same redirect replayed is a stale state.
    assert "state mismatch" in page_text(client.get(local_path(callback), follow=True))


def test_coming_back_over_plain_http_says_what_is_wrong_and_what_to_do(client_for, admin, tenant, google,
                                                                       monkeypatch):
    connection = google_connection(tenant, admin, google)
    client = client_for(admin)
    callback = google.consent(start_consent(client, tenant, connection), user=ALICE)
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT")  # as on a real portal served over http
    page = page_text(client.get(local_path(callback), follow=True))
    assert "Google refused the token request" not in page and "insecure_transport" not in page
    assert "refuses to finish a Google sign-in over http" in page and "LEGACYFLO_PUBLIC_URL" in page
    assert not MailboxAuthorization.objects.exists()
    # A new "Connect a mailbox" is refused on the spot, with the same explanation.
    response = client.post(f"/t/{tenant.slug}/connections/{connection.uuid}/consent/", {}, follow=True)
    assert "refuses to finish a Google sign-in over http" in page_text(response)
    assert not response.redirect_chain[0][0].startswith(google.auth_uri)


def test_state_is_bound_to_the_session_that_started_the_consent(client, admin, owner, tenant, google):
    connection = google_connection(tenant, admin, google)
    client.force_login(admin)
    callback = google.consent(start_consent(client, tenant, connection), user=ALICE)
    client.logout()
    client.force_login(owner)  # another person (another session) follows the link
    assert "state mismatch" in page_text(client.get(local_path(callback), follow=True))
    assert not MailboxAuthorization.objects.exists()


def test_callback_rechecks_membership_and_role(client_for, admin, tenant, google):
    connection = google_connection(tenant, admin, google)
    client = client_for(admin)
    callback = google.consent(start_consent(client, tenant, connection), user=ALICE)
    Membership.objects.filter(user=admin, tenant=tenant).update(role="operator")  # demoted meanwhile
    assert client.get(local_path(callback)).status_code == 403
    assert not MailboxAuthorization.objects.exists()


def test_expired_and_reused_codes_are_explained(client_for, admin, tenant, google, clock):
    connection = google_connection(tenant, admin, google)
    client = client_for(admin)
    callback = google.consent(start_consent(client, tenant, connection), user=ALICE)
    clock.advance(601)  # Google's codes live ten minutes
    assert "expired or was already used" in page_text(client.get(local_path(callback), follow=True))

    # A code already redeemed (e.g. a consent replayed from another tab that kept its state).
    url = start_consent(client, tenant, connection)
    saved = list(client.session[consent.SESSION_KEY])
    callback = google.consent(url, user=ALICE)
    assert "is connected" in page_text(client.get(local_path(callback), follow=True))
    session = client.session
    session[consent.SESSION_KEY] = saved
    session.save()
    assert "expired or was already used" in page_text(client.get(local_path(callback), follow=True))


def test_pending_consents_expire(client_for, admin, tenant, google, monkeypatch):
    connection = google_connection(tenant, admin, google)
    client = client_for(admin)
    callback = google.consent(start_consent(client, tenant, connection), user=ALICE)
    session = client.session
    entries = session[consent.SESSION_KEY]
    entries[0]["started_at"] -= consent.PENDING_SECONDS + 1
    session[consent.SESSION_KEY] = entries
    session.save()
    assert "state mismatch" in page_text(client.get(local_path(callback), follow=True))


def test_test_and_revoke_buttons(client_for, admin, tenant, google):
    connection = google_connection(tenant, admin, google)
    client = client_for(admin)
    google_consent(client, tenant, connection, google, ALICE)
    authorization = MailboxAuthorization.objects.get(email=ALICE)
    base = f"/t/{tenant.slug}/connections/{connection.uuid}/mailboxes/{authorization.uuid}"
    assert "Valid" in page_text(client.post(f"{base}/test/", follow=True))
    page = page_text(client.post(f"{base}/revoke/", follow=True))
    assert f"The consent of {ALICE} is revoked" in page
    authorization.refresh_from_db()
    assert authorization.status == "revoked" and authorization.refresh_token == ""
    assert 'data-status="revoked"' in page
    assert AuditEvent.objects.filter(action="provider.consent_revoked", target=ALICE).exists()
    # An authorization is only reachable through its own connection.
    other = google_connection(tenant, admin, google, name="other")
    assert client.post(f"/t/{tenant.slug}/connections/{other.uuid}/mailboxes/{authorization.uuid}/test/").status_code == 404
    assert client.post(f"/t/{tenant.slug}/connections/{connection.uuid}/mailboxes/{uuid.uuid4()}/test/").status_code == 404


# --- Microsoft consent ---------------------------------------------------------------------------
def test_microsoft_delegated_consent_graph_then_imap(client_for, admin, tenant, ms):
    connection = microsoft_connection(tenant, admin, ms)
    client = client_for(admin)
    page = page_text(microsoft_consent(client, tenant, connection, ms, ADELE))
    assert f"{ADELE} is connected through m365" in page
    authorization = MailboxAuthorization.objects.get(email=ADELE)
    assert authorization.scopes == ["https://graph.microsoft.com/Mail.Read", "https://graph.microsoft.com/User.Read"]
    assert authorization.provider_tenant_id == ms.tenant_id and authorization.refresh_token not in page
    microsoft_consent(client, tenant, connection, ms, ADELE, purpose="imap")
    authorization.refresh_from_db()
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in authorization.scopes
    assert "https://graph.microsoft.com/Mail.Read" in authorization.scopes  # one row, scopes merged


def test_microsoft_cancel_and_forged_state(client_for, admin, tenant, ms):
    connection = microsoft_connection(tenant, admin, ms)
    client = client_for(admin)
    assert "Consent was declined" in page_text(microsoft_consent(client, tenant, connection, ms, ADELE, accept=False))
    url = start_consent(client, tenant, connection, login_hint=ADELE)
    forged = local_path(ms.consent(url, user=ADELE)).replace("state=", "state=evil")
    assert "state mismatch" in page_text(client.get(forged, follow=True))
    assert not MailboxAuthorization.objects.exists()


def test_microsoft_expired_code(client_for, admin, tenant, ms):
    connection = microsoft_connection(tenant, admin, ms)
    client = client_for(admin)
    callback = ms.consent(start_consent(client, tenant, connection, login_hint=ADELE), user=ADELE)
    ms.identity.code_lifetime = 0  # codes issued from now on are born expired
    try:
        callback = ms.consent(start_consent(client, tenant, connection, login_hint=ADELE), user=ADELE)
        page = page_text(client.get(local_path(callback), follow=True))
    finally:
        ms.identity.code_lifetime = 600
    assert "rejected the authorization code" in page and "AADSTS70008" in page
    assert not MailboxAuthorization.objects.exists()


def test_admin_consent_records_the_tenant_and_enables_app_only(client_for, admin, tenant, ms):
    connection = microsoft_connection(tenant, admin, ms, directory=CONTOSO)
    client = client_for(admin)
    base = f"/t/{tenant.slug}/connections/{connection.uuid}"
    page = page_text(client.post(f"{base}/test/", follow=True))
    assert "administrator of the tenant must grant consent" in page
    assert ProviderConnection.objects.get(pk=connection.pk).check_state == "error"

    declined = page_text(admin_consent(client, tenant, connection, ms, CONTOSO_ADMIN, accept=False))
    assert "declined to grant consent" in declined
    assert ProviderConnection.objects.get(pk=connection.pk).consented_tenant_id == ""

    page = page_text(admin_consent(client, tenant, connection, ms, CONTOSO_ADMIN))
    connection.refresh_from_db()
    assert connection.consented_tenant_id == ms.other_tenant_id and connection.admin_consented_at
    assert f"Admin consent granted by the tenant {ms.other_tenant_id}" in page
    assert "Microsoft issued an app-only token" in page_text(client.post(f"{base}/test/", follow=True))
    assert AuditEvent.objects.filter(action="provider.admin_consent_granted",
                                     detail__microsoft_tenant=ms.other_tenant_id).exists()


def test_admin_consent_with_a_forged_state(client_for, admin, tenant, ms):
    connection = microsoft_connection(tenant, admin, ms, directory=CONTOSO)
    client = client_for(admin)
    response = client.post(f"/t/{tenant.slug}/connections/{connection.uuid}/admin-consent/")
    assert "/v2.0/adminconsent?" in response["Location"] and "state=" in response["Location"]
    redirect = local_path(ms.admin_consent(response["Location"], admin=CONTOSO_ADMIN)).replace("state=", "state=x")
    assert "state mismatch" in page_text(client.get(redirect, follow=True))
    assert ProviderConnection.objects.get(pk=connection.pk).consented_tenant_id == ""


# --- secrets ----------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_database_dump_and_pages_hold_no_secret(client_for, admin, tenant, google, ms):
    gconn = google_connection(tenant, admin, google)
    mconn = microsoft_connection(tenant, admin, ms)
    client = client_for(admin)
    google_consent(client, tenant, gconn, google, ALICE)
    microsoft_consent(client, tenant, mconn, ms, ADELE)
    secrets = [google.client_secret, ms.client_secret,
               google.service_account_info["private_key"].splitlines()[1],  # a line of the PEM body
               *[a.refresh_token for a in MailboxAuthorization.objects.all()]]
    assert len(secrets) == 5 and all(secrets)
    dump = database_dump()
    assert "workspace" in dump and ALICE in dump  # the dump is complete...
    for secret in secrets:
        assert secret not in dump  # ...and none of the secrets is in it in clear
    pages = "".join(page_text(client.get(url)) for url in (
        f"/t/{tenant.slug}/connections/", f"/t/{tenant.slug}/connections/{gconn.uuid}/",
        f"/t/{tenant.slug}/connections/{mconn.uuid}/", f"/t/{tenant.slug}/connections/{gconn.uuid}/edit/",
        f"/t/{tenant.slug}/connections/{mconn.uuid}/edit/", f"/t/{tenant.slug}/audit/"))
    for secret in secrets:
        assert secret not in pages


def test_redirect_uri_follows_the_public_url_behind_a_proxy(client_for, admin, tenant, google, settings):
    settings.LEGACYFLO_PUBLIC_URL = "http://127.0.0.1:9443"  # what Google knows; the request arrives as testserver
    connection = google_connection(tenant, admin, google)
    client = client_for(admin)
    url = start_consent(client, tenant, connection)
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A9443%2Foauth%2Fgoogle%2Fcallback%2F" in url
    callback = google.consent(url, user=ALICE)
    assert callback.startswith("http://127.0.0.1:9443/oauth/google/callback/?")
    assert "is connected" in page_text(client.get(local_path(callback), follow=True))
    assert "http://127.0.0.1:9443/oauth/google/callback/" in page_text(client.get(f"/t/{tenant.slug}/connections/{connection.uuid}/"))


def test_csrf_is_required_and_callbacks_need_a_login(admin, tenant, google, client):
    from django.test import Client

    connection = google_connection(tenant, admin, google)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin)
    base = f"/t/{tenant.slug}/connections/{connection.uuid}"
    for url in (f"{base}/consent/", f"{base}/remove/", f"{base}/test/", f"/t/{tenant.slug}/connections/new/google/"):
        assert strict.post(url, {"name": "x"}).status_code == 403, url
    assert ProviderConnection.objects.filter(pk=connection.pk).exists()
    for url in ("/oauth/google/callback/?state=x&code=y", "/oauth/microsoft/callback/?state=x&code=y"):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]

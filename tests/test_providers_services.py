"""providers.services, selectors and credentials against the Google and Microsoft fakes."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError

from accounts.models import AuditEvent
from providers import consent, selectors, services
from providers.models import MailboxAuthorization, ProviderConnection
from tests.fakes.google import GoogleFake
from tests.fakes.microsoft import MicrosoftFake
from tests.providers_fixtures import (
    ADELE,
    ALICE,
    BOB,
    MEGAN,
    MSAL_WARNING,
    google_connection,
    microsoft_connection,
    point_at_fakes,  # noqa: F401  (fixture, used by name)
)

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings(MSAL_WARNING)]
GOOGLE_REDIRECT = "http://127.0.0.1:8000/oauth/google/callback/"
MS_REDIRECT = "http://127.0.0.1:8000/oauth/microsoft/callback/"


@pytest.fixture(scope="module")
def google():
    fake = GoogleFake(mailboxes={ALICE: 2, BOB: 2}, big_message_bytes=0).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def ms(tmp_path_factory):
    fake = MicrosoftFake(tmp_path_factory.mktemp("ms-ca"), mailboxes={ADELE: 2, MEGAN: 2}, big_message_bytes=0).start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fakes(request, google, ms):
    request.getfixturevalue("point_at_fakes")(google, ms)


def google_consented(connection, admin, google, user) -> MailboxAuthorization:
    url, pending = consent.start_google(connection, redirect_uri=GOOGLE_REDIRECT, login_hint=user,
                                        tenant_slug=connection.tenant.slug, user_id=admin.pk)
    return services.consent_google_finish(connection=connection, actor=admin, pending=pending,
                                          authorization_response=google.consent(url, user=user))


def microsoft_consented(connection, admin, ms, user, purpose="graph") -> MailboxAuthorization:
    url, pending = consent.start_microsoft(connection, redirect_uri=MS_REDIRECT, login_hint=user, purpose=purpose,
                                           tenant_slug=connection.tenant.slug, user_id=admin.pk)
    from urllib.parse import parse_qsl, urlsplit

    query = dict(parse_qsl(urlsplit(ms.consent(url, user=user)).query))
    return services.consent_microsoft_finish(connection=connection, actor=admin, pending=pending, query=query)


def test_service_account_keys_are_checked_without_quoting_them(tenant, admin, google):
    key = dict(google.service_account_info)
    for text, message in (("not json", "not a JSON key file"), ('{"type": "authorized_user"}', "not a service-account"),
                          (json.dumps({**key, "private_key": "abc"}), "not a PEM private key"),
                          (json.dumps({k: v for k, v in key.items() if k != "client_email"}), "lacks client_email")):
        with pytest.raises(ValidationError, match=message) as info:
            services.connection_create(tenant=tenant, actor=admin, provider="google", name="x",
                                       service_account_key=text)
        assert key["private_key"][40:80] not in str(info.value)
    with pytest.raises(ValidationError, match="client id and secret"):
        services.connection_create(tenant=tenant, actor=admin, provider="google", name="x")
    google_connection(tenant, admin, google, name="Workspace")
    with pytest.raises(ValidationError, match="already exists"):
        google_connection(tenant, admin, google, name="workspace")


def test_connection_lookup_by_name_or_uuid_stays_in_the_tenant(tenant, other_tenant, admin, outsider, google, ms):
    mine = google_connection(tenant, admin, google)
    theirs = google_connection(other_tenant, outsider, google, name="theirs")
    assert selectors.connection_by_ref(tenant, "workspace", "google") == mine
    assert selectors.connection_by_ref(tenant, "WORKSPACE", "google") == mine
    assert selectors.connection_by_ref(tenant, str(mine.uuid), "google") == mine
    assert selectors.connection_by_ref(tenant, str(theirs.uuid), "google") is None
    assert selectors.connection_by_ref(tenant, "theirs") is None
    assert selectors.connection_by_ref(tenant, "workspace", "microsoft") is None


def test_google_delegation_check_names_each_scope(tenant, admin, google):
    connection = google_connection(tenant, admin, google)
    checked = services.connection_check(connection=connection, actor=admin, mailbox=ALICE)
    assert checked.check_state == "valid"
    assert "IMAP (GMAILOAUTH): a token for alice@legacyflo.test was issued." in checked.check_detail
    assert "Gmail API (GMAILAPI): a token" in checked.check_detail
    failed = services.connection_check(connection=connection, actor=admin, mailbox="nobody@legacyflo.test")
    assert failed.check_state == "error" and "does not know the impersonated user" in failed.check_detail
    with pytest.raises(ValidationError, match="Enter a mailbox"):
        services.connection_check(connection=connection, actor=admin)
    assert AuditEvent.objects.filter(action="provider.connection_test").count() == 2


def test_microsoft_app_only_check(tenant, admin, ms):
    connection = microsoft_connection(tenant, admin, ms)  # the main tenant already consented
    assert services.connection_check(connection=connection, actor=admin).check_state == "valid"
    delegated_only = microsoft_connection(tenant, admin, ms, name="any", directory="")
    with pytest.raises(ValidationError, match="App-only access needs"):
        services.connection_check(connection=delegated_only, actor=admin)


def test_google_consent_check_and_revocation(tenant, admin, google):
    connection = google_connection(tenant, admin, google)
    authorization = google_consented(connection, admin, google, BOB)
    token = authorization.refresh_token
    assert authorization.email == BOB and authorization.status == "valid"
    assert services.authorization_check(authorization=authorization, actor=admin).status == "valid"

    google.auth.revoke_user(BOB)  # the user removed the app in their Google account
    checked = services.authorization_check(authorization=authorization, actor=admin)
    assert checked.status == "revoked" and "expired or revoked" in checked.status_detail
    assert selectors.authorization_for(connection, BOB) is None  # requests no longer pick it

    again = google_consented(connection, admin, google, BOB)  # consent again: the same row, a new token
    assert again.pk == authorization.pk and again.status == "valid" and again.refresh_token != token
    token = again.refresh_token
    services.authorization_revoke(authorization=again, actor=admin)
    assert google.auth.grants[token].revoked
    again.refresh_from_db()
    assert again.refresh_token == "" and again.status == "revoked"
    assert AuditEvent.objects.get(action="provider.consent_revoked").detail["at_provider"] == "revoked"


def test_microsoft_check_keeps_the_rotated_refresh_token_and_sees_revocation(tenant, admin, ms):
    connection = microsoft_connection(tenant, admin, ms)
    authorization = microsoft_consented(connection, admin, ms, ADELE)
    first = authorization.refresh_token
    checked = services.authorization_check(authorization=authorization, actor=admin)
    assert checked.status == "valid" and checked.refresh_token != first  # Microsoft rotated it; we kept the new one
    ms.identity.revoke_sessions(ADELE)
    checked = services.authorization_check(authorization=checked, actor=admin)
    assert checked.status == "revoked" and "AADSTS50173" in checked.status_detail


def test_rotation_from_a_worker_never_resurrects_a_revoked_consent(tenant, admin, ms):
    connection = microsoft_connection(tenant, admin, ms)
    authorization = microsoft_consented(connection, admin, ms, MEGAN)
    services.authorization_store_refresh_token(authorization_id=authorization.pk, refresh_token="rotated-1")
    authorization.refresh_from_db()
    assert authorization.refresh_token == "rotated-1"
    services.authorization_revoke(authorization=authorization, actor=admin)
    services.authorization_store_refresh_token(authorization_id=authorization.pk, refresh_token="rotated-2")
    authorization.refresh_from_db()
    assert authorization.refresh_token == "" and authorization.status == "revoked"


def test_changing_the_client_id_invalidates_consents(tenant, admin, ms):
    connection = microsoft_connection(tenant, admin, ms)
    authorization = microsoft_consented(connection, admin, ms, ADELE)
    services.connection_update(connection=connection, actor=admin, name=connection.name,
                               client_id="11111111-2222-3333-4444-555555555555", directory_tenant=ms.tenant_domain)
    authorization.refresh_from_db()
    connection.refresh_from_db()
    assert authorization.refresh_token == "" and authorization.status == "revoked"
    assert connection.client_secret == ms.client_secret  # kept: the field was left empty


@pytest.mark.django_db(transaction=True)
def test_removal_is_refused_while_requests_use_the_connection(tenant, admin, google):
    from buckets.models import Bucket
    from requests_app.models import MigrationRequest

    connection = google_connection(tenant, admin, google)
    authorization = google_consented(connection, admin, google, ALICE)
    bucket = Bucket.objects.create(tenant=tenant, name="b", region="us-east-1", status="verified")
    req = MigrationRequest.objects.create(tenant=tenant, request_type="GMAILAPI-S3-ZIP", bucket=bucket, file_name="a",
                                          source_user=ALICE, options={"connection": str(connection.uuid)})
    with pytest.raises(ValidationError, match="Queued or running requests"):
        services.connection_remove(connection=connection, actor=admin)
    MigrationRequest.objects.filter(pk=req.pk).update(state="completed")
    token = authorization.refresh_token
    services.connection_remove(connection=connection, actor=admin)
    assert not ProviderConnection.objects.exists() and not MailboxAuthorization.objects.exists()
    assert google.auth.grants[token].revoked  # the stored consent was withdrawn at Google too

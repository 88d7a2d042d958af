"""Fixtures for the provider-connection tests: the Google and Microsoft fakes, the portal's settings
pointed at them, connections registered through the real services, and consent played through the
portal's own views (the fake's consent page answered without a browser)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from tests.fakes.google import GoogleFake
from tests.fakes.microsoft import OTHER_TENANT_DOMAIN, MicrosoftFake

ALICE, BOB = "alice@legacyflo.test", "bob@legacyflo.test"
ADELE, MEGAN = "adele@legacyflo.onmicrosoft.com", "megan@legacyflo.onmicrosoft.com"
CONTOSO = OTHER_TENANT_DOMAIN
CONTOSO_ADMIN = f"admin@{OTHER_TENANT_DOMAIN}"

# msal recommends form_post; the portal deliberately uses query (see connectors.oauth.microsoft_start_auth).
MSAL_WARNING = "ignore:response_mode=.form_post. is recommended:UserWarning"


def fake_settings(google: GoogleFake | None, ms: MicrosoftFake | None) -> dict[str, str]:
    values: dict[str, str] = {}
    if google is not None:
        values.update(google.settings())
    if ms is not None:
        values.update(ms.settings())
    return values


@pytest.fixture
def point_at_fakes(settings, monkeypatch):
    """``point_at_fakes(google, ms)``: Django settings (and os.environ, for worker subprocesses)."""

    def apply(google: GoogleFake | None = None, ms: MicrosoftFake | None = None, **extra) -> dict[str, str]:
        monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the Google fake speaks plain http
        values = {**fake_settings(google, ms), **{k: str(v) for k, v in extra.items()}}
        for name, value in values.items():
            setattr(settings, name, int(value) if name.endswith("_PORT") else value)
            monkeypatch.setenv(name, value)
        return values

    return apply


def google_connection(tenant, actor, google: GoogleFake, *, name: str = "workspace", client: bool = True,
                      service_account: bool = True):
    from providers import services

    return services.connection_create(
        tenant=tenant, actor=actor, provider="google", name=name,
        client_id=google.client_id if client else "", client_secret=google.client_secret if client else "",
        service_account_key=json.dumps(google.service_account_info) if service_account else "")


def microsoft_connection(tenant, actor, ms: MicrosoftFake, *, name: str = "m365", directory: str | None = None):
    from providers import services

    return services.connection_create(
        tenant=tenant, actor=actor, provider="microsoft", name=name, client_id=ms.client_id,
        client_secret=ms.client_secret, directory_tenant=ms.tenant_domain if directory is None else directory)


def local_path(url: str) -> str:
    """The path and query of a redirect back to the portal (the test client's http://testserver/...)."""
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def start_consent(client, tenant, connection, **form) -> str:
    response = client.post(f"/t/{tenant.slug}/connections/{connection.uuid}/consent/", form)
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def google_consent(client, tenant, connection, google: GoogleFake, user: str, *, allow: bool = True):
    """Admin presses "Connect a mailbox", the user answers Google's page, the browser returns."""
    callback = google.consent(start_consent(client, tenant, connection, login_hint=user), allow=allow, user=user)
    return client.get(local_path(callback), follow=True)


def microsoft_consent(client, tenant, connection, ms: MicrosoftFake, user: str, *, accept: bool = True,
                      purpose: str = "graph"):
    url = start_consent(client, tenant, connection, login_hint=user, purpose=purpose)
    return client.get(local_path(ms.consent(url, accept=accept, user=user)), follow=True)


def admin_consent(client, tenant, connection, ms: MicrosoftFake, admin: str, *, accept: bool = True):
    response = client.post(f"/t/{tenant.slug}/connections/{connection.uuid}/admin-consent/")
    assert response.status_code == 302
    return client.get(local_path(ms.admin_consent(response["Location"], accept=accept, admin=admin)), follow=True)


def page_text(response) -> str:
    """The page with entities decoded (Django escapes quotes in messages)."""
    import html

    return html.unescape(response.content.decode())

"""In a real browser (Playwright + Debian's Chromium): an administrator registers Google and Microsoft
connections, completes the consent on the fakes' pages (Google per-user consent, Microsoft delegated
sign-in and admin consent), then backs mailboxes up through a real worker subprocess."""

from __future__ import annotations

import os

import pytest

from providers.models import MailboxAuthorization, ProviderConnection
from requests_app.models import MigrationRequest
from tests.browser import login
from tests.conftest import PASSWORD
from tests.fakes.google import GoogleFake
from tests.fakes.microsoft import MicrosoftFake
from tests.portal_fixtures import archive_digests, submit, wait_for
from tests.providers_fixtures import (
    ADELE,
    ALICE,
    BOB,
    CONTOSO_ADMIN,
    MEGAN,
    MSAL_WARNING,
    point_at_fakes,  # noqa: F401  (fixture, used by name)
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.filterwarnings(MSAL_WARNING)]
LYNNE = "lynne@contoso.onmicrosoft.com"


@pytest.fixture(scope="module")
def google():
    fake = GoogleFake(mailboxes={ALICE: 60, BOB: 5}, big_message_bytes=0).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def ms(tmp_path_factory):
    fake = MicrosoftFake(tmp_path_factory.mktemp("ms-ca"), mailboxes={ADELE: 40, MEGAN: 5}, big_message_bytes=0).start()
    yield fake
    fake.stop()


@pytest.fixture
def fakes(request, google, ms):
    """Settings for the live server (same process) and os.environ for the worker subprocess."""
    return request.getfixturevalue("point_at_fakes")(google, ms)


@pytest.fixture
def worker_env(redis_server, tmp_path, fakes):
    """portal_fixtures' worker environment without its Dovecot, taken after the fakes' settings."""
    from django.db import connection

    settings_dict = connection.settings_dict
    if settings_dict["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{settings_dict['NAME']}"
    else:
        url = (f"postgres://{settings_dict['USER'] or 'postgres'}@{settings_dict['HOST'] or '127.0.0.1'}:"
               f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}")
    return {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_server.url, "LEGACYFLO_VAR_DIR": str(tmp_path),
            "LEGACYFLO_HEARTBEAT_SECONDS": "1", "LEGACYFLO_PART_SIZE": str(5 * 1024 * 1024)}


@pytest.fixture
def tab(browser, live_server, fakes):
    """A page that accepts the Microsoft fake's test CA (the Google fake is plain http)."""
    context = browser.new_context(base_url=live_server.url, ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(20000)
    yield page
    context.close()


def new_connection(tab, provider: str, fields: dict[str, str]) -> None:
    tab.click("a:has-text('Connections')")
    tab.click(f"a:has-text('Connect {provider}')")
    for selector, value in fields.items():
        tab.fill(selector, value)
    tab.click("button:has-text('Save')")
    tab.wait_for_selector("#facts")


def request_form(tab, code: str, user: str, connection: str, bucket, file_name: str) -> None:
    tab.click("a:has-text('Requests')")
    tab.click("a:has-text('New request')")
    tab.click(f"a:has-text('{code}')")
    tab.fill("#id_source_user", user)
    tab.select_option("#id_connection", label=connection)
    tab.select_option("#id_bucket", str(bucket.uuid))
    tab.fill("#id_s3_prefix", "browser")
    tab.fill("#id_file_name", file_name)


def submit_and_wait(tab) -> None:
    tab.click("button:has-text('Submit request')")
    tab.wait_for_url("**/requests/*/")
    tab.wait_for_selector("#progress [data-state=completed]", timeout=90000)


def test_google_consent_in_the_browser_then_a_gmail_api_backup(tab, admin, tenant, google, dest_bucket, rclone,
                                                               worker_process):
    login(tab, admin.email, PASSWORD)
    new_connection(tab, "Google", {"#id_name": "workspace", "#id_client_id": google.client_id,
                                   "#id_client_secret": google.client_secret})
    assert google.client_secret not in tab.content()
    tab.fill("#id_login_hint", ALICE)
    tab.click("#consent-start")
    tab.wait_for_url(f"{google.base_url}/**")  # Google's consent page
    assert tab.input_value("#user") == ALICE  # the hint pre-selected the account
    tab.click("#allow")
    tab.wait_for_selector(f"tr[data-mailbox='{ALICE}'][data-status=valid]")
    assert f"{ALICE} is connected through workspace" in tab.inner_text(".messages")
    tab.click(f"tr[data-mailbox='{ALICE}'] button.test")
    assert "Valid" in tab.inner_text(".messages")

    # A second consent, refused on Google's page: nothing is stored and the page says why.
    tab.fill("#id_login_hint", BOB)
    tab.click("#consent-start")
    tab.click("#deny")
    tab.wait_for_selector(".msg.error")
    assert "denied" in tab.inner_text(".messages")
    assert list(MailboxAuthorization.objects.values_list("email", flat=True)) == [ALICE]

    worker_process()
    request_form(tab, "GMAILAPI-S3-ZIP", ALICE, "workspace", dest_bucket, "alice-gmail")
    tab.check("#id_include_spam_trash")
    tab.click("#test-connection")
    tab.wait_for_selector("[data-test=ok]")
    assert "All Mail" in tab.inner_text("#test-result")
    submit_and_wait(tab)
    req = MigrationRequest.objects.get(file_name="alice-gmail")
    assert req.options["credential"] == "user" and req.options["include_spam_trash"] is True
    archive = archive_digests(rclone.client(), dest_bucket.name, "browser/alice-gmail.zip")
    assert sorted(archive["All Mail"]) == sorted(m.sha256 for m in google.mailboxes[ALICE].messages.values())


def test_microsoft_delegated_and_admin_consent_in_the_browser_then_graph_backups(tab, admin, tenant, ms, dest_bucket,
                                                                               rclone, worker_process):
    login(tab, admin.email, PASSWORD)
    new_connection(tab, "Microsoft", {"#id_name": "m365", "#id_client_id": ms.client_id,
                                      "#id_client_secret": ms.client_secret})
    # Delegated: Adele signs in and accepts on Microsoft's page (TLS with the fake's CA).
    tab.fill("#id_login_hint", ADELE)
    tab.select_option("#id_purpose", "graph")
    tab.click("#consent-start")
    tab.wait_for_url(f"{ms.base_url}/**")
    tab.select_option("#user", ADELE)
    tab.click("#accept")
    tab.wait_for_selector(f"tr[data-mailbox='{ADELE}'][data-status=valid]")

    # Admin consent by another organisation's administrator: its tenant is recorded for app-only access.
    tab.click("#admin-consent-start")
    tab.wait_for_url(f"{ms.base_url}/**")
    tab.select_option("#user", CONTOSO_ADMIN)
    tab.click("#accept")
    tab.wait_for_selector("#app-only-test")
    assert ms.other_tenant_id in tab.inner_text("#admin-consent")
    tab.click("#app-only-test")
    assert "app-only token" in tab.inner_text(".messages")
    connection = ProviderConnection.objects.get(name="m365")
    assert connection.consented_tenant_id == ms.other_tenant_id

    worker_process()
    request_form(tab, "M365API-S3-ZIP", ADELE, "m365", dest_bucket, "adele-graph")
    submit_and_wait(tab)  # delegated: /me with Adele's consent
    app_only = submit(tenant, admin, "M365API-S3-ZIP", {  # app-only in Contoso, which Lynne belongs to
        "source_user": LYNNE, "connection": "m365", "bucket": str(dest_bucket.uuid), "s3_prefix": "browser",
        "file_name": "lynne-graph"})
    assert app_only.options["credential"] == "app_only"
    wait_for(lambda: MigrationRequest.objects.get(pk=app_only.pk).is_final, timeout=90)
    app_only.refresh_from_db()
    assert app_only.state == "completed", app_only.error

    s3 = rclone.client()
    for upn, key in ((ADELE, "browser/adele-graph.zip"), (LYNNE, "browser/lynne-graph.zip")):
        expected = {path: sorted(m.sha256 for m in msgs) for path, msgs in ms.mailboxes[upn].messages_by_path().items()
                    if msgs}
        actual = {folder.replace("\u2215", "/"): sorted(d) for folder, d in archive_digests(s3, dest_bucket.name, key).items()}
        assert actual == expected, upn

"""In a real browser: pages stay within the window whatever their text, errors are the portal's
own styled pages, the icon exists, and actions say they worked."""

from __future__ import annotations

import uuid

import pytest

from accounts.models import User
from connectors.pipeline.ledger import FAILED, MESSAGE, EntryRecord, PartRecord
from requests_app.ledger import DatabaseLedger
from requests_app.lifecycle import claim
from tests.browser import login
from tests.conftest import PASSWORD
from tests.portal_fixtures import imap_form, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TOPBAR_BACKGROUND = "rgb(17, 26, 46)"  # #111a2e: the stylesheet is applied


def page_fits(page) -> bool:
    """Nothing wider than the window, and no table wider than the box it sits in."""
    return page.evaluate("""document.documentElement.scrollWidth <= window.innerWidth
        && [...document.querySelectorAll('table')].every(
            (t) => t.getBoundingClientRect().right <= t.parentElement.getBoundingClientRect().right + 1)""")


def styled_chrome(page) -> bool:
    return page.evaluate(
        "getComputedStyle(document.querySelector('header.topbar')).backgroundColor") == TOPBAR_BACKGROUND \
        and page.locator("header.topbar a.brand").count() == 1


def test_a_200_character_title_without_spaces_never_widens_a_page(page, operator, tenant, dovecot, dest_bucket,
                                                                   rq_queue):
    title = "Q" * 200
    req = submit(tenant, operator, "IMAP-S3-ZIP", {**imap_form(dovecot, dest_bucket, file_name="wide"),
                                                   "title": title})
    login(page, operator.email, PASSWORD)
    for path in ("requests/", "", f"requests/{req.uuid}/", f"requests/{req.uuid}/report/"):
        page.goto(f"/t/{tenant.slug}/{path}")
        assert page_fits(page), (path, page.evaluate("document.documentElement.scrollWidth"))
    page.goto(f"/t/{tenant.slug}/requests/")
    link = page.locator(f"#requests a[title='{title}']")  # cut to one line, the whole title in its tooltip
    assert link.count() == 1 and link.bounding_box()["height"] < 30


def test_a_viewer_opening_the_audit_log_gets_the_styled_403_page(page, viewer, tenant):
    login(page, viewer.email, PASSWORD)
    response = page.goto(f"/t/{tenant.slug}/audit/")
    assert response.status == 403
    assert styled_chrome(page)
    assert page.inner_text("#error-page h1") == "You cannot open this page"
    assert "needs the Admin role" in page.inner_text("#error-reason")
    assert "Your role in Acme Corp is Viewer" in page.inner_text("#error-page")
    assert page.locator("nav.mainnav a:has-text('Requests')").count() == 1  # the tenant's menu is still there
    page.click("#error-page a:has-text('Back to Acme Corp')")
    assert page.locator("h1").first.inner_text() == "Acme Corp"


def test_a_missing_page_gets_the_styled_404_page(page, viewer, tenant):
    login(page, viewer.email, PASSWORD)
    for path in (f"/t/{tenant.slug}/requests/{uuid.uuid4()}/", "/no/such/page/", "/t/globex/requests/"):
        response = page.goto(path)
        assert response.status == 404, path
        assert styled_chrome(page) and page.inner_text("#error-page h1") == "Page not found"


def test_a_server_error_gets_the_styled_500_page(page, viewer, tenant, settings):
    settings.ROOT_URLCONF = "tests.error_urls"
    login(page, viewer.email, PASSWORD)
    response = page.goto("/boom/")
    assert response.status == 500
    assert styled_chrome(page) and page.inner_text("#error-page h1") == "Something went wrong on our side"
    assert "a bug in a view" not in page.content()


def test_every_page_has_an_icon_and_no_request_fails(page, viewer, tenant):
    failed = []
    page.on("response", lambda response: response.status >= 400 and failed.append(response.url))
    login(page, viewer.email, PASSWORD)
    for path in ("", "requests/", "buckets/", "members/"):
        page.goto(f"/t/{tenant.slug}/{path}")
        page.wait_for_load_state("networkidle")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert page.request.get(icon).headers["content-type"] == "image/svg+xml"
    favicon = page.request.get("/favicon.ico")  # asked for by browsers and tools whatever the page links
    assert favicon.ok and favicon.headers["content-type"] == "image/svg+xml"
    assert failed == []


def test_changing_the_password_says_it_worked(page, viewer, tenant):
    login(page, viewer.email, PASSWORD)
    page.click("header a:has-text('Password')")
    page.fill("#id_old_password", PASSWORD)
    page.fill("#id_new_password1", "a-brand-new-passphrase-77")
    page.fill("#id_new_password2", "a-brand-new-passphrase-77")
    page.click("main button[type=submit]")
    page.wait_for_url(lambda url: "/password/" not in url)
    assert "Your password was changed." in page.inner_text(".messages .success")
    assert User.objects.get(pk=viewer.pk).check_password("a-brand-new-passphrase-77")


def test_a_message_the_source_did_not_serve_says_its_subject_is_unknown(page, viewer, operator, tenant, dovecot,
                                                                       dest_bucket, rq_queue):
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="one-failed"))
    ledger = DatabaseLedger(req.pk, claim(req.pk))
    ledger.begin_upload("mail/one-failed.zip", "upload-1", "zip")
    ledger.commit_part(PartRecord(1, "etag-1", 100), [EntryRecord(
        MESSAGE, "INBOX", "4242", FAILED, error="The server returned no content (NIL) for this message.")])
    login(page, viewer.email, PASSWORD)
    page.goto(f"/t/{tenant.slug}/requests/{req.uuid}/report/")
    row = page.locator("#failures tbody tr").first
    assert "4242" in row.inner_text()
    assert row.locator("td").nth(2).inner_text() == "unknown (the source did not serve the message)"

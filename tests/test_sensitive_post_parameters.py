"""Credentials typed into a form never appear in an error report: Django's debug 500 page (DEBUG
on, as ``make run`` runs) and the mail to ADMINS (DEBUG off), neither in the POST data nor in the
local variables of the views and services that handled them."""

from __future__ import annotations

import re
import sys
import uuid

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.tokens import default_token_generator
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client, RequestFactory
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter
from django.views.decorators.debug import sensitive_variables

from accounts.views import invitation_accept
from buckets.models import Bucket
from buckets.views import bucket_credentials, bucket_register
from providers.views import connection_create, connection_edit
from requests_app.views import request_create, request_test_connection
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

SECRET = "hunter2-must-not-show"


@pytest.mark.parametrize(("view", "kwargs", "fields"), [
    (bucket_register, {"tenant_slug": "x"}, ["secret_access_key"]),
    (bucket_credentials, {"tenant_slug": "x", "bucket_uuid": uuid.uuid4()}, ["secret_access_key"]),
    (request_create, {"tenant_slug": "x", "type_code": "IMAP-S3-ZIP"}, ["source_password"]),
    (request_test_connection, {"tenant_slug": "x", "type_code": "IMAP-S3-ZIP"}, ["source_password"]),
    (connection_create, {"tenant_slug": "x", "provider": "google"}, ["client_secret", "service_account_key"]),
    (connection_edit, {"tenant_slug": "x", "connection_uuid": uuid.uuid4()}, ["client_secret", "service_account_key"]),
    (invitation_accept, {"token": "not-a-token"}, ["password1", "password2"]),
])
def test_secrets_posted_to_a_view_are_hidden_from_error_reports(view, kwargs, fields):
    request = RequestFactory().post("/t/x/", {**{name: SECRET for name in fields}, "name": "visible"})
    request.user = AnonymousUser()
    request.session = {}
    view(request, **kwargs)  # an anonymous user is sent away: the report filter is set first
    shown = SafeExceptionReporterFilter().get_post_parameters(request)
    assert shown["name"] == "visible"
    for name in fields:
        assert shown[name] != SECRET and SECRET not in str(shown)


# --- errors inside the views that handle credentials ---------------------------------------------
def refuse_audit_writes() -> None:
    """Make the database refuse every audit event from now on (a real database error, raised
    inside the services after they received the credentials: every one of them audits)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN "
                           "RAISE EXCEPTION 'the audit log refuses writes'; END $$ LANGUAGE plpgsql")
            cursor.execute("CREATE TRIGGER refuse_audit BEFORE INSERT ON accounts_auditevent "
                           "FOR EACH ROW EXECUTE FUNCTION refuse_audit()")
        else:
            cursor.execute("CREATE TRIGGER refuse_audit BEFORE INSERT ON accounts_auditevent "
                           "BEGIN SELECT RAISE(ABORT, 'the audit log refuses writes'); END")


def csv_file() -> SimpleUploadedFile:
    body = ("request_type,title,source_server,source_user,source_password,bucket,file_name\n"
            f"IMAP-S3-ZIP,Alice,imap.acme.test,alice@acme.test,{SECRET},acme-backups,alice\n")
    return SimpleUploadedFile("requests.csv", body.encode(), content_type="text/csv")


def _bucket(tenant) -> Bucket:
    return Bucket.objects.create(tenant=tenant, name="acme-backups", region="us-east-1", status="verified",
                                 purpose="destination", endpoint_url="https://s3.acme.test")


def _imap_form() -> dict:
    return {"source_server": "127.0.0.1", "source_port": "9", "source_security": "none",
            "source_user": "alice@acme.test", "source_password": SECRET}


def _invitation_path(client, tenant) -> str:
    client.post(f"/t/{tenant.slug}/members/invite/", {"email": "new.person@acme.test", "role": "operator"})
    path = re.search(r"/invite/\S+/", mail.outbox[-1].body).group(0)
    client.post("/accounts/logout/")
    mail.outbox.clear()
    return path


def _reset_path(client, owner) -> str:
    """The password-reset link's form (Django swaps the token for a session entry first)."""
    uid = urlsafe_base64_encode(force_bytes(owner.pk))
    return client.get(f"/accounts/password/reset/{uid}/{default_token_generator.make_token(owner)}/")["Location"]


# Each case: who is logged in (a fixture name or None), then (client, tenant, user) → (path, POST data).
CASES = {
    "bucket registration": ("admin", lambda c, t, u: (f"/t/{t.slug}/buckets/register/", {
        "name": "acme-new-bucket", "region": "us-east-1", "endpoint_url": "https://s3.acme.test",
        "purpose": "destination", "auth_mode": "keys", "access_key_id": "AKIAEXAMPLE", "secret_access_key": SECRET})),
    "bucket credentials": ("admin", lambda c, t, u: (f"/t/{t.slug}/buckets/{_bucket(t).uuid}/credentials/", {
        "access_key_id": "AKIAEXAMPLE", "secret_access_key": SECRET})),
    "request creation": ("operator", lambda c, t, u: (
        f"/t/{t.slug}/requests/new/IMAP-S3-ZIP/",
        {**_imap_form(), "source_server": "imap.acme.test", "bucket": str(_bucket(t).uuid), "file_name": "alice"})),
    "test connection": ("operator", lambda c, t, u: (f"/t/{t.slug}/requests/new/IMAP-S3-ZIP/test/", _imap_form())),
    "CSV upload": ("operator", lambda c, t, u: (_bucket(t) and f"/t/{t.slug}/requests/upload/", {"file": csv_file()})),
    "provider connection": ("admin", lambda c, t, u: (f"/t/{t.slug}/connections/new/google/", {
        "name": "workspace", "client_id": "client.apps.googleusercontent.com", "client_secret": SECRET})),
    "invitation accepted with a new account": ("admin", lambda c, t, u: (
        _invitation_path(c, t), {"password1": SECRET, "password2": SECRET})),
    "failed login": (None, lambda c, t, u: ("/accounts/login/", {"username": "owner@acme.test", "password": SECRET})),
    "password change with a wrong old password": ("owner", lambda c, t, u: ("/accounts/password/change/", {
        "old_password": SECRET, "new_password1": "another-long-password-7", "new_password2": "another-long-password-7"})),
    "password reset": (None, lambda c, t, u: (_reset_path(c, u), {"new_password1": SECRET, "new_password2": SECRET})),
}


@pytest.fixture(params=list(CASES))
def failing_post(request, tenant, owner):
    """POST a secret to a view whose service then fails; returns the response and its client."""

    def send(client: Client):
        who, build = CASES[request.param]
        if who:
            client.force_login(request.getfixturevalue(who))
        path, data = build(client, tenant, owner)
        refuse_audit_writes()
        return client.post(path, data)

    return send


def test_the_debug_error_page_of_a_view_that_handles_credentials_shows_none(failing_post, settings):
    settings.DEBUG = True
    response = failing_post(Client(raise_request_exception=False))
    page = response.content.decode()
    assert response.status_code == 500 and "the audit log refuses writes" in page  # Django's technical page
    assert 'id="traceback"' in page and "Local vars" in page
    assert SECRET not in page
    assert PASSWORD not in page


def test_the_error_mail_to_admins_from_a_view_that_handles_credentials_shows_none(failing_post, settings):
    settings.DEBUG = False
    settings.ADMINS = [("Ops", "ops@acme.test")]
    response = failing_post(Client(raise_request_exception=False))
    assert response.status_code == 500
    [report] = [m for m in mail.outbox if m.to == ["ops@acme.test"]]
    assert "the audit log refuses writes" in report.body
    assert SECRET not in report.body + "".join(str(content) for content, _ in report.alternatives)


# --- the filter itself -----------------------------------------------------------------------------
@sensitive_variables()
def _handles_a_key(secret_key: str):
    return _narrowly_marked(secret_key)


@sensitive_variables("unrelated")
def _narrowly_marked(value: str):
    copied = value  # noqa: F841 - a local of this frame, as a library's would be
    raise RuntimeError("boom")


def _report_of(call, report_filter=None) -> str:
    try:
        call()
    except RuntimeError:
        reporter = ExceptionReporter(None, *sys.exc_info())
        reporter.filter = report_filter or reporter.filter
        return reporter.get_traceback_html()
    raise AssertionError("no error")


@pytest.mark.parametrize("debug", [True, False])
def test_a_function_marked_as_handling_secrets_hides_its_whole_call_tree(settings, debug):
    """Django's own filter hides nothing with DEBUG on, and only what the nearest mark lists."""
    settings.DEBUG = debug
    page = _report_of(lambda: _handles_a_key(SECRET))
    assert "_narrowly_marked" in page and "copied" in page
    assert SECRET not in page
    assert SECRET in _report_of(lambda: _handles_a_key(SECRET), SafeExceptionReporterFilter())

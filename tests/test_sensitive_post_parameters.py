"""Credentials typed into a form never appear in an error report (Django's 500 page, mail to ADMINS)."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory
from django.views.debug import SafeExceptionReporterFilter

from accounts.views import invitation_accept
from buckets.views import bucket_credentials, bucket_register
from providers.views import connection_create, connection_edit
from requests_app.views import request_create, request_test_connection

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

"""The registry of source kinds: every request type names registered kinds, and a request's kind
decides its CSV columns and how its source authenticates."""

from __future__ import annotations

import pytest

from connectors.model import AuthenticationFailed
from requests_app.kinds import KINDS, UnavailableSource, kind_for, source_for_request
from requests_app.models import MigrationRequest
from requests_app.types import REQUEST_TYPES

IMAP = "source_server,source_port,source_security,source_user,source_password"
COMMON = "folders,exclude_folders,since,before,bucket,s3_prefix,file_name"


def test_every_request_type_names_only_registered_kinds_its_default_first():
    for rtype in REQUEST_TYPES.values():
        assert rtype.kinds and all(name in KINDS for name in rtype.kinds), rtype.code
        assert kind_for(rtype).name == rtype.kinds[0]


@pytest.mark.parametrize("code,columns", [
    ("IMAP-S3-ZIP", f"request_type,title,{IMAP},{COMMON},incremental"),
    ("MITHI-S3-ZIP", f"request_type,title,{IMAP},{COMMON},incremental"),
    ("O365-S3-PST", f"request_type,title,{IMAP},connection,{COMMON},auth_method,incremental"),
    ("GMAILOAUTH-S3-ZIP", f"request_type,title,source_user,connection,{COMMON},incremental"),
    ("GMAILAPI-S3-ZIP", f"request_type,title,source_user,connection,{COMMON},include_spam_trash,incremental"),
    ("M365API-S3-PST", f"request_type,title,source_user,connection,{COMMON},incremental"),
])
def test_the_csv_columns_of_a_type_are_its_kinds_columns_in_the_documented_order(code, columns):
    assert ",".join(REQUEST_TYPES[code].columns) == columns


def test_an_o365_request_goes_through_its_connection_only_when_its_method_is_oauth():
    o365 = REQUEST_TYPES["O365-S3-ZIP"]
    assert kind_for(o365, "password").name == "imap_password" and not kind_for(o365, "").uses_connection
    assert kind_for(o365, "oauth").name == "imap_microsoft_oauth" and kind_for(o365, "oauth").provider == "microsoft"
    assert kind_for(REQUEST_TYPES["IMAP-S3-ZIP"], "oauth").name == "imap_password"  # no connection to go through
    assert kind_for(REQUEST_TYPES["GMAILAPI-S3-PST"], "password").name == "gmail_api"


def test_only_kinds_that_go_through_a_connection_send_tokens_to_the_providers_own_endpoint(settings):
    settings.MICROSOFT_IMAP_HOST = "outlook.office365.com"
    assert KINDS["imap_password"].endpoint() is None
    assert KINDS["imap_google_oauth"].endpoint() == (settings.GMAIL_IMAP_HOST, settings.GMAIL_IMAP_PORT, "ssl")
    microsoft = KINDS["imap_microsoft_oauth"]
    o365 = REQUEST_TYPES["O365-S3-ZIP"]
    assert microsoft.server_problem(o365, "imap.attacker.test").startswith("With OAuth the server is always")
    assert microsoft.server_problem(o365, "outlook.office365.com") == ""


@pytest.mark.django_db
def test_a_request_whose_connection_was_removed_gets_a_source_that_fails_with_the_reason(tenant):
    req = MigrationRequest(tenant=tenant, request_type="M365API-S3-ZIP", source_user="ann@acme.test",
                           options={"connection": "00000000-0000-0000-0000-000000000000", "credential": "app_only"})
    source = source_for_request(req, REQUEST_TYPES["M365API-S3-ZIP"])
    assert isinstance(source, UnavailableSource)
    with pytest.raises(AuthenticationFailed, match="connection of this request was removed"):
        source.list_folders()

"""The form's Test connection against a real Dovecot: counts per folder, one quick attempt with a
clear answer for a wrong security setting, the CA setting named for an unknown certificate, and
folders to include that the mailbox does not have."""

from __future__ import annotations

import pytest

from requests_app.connection_test import test_connection
from requests_app.types import get_type
from tests.portal_fixtures import MAILBOX_PASSWORD, MAILBOX_USER
from tests.servers.faults import TcpFaultProxy

pytestmark = pytest.mark.django_db


def form(port: int, security: str, **extra) -> dict:
    return {"source_server": "127.0.0.1", "source_port": port, "source_security": security,
            "source_user": MAILBOX_USER, "source_password": MAILBOX_PASSWORD, "folders": [], **extra}


def run(tenant, data):
    return test_connection(get_type("IMAP-S3-ZIP"), data, tenant=tenant)


def test_every_folder_has_its_message_count(tenant, dovecot, imap_ca):
    result = run(tenant, form(dovecot.ssl_port, "ssl"))
    assert result.ok, result.error
    counts = {f.path: f.message_count for f in result.folders if f.selectable}
    truth = {folder: len(messages) for folder, messages in dovecot.mailbox.by_folder().items()}
    assert counts == truth and counts["INBOX"] > 0


def test_no_encryption_on_the_ssl_port_says_the_server_spoke_tls_after_one_attempt(tenant, dovecot, imap_ca):
    with TcpFaultProxy(dovecot.ssl_port) as proxy:
        result = run(tenant, form(proxy.port, "none"))
    assert not result.ok
    assert "the server spoke TLS" in result.error and "Choose SSL" in result.error
    assert len(proxy.connections) == 2  # the one attempt, and the handshake that says it is TLS


def test_starttls_on_the_ssl_port_says_choose_ssl_too(tenant, dovecot, imap_ca):
    result = run(tenant, form(dovecot.ssl_port, "starttls"))
    assert not result.ok and "Choose SSL" in result.error


def test_ssl_on_the_plain_port_says_the_server_answered_in_plain_text(tenant, dovecot, imap_ca):
    with TcpFaultProxy(dovecot.port) as proxy:
        result = run(tenant, form(proxy.port, "ssl"))
    assert not result.ok
    assert "answered in plain text, not TLS" in result.error and "STARTTLS or None" in result.error
    assert len(proxy.connections) == 2


def test_a_certificate_from_an_unknown_ca_names_the_setting_that_trusts_it(tenant, dovecot, settings):
    settings.LEGACYFLO_IMAP_CA_FILE = ""
    for port, security in ((dovecot.ssl_port, "ssl"), (dovecot.port, "starttls")):
        result = run(tenant, form(port, security))
        assert not result.ok
        assert "could not be verified" in result.error and "LEGACYFLO_IMAP_CA_FILE" in result.error


def test_a_folder_to_include_the_mailbox_lacks_is_named_with_the_folders_it_has(tenant, dovecot, imap_ca):
    result = run(tenant, form(dovecot.ssl_port, "ssl", folders=["DoesNotExist", "Sent"]))
    assert not result.ok
    assert "no folder 'DoesNotExist'" in result.error and "'Sent'" not in result.error
    assert "Its folders are: INBOX" in result.error and "Sent" in result.error
    assert result.folders  # the table is still shown


def test_a_folder_to_include_matches_whatever_its_case_and_parents_count(tenant, dovecot, imap_ca):
    assert run(tenant, form(dovecot.ssl_port, "ssl", folders=["inbox", "Projekte"])).ok

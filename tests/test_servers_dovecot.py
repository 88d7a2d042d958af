"""The Dovecot fixture says why Dovecot did not start, in Dovecot's own words."""

from __future__ import annotations

import os

import pytest

from tests.servers.dovecot import DOVECOT, DovecotServer

pytestmark = pytest.mark.skipif(not os.access(DOVECOT, os.X_OK), reason="Dovecot is not installed")


def test_a_dovecot_without_its_imap_service_fails_with_dovecots_own_error():
    # What a machine with dovecot-core but no dovecot-imapd looks like to Dovecot.
    server = DovecotServer(extra_config="service imap {\n  executable = /nonexistent/imap\n}\n")
    with pytest.raises(RuntimeError) as failed:
        server.start()
    assert "dovecot did not start" in str(failed.value)
    assert "Fatal: service(imap) access(/nonexistent/imap) failed: No such file or directory" in str(failed.value)
    assert not server.root.exists()  # cleaned up all the same

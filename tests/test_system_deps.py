"""scripts/system-deps.sh decides from what the tests run, not from a package's main binary."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.servers.dovecot import DOVECOT

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "system-deps.sh"


def missing(libexec: Path) -> list[str]:
    """The packages the script would install (its --dry-run), with Dovecot's services in ``libexec``."""
    result = subprocess.run(["sh", str(SCRIPT), "--dry-run"], env={**os.environ, "DOVECOT_LIBEXEC": str(libexec)},
                            capture_output=True, text=True, check=True, timeout=30)
    return result.stdout.split()


@pytest.mark.skipif(not os.access(DOVECOT, os.X_OK), reason="needs dovecot-core's binary")
def test_dovecot_core_without_the_imap_service_is_repaired(tmp_path):
    libexec = tmp_path / "dovecot"
    libexec.mkdir()
    (libexec / "imap-login").write_text("")  # dovecot-imapd's files gone (another IMAP server replaced it)
    assert "dovecot-imapd" in missing(libexec)

    for name in ("imap", "imap-login"):
        (libexec / name).write_text("#!/bin/sh\n")
        (libexec / name).chmod(0o755)
    assert "dovecot-imapd" not in missing(libexec)

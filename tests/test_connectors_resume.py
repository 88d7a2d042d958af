"""Exactly once across SIGKILL: run the export in a child process, kill it, run it again.

The child (this file run as a script) exports from Dovecot to rclone's S3 with a SQLite ledger.
A ``KillingLedger`` SIGKILLs the child at chosen points — before or after a ledger call — so
every window that matters is hit deterministically:

- begin_upload, before: the multipart upload exists but is not recorded (an orphan);
- commit_part #N, before: part N is uploaded but not committed;
- commit_part #N, after: part N committed, the next ones in flight;
- the final part's commit, before: the central directory is uploaded but not committed;
- mark_archive_complete, before: CompleteMultipartUpload succeeded but is not recorded;
- mark_archive_complete, after: the archive exists, the report does not yet;
plus a kill from outside at a seeded moment, and two kills in a row.

After the rerun completes: every source message is in the ZIP exactly once with its exact
bytes, the ZIP passes zipfile and ``unzip -t``, counts reconcile, no multipart upload is left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":  # child mode: make the project importable
    sys.path.insert(0, str(ROOT))

from connectors.ledger import SqliteLedger  # noqa: E402
from tests.fixtures_engine import *  # noqa: E402,F403
from tests.fixtures_engine import (  # noqa: E402
    ACCESS_KEY,
    PASSWORD,
    SECRET_KEY,
    USER,
    multipart_uploads,
    truth_of,
    verify_export,
)
from tests.mailgen import generate_mailbox, write_maildir  # noqa: E402


class KillingLedger(SqliteLedger):
    """SIGKILLs its own process at the ``nth`` call of ``method`` (``when``: before/after)."""

    def __init__(self, path, kill: dict | None) -> None:
        super().__init__(path)
        self.kill = kill or {}
        self.calls: dict[str, int] = {}

    def _maybe_kill(self, method: str, when: str, final: bool = False) -> None:
        if not self.kill:
            return
        name = "final_commit" if final else method
        if self.kill["method"] == name and self.kill["when"] == when and \
                self.calls.get(name, 0) == self.kill.get("nth", 1):
            os.kill(os.getpid(), signal.SIGKILL)

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def begin_upload(self, *args):
        self._count("begin_upload")
        self._maybe_kill("begin_upload", "before")
        super().begin_upload(*args)
        self._maybe_kill("begin_upload", "after")

    def commit_part(self, part, records):
        name = "final_commit" if part.final else "commit_part"
        self._count(name)
        self._maybe_kill("commit_part", "before", part.final)
        super().commit_part(part, records)
        self._maybe_kill("commit_part", "after", part.final)

    def mark_archive_complete(self, *args):
        self._count("mark_archive_complete")
        self._maybe_kill("mark_archive_complete", "before")
        super().mark_archive_complete(*args)
        self._maybe_kill("mark_archive_complete", "after")


def child_main(config_path: str) -> int:
    from connectors.export import ExportSpec, run_export
    from connectors.imap import ImapSource
    from connectors.s3client import make_client
    from connectors.s3target import S3Target
    from tests.fixtures_engine import fast_tuning

    cfg = json.loads(Path(config_path).read_text())
    ledger = KillingLedger(cfg["ledger"], cfg.get("kill"))
    client = make_client(S3Target(cfg["bucket"], "us-east-1", cfg["s3_url"], ACCESS_KEY, SECRET_KEY),
                         allow_private=True)
    with ImapSource("127.0.0.1", cfg["imap_port"], "none", USER, PASSWORD, allow_private=True,
                    batch_bytes=64 * 1024) as source:
        result = run_export(source, client, ExportSpec(bucket=cfg["bucket"], prefix="kill",
                                                       file_name="alice"), ledger,
                            fast_tuning(part_bytes=cfg.get("part_bytes", 32 * 1024),
                                        min_part_bytes=16 * 1024, upload_threads=2,
                                        compress_threads=2))
    print(json.dumps({"state": result.state, "error": result.error, "resumed": result.resumed,
                      "parts": result.parts}))
    return 0


def _config(tmp_path: Path, dovecot, s3, kill, **extra) -> Path:
    path = tmp_path / f"config-{random.random()}.json"
    path.write_text(json.dumps({"imap_port": dovecot.port, "s3_url": s3.url, "bucket": s3.bucket,
                                "ledger": str(tmp_path / "ledger.sqlite"), "kill": kill, **extra}))
    return path


def _start(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(config)],
                            cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def run_child(tmp_path: Path, dovecot, s3, kill: dict | None, **extra) -> tuple[int, dict | None, str]:
    proc = _start(_config(tmp_path, dovecot, s3, kill, **extra))
    out, err = proc.communicate(timeout=120)
    text = out.decode().strip()
    result = json.loads(text.splitlines()[-1]) if proc.returncode == 0 and text else None
    return proc.returncode, result, err.decode()[-3000:]


@pytest.fixture
def kill_mailbox(dovecot):
    write_maildir(dovecot, USER, generate_mailbox("test"))
    write_maildir(dovecot, USER, generate_mailbox("flat", seed=5, count=250, size=5000, folder="Bulk"))
    return truth_of(dovecot)


def _finish_and_verify(tmp_path, dovecot, s3, truth, *, expect_resumed: bool = True) -> dict:
    code, result, err = run_child(tmp_path, dovecot, s3, None)
    assert code == 0, err
    assert result["state"] == "completed", result
    assert result["resumed"] is expect_resumed
    verify_export(s3, "kill/alice", truth)
    assert multipart_uploads(s3.client(), s3.bucket) == []
    return result


KILL_POINTS = [
    {"method": "begin_upload", "when": "before"},
    {"method": "begin_upload", "when": "after"},
    {"method": "commit_part", "when": "before", "nth": 3},
    {"method": "commit_part", "when": "after", "nth": 5},
    {"method": "final_commit", "when": "before"},
    {"method": "mark_archive_complete", "when": "before"},
    {"method": "mark_archive_complete", "when": "after"},
]


@pytest.mark.parametrize("kill", KILL_POINTS,
                         ids=[f"{k['method']}-{k['when']}{k.get('nth', '')}" for k in KILL_POINTS])
def test_sigkill_then_rerun_exports_every_message_exactly_once(tmp_path, dovecot, s3, kill_mailbox, kill):
    code, _result, err = run_child(tmp_path, dovecot, s3, kill)
    assert code == -signal.SIGKILL, f"the child was not killed at {kill}: {err}"
    # begin_upload-before leaves an orphan upload the ledger knows nothing about: a fresh start
    _finish_and_verify(tmp_path, dovecot, s3, kill_mailbox,
                       expect_resumed=kill != {"method": "begin_upload", "when": "before"})


def test_two_kills_in_a_row(tmp_path, dovecot, s3, kill_mailbox):
    for kill in ({"method": "commit_part", "when": "before", "nth": 2},
                 {"method": "commit_part", "when": "after", "nth": 4}):
        code, _result, err = run_child(tmp_path, dovecot, s3, kill)
        assert code == -signal.SIGKILL, err
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    committed = len(ledger.load_upload().parts)
    ledger.close()
    assert committed >= 5  # 1 + 4 parts survived the two kills
    _finish_and_verify(tmp_path, dovecot, s3, kill_mailbox)


def test_rerun_that_cuts_parts_differently_starts_afresh_on_rclone(tmp_path, dovecot, s3, kill_mailbox):
    """Re-produced parts differ (here: another part size; in life: mail changed meanwhile).
    S3 takes the new part; rclone refuses to replace it, and the engine starts over cleanly."""
    code, _result, err = run_child(tmp_path, dovecot, s3, {"method": "commit_part", "when": "before", "nth": 3})
    assert code == -signal.SIGKILL, err
    code, result, err = run_child(tmp_path, dovecot, s3, None, part_bytes=48 * 1024)
    assert code == 0, err
    assert result["state"] == "completed", result
    assert result["resumed"] is False  # the second, fresh attempt
    verify_export(s3, "kill/alice", kill_mailbox)
    assert multipart_uploads(s3.client(), s3.bucket) == []


def test_kill_from_outside_at_a_random_moment(tmp_path, dovecot, s3, kill_mailbox):
    proc = _start(_config(tmp_path, dovecot, s3, None))
    ledger_path = tmp_path / "ledger.sqlite"
    deadline = time.monotonic() + 60
    wanted = random.Random(20241125).randint(2, 8)
    while time.monotonic() < deadline and proc.poll() is None:
        if ledger_path.exists():
            ledger = SqliteLedger(ledger_path)
            upload = ledger.load_upload()
            ledger.close()
            if upload and len(upload.parts) >= wanted:
                break
        time.sleep(0.01)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the export finished before it could be killed"
    _finish_and_verify(tmp_path, dovecot, s3, kill_mailbox)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))

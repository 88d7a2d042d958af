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

Split into volumes (``split_bytes``), the windows around a volume boundary: the full volume's
last part uploaded / committed, its completion before / after it is recorded, the first
volume copied to ``.part001.zip`` but not yet deleted (``rename``), the next upload created
but not recorded (``begin_volume`` before), recorded but empty, and the middle of volume 2.

After the rerun completes: every source message is in the archive exactly once with its exact
bytes, every ZIP passes zipfile and ``unzip -t``, counts reconcile, no multipart upload is left
and no archive object but the volumes summary.json lists.
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

from connectors.pipeline.ledger import SqliteLedger, UploadState  # noqa: E402
from tests.fixtures_engine import *  # noqa: E402,F403
from tests.fixtures_engine import (  # noqa: E402
    ACCESS_KEY,
    PASSWORD,
    SECRET_KEY,
    USER,
    bucket_keys,
    multipart_uploads,
    truth_of,
    verify_export,
)
from tests.mailgen import generate_mailbox, write_maildir  # noqa: E402


class KillingLedger(SqliteLedger):
    """SIGKILLs its own process at the ``nth`` call of ``method`` (``when``: before/after);
    with ``volume``, only calls made while that volume is the current one count."""

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
        volume = self.kill.get("volume")
        if volume is None or (self.load_upload() or UploadState("", "", "")).volume == volume:
            self.calls[name] = self.calls.get(name, 0) + 1

    def begin_volume(self, *args):
        self._count("begin_volume")
        self._maybe_kill("begin_volume", "before")
        super().begin_volume(*args)
        self._maybe_kill("begin_volume", "after")

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
    from connectors.pipeline.run import run_backup
    from connectors.pipeline.spec import ExportSpec
    from connectors.sources.imap.client import ImapSource
    from connectors.storage.s3.client import make_client
    from connectors.storage.s3.target import S3Target
    from tests.fixtures_engine import fast_tuning

    cfg = json.loads(Path(config_path).read_text())
    ledger = KillingLedger(cfg["ledger"], cfg.get("kill"))
    if (cfg.get("kill") or {}).get("method") == "rename":
        _die_between_copy_and_delete()
    if (cfg.get("kill") or {}).get("method") == "publish":
        _die_after_the_first_move_into_place()
    client = make_client(S3Target(cfg["bucket"], "us-east-1", cfg["s3_url"], ACCESS_KEY, SECRET_KEY),
                         allow_private=True)
    with ImapSource("127.0.0.1", cfg["imap_port"], "none", USER, PASSWORD, allow_private=True,
                    batch_bytes=64 * 1024) as source:
        result = run_backup(source, client, ExportSpec(bucket=cfg["bucket"], prefix=cfg.get("prefix", "kill"),
                                                       file_name="alice",
                                                       split_bytes=cfg.get("split_bytes")), ledger,
                            fast_tuning(part_bytes=cfg.get("part_bytes", 32 * 1024),
                                        min_part_bytes=16 * 1024, upload_threads=2,
                                        compress_threads=2))
    print(json.dumps({"state": result.state, "error": result.error, "resumed": result.resumed,
                      "parts": result.parts, "archives": [a.key for a in result.archives]}))
    return 0


def _die_between_copy_and_delete() -> None:
    """The first volume's rename to .part001.zip: copied, then SIGKILL before the delete."""
    import connectors.pipeline.zip_backup
    from connectors.storage.s3.move import copy_object

    def copy_then_die(client, bucket, source, target, size, *, retry):
        copy_object(client, bucket, source, target, size, retry=retry)
        os.kill(os.getpid(), signal.SIGKILL)

    connectors.pipeline.zip_backup.move_object = copy_then_die


def _die_after_the_first_move_into_place() -> None:
    """A retry's commit: its first staged volume copied into place, then SIGKILL."""
    import connectors.pipeline.archivekeys
    from connectors.storage.s3.move import copy_object

    def copy_then_die(client, bucket, source, target, size, *, retry):
        copy_object(client, bucket, source, target, size, retry=retry)
        os.kill(os.getpid(), signal.SIGKILL)

    connectors.pipeline.archivekeys.copy_object = copy_then_die


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


def _finish_and_verify(tmp_path, dovecot, s3, truth, *, expect_resumed: bool = True, **extra) -> dict:
    code, result, err = run_child(tmp_path, dovecot, s3, None, **extra)
    assert code == 0, err
    assert result["state"] == "completed", result
    assert result["resumed"] is expect_resumed
    verify_export(s3, "kill/alice", truth, split_bytes=extra.get("split_bytes"))
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


# ---- split into volumes -------------------------------------------------------------------------

SPLIT = 512 * 1024  # ~4 volumes of the kill mailbox, 16 parts of 32 KiB each
SPLIT_KILL_POINTS = [
    {"method": "final_commit", "when": "before", "nth": 1},  # volume 1's directory uploaded
    {"method": "final_commit", "when": "after", "nth": 1},  # ...and committed, not completed
    {"method": "mark_archive_complete", "when": "before", "nth": 1},  # completed, not recorded
    {"method": "mark_archive_complete", "when": "after", "nth": 1},  # recorded, not renamed
    {"method": "rename", "when": "during"},  # copied to .part001.zip, alice.zip not deleted
    {"method": "begin_volume", "when": "before", "nth": 1},  # part002's upload not recorded
    {"method": "begin_volume", "when": "after", "nth": 1},  # part002 recorded, nothing in it
    {"method": "commit_part", "when": "before", "nth": 3, "volume": 2},  # mid volume 2
    {"method": "commit_part", "when": "after", "nth": 4, "volume": 2},
    {"method": "begin_volume", "when": "before", "nth": 2},  # the second boundary (no rename)
]


def _kill_id(kill: dict) -> str:
    return f"{kill['method']}-{kill['when']}{kill.get('nth', '')}" + (
        f"-volume{kill['volume']}" if "volume" in kill else "")


@pytest.mark.parametrize("kill", SPLIT_KILL_POINTS, ids=[_kill_id(k) for k in SPLIT_KILL_POINTS])
def test_sigkill_around_a_volume_boundary_then_rerun_exports_every_message_once(tmp_path, dovecot, s3,
                                                                                 kill_mailbox, kill):
    code, _result, err = run_child(tmp_path, dovecot, s3, kill, split_bytes=SPLIT)
    assert code == -signal.SIGKILL, f"the child was not killed at {kill}: {err}"
    result = _finish_and_verify(tmp_path, dovecot, s3, kill_mailbox, split_bytes=SPLIT)
    assert len(result["archives"]) >= 3 and result["archives"][0] == "kill/alice.part001.zip"
    _assert_same_volumes_as_an_uninterrupted_run(tmp_path, dovecot, s3, result["archives"])


def _assert_same_volumes_as_an_uninterrupted_run(tmp_path, dovecot, s3, keys: list[str]) -> None:
    """Resuming re-produces what was lost byte for byte, volume boundaries included."""
    code, reference, err = run_child(tmp_path, dovecot, s3, None, split_bytes=SPLIT, prefix="ref",
                                     ledger=str(tmp_path / "reference.sqlite"))
    assert code == 0 and reference["resumed"] is False, err
    assert [k.replace("ref/", "kill/") for k in reference["archives"]] == keys
    for key in keys:
        assert s3.path(key).read_bytes() == s3.path(key.replace("kill/", "ref/")).read_bytes(), key


def test_split_export_killed_from_outside_in_volume_two_twice(tmp_path, dovecot, s3, kill_mailbox):
    ledger_path = tmp_path / "ledger.sqlite"
    for wanted_parts in (2, 5):
        proc = _start(_config(tmp_path, dovecot, s3, None, split_bytes=SPLIT))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if ledger_path.exists():
                ledger = SqliteLedger(ledger_path)
                upload = ledger.load_upload()
                ledger.close()
                if upload and upload.volume >= 2 and len(upload.parts) >= wanted_parts:
                    break
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the export finished before it could be killed"
    _finish_and_verify(tmp_path, dovecot, s3, kill_mailbox, split_bytes=SPLIT)


@pytest.mark.parametrize("kill", [
    {"method": "mark_archive_complete", "when": "before", "nth": 2},  # part002.zip exists, unrecorded
    {"method": "rename", "when": "during"},  # alice.zip and alice.part001.zip both exist
], ids=_kill_id)
def test_cancel_after_a_kill_at_a_volume_boundary_leaves_nothing(tmp_path, dovecot, s3, kill_mailbox, kill):
    code, _result, err = run_child(tmp_path, dovecot, s3, kill, split_bytes=SPLIT)
    assert code == -signal.SIGKILL, err
    assert bucket_keys(s3)  # the killed run left volumes behind
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    ledger.request_cancel()
    ledger.close()
    code, result, err = run_child(tmp_path, dovecot, s3, None, split_bytes=SPLIT)
    assert code == 0 and result["state"] == "cancelled", err
    assert bucket_keys(s3) == []
    assert multipart_uploads(s3.client(), s3.bucket) == []


def test_a_retry_killed_while_its_volumes_are_put_in_place_finishes_on_the_next_run(tmp_path, dovecot, s3,
                                                                                    kill_mailbox):
    """A retry (the ledger reset, its archive remembered) writes over the earlier volumes under
    staging keys; killed after moving the first into place, the next run finishes the move and
    deletes the earlier volumes it does not reuse: the volumes of an uninterrupted run, nothing else."""
    from connectors.pipeline.archivekeys import STAGING_MARK

    code, first, err = run_child(tmp_path, dovecot, s3, None, split_bytes=SPLIT // 2)
    assert code == 0 and first["state"] == "completed", err
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    ledger.reset()  # what Retry does
    assert ledger.archive_keys() == first["archives"]
    ledger.close()
    code, _result, err = run_child(tmp_path, dovecot, s3, {"method": "publish", "when": "during"}, split_bytes=SPLIT)
    assert code == -signal.SIGKILL, err
    assert any(STAGING_MARK in key for key in bucket_keys(s3))  # killed halfway through the moves
    result = _finish_and_verify(tmp_path, dovecot, s3, kill_mailbox, split_bytes=SPLIT)
    assert len(result["archives"]) < len(first["archives"])
    assert not any(STAGING_MARK in key for key in bucket_keys(s3))
    assert [k for k in bucket_keys(s3) if k.endswith(".zip")] == result["archives"]
    _assert_same_volumes_as_an_uninterrupted_run(tmp_path, dovecot, s3, result["archives"])


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))

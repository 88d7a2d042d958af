"""ZIP exports split into volumes (``ExportSpec.split_bytes``): real Dovecot or a scripted
source → engine → rclone's S3. Resuming across volumes after a SIGKILL: test_connectors_resume."""

from __future__ import annotations

import csv
import io
import random
import struct
import zipfile

import pytest

from connectors.model import ConnectionFailed, Folder, Message
from connectors.pipeline.ledger import MemoryLedger
from connectors.pipeline.run import run_backup
from connectors.pipeline.spec import CANCELLED, COMPLETED, FAILED_STATE, ExportSpec
from connectors.pipeline.zip_backup import ZipBackup
from connectors.sources import Source
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import (
    USER,
    Truth,
    bucket_keys,
    fast_tuning,
    imap_source,
    multipart_uploads,
    read_report,
    truth_of,
    verify_export,
)
from tests.mailgen import generate_mailbox, write_maildir
from tests.servers.faults import S3FaultProxy

MB = 1024 * 1024


def spec(s3, split_bytes: int | None, name: str = "alice") -> ExportSpec:
    return ExportSpec(bucket=s3.bucket, prefix="split", file_name=name, split_bytes=split_bytes)


class ListSource(Source):
    """Serves fixed messages (and may fail for good after ``fail_after`` of them)."""

    def __init__(self, folders: dict[str, list[tuple[str, bytes, tuple[str, ...]]]],
                 fail_after: int | None = None) -> None:
        self.folders, self.fail_after, self.served = folders, fail_after, 0

    def list_folders(self):
        return [Folder(path, path) for path in self.folders]

    def list_message_ids(self, folder, *, since=None, before=None):
        return [sid for sid, _raw, _labels in self.folders[folder.path]]

    def fetch_messages(self, folder, ids):
        wanted = set(ids)
        for sid, raw, labels in self.folders[folder.path]:
            if sid in wanted:
                if self.fail_after is not None and self.served >= self.fail_after:
                    raise ConnectionFailed("The IMAP server closed the connection.")
                self.served += 1
                yield Message(folder.path, sid, raw, labels=labels)

    def truth(self) -> Truth:
        return Truth({(folder, sid): raw for folder, msgs in self.folders.items() for sid, raw, _ in msgs},
                     list(self.folders))


def noise_message(n: int, size: int, seed: int = 0) -> bytes:
    """A message whose body does not compress (stored: its ZIP entry is as big as the message)."""
    body = random.Random(seed * 100_000 + n).randbytes(size)
    return f"Subject: noise {n}\r\nMessage-ID: <{n}.{seed}@noise>\r\n\r\n".encode() + body + b"\r\n"


def test_split_export_holds_every_message_once_across_valid_volumes(dovecot, s3):
    write_maildir(dovecot, USER, generate_mailbox("test"))
    write_maildir(dovecot, USER, generate_mailbox("flat", seed=7, count=120, size=20_000, folder="Bulk"))
    truth = truth_of(dovecot)
    split = 1 * MB
    ledger = MemoryLedger()
    client = s3.client()
    with imap_source(dovecot) as source:
        result = run_backup(source, client, spec(s3, split), ledger, fast_tuning())
    assert result.state == COMPLETED, result.error
    facts = verify_export(s3, "split/alice", truth, split_bytes=split)
    keys = [a.key for a in result.archives]
    assert len(keys) >= 3 and keys[0] == "split/alice.part001.zip"
    assert keys == [a["key"] for a in facts["summary"]["archives"]]
    assert bucket_keys(s3) == sorted([*keys, "split/alice.report.csv", "split/alice.summary.json"])
    assert multipart_uploads(client, s3.bucket) == []
    sizes = [s3.path(k).stat().st_size for k in keys]
    assert [a.size for a in result.archives] == sizes
    # volumes are filled, not cut early: each but the last lacks less than one message's room
    largest = max(len(raw) for raw in truth.messages.values())
    assert all(size > split - largest - 4096 for size in sizes[:-1]), sizes
    # the report names each message's volume, and every volume holds messages
    by_archive: dict[str, int] = {}
    for row in facts["report"]:
        by_archive[row["archive"]] = by_archive.get(row["archive"], 0) + 1
    assert sorted(by_archive) == sorted(keys)
    assert result.parts > len(keys)  # several parts per volume (64 KiB parts, 1 MiB volumes)
    assert ledger.progress.messages_done == len(truth.messages)


def test_room_to_spare_keeps_the_single_file_name(s3):
    source = ListSource({"INBOX": [(str(n), noise_message(n, 2000), ()) for n in range(20)]})
    result = run_backup(source, s3.client(), spec(s3, 64 * MB), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    assert [a.key for a in result.archives] == ["split/alice.zip"]
    facts = verify_export(s3, "split/alice", source.truth(), split_bytes=64 * MB)
    assert {row["archive"] for row in facts["report"]} == {"split/alice.zip"}


def test_a_message_larger_than_the_split_size_goes_alone_into_its_volume(s3):
    split = 1 * MB
    small = [(f"s{n}", noise_message(n, 100_000), ()) for n in range(5)]
    big = ("big", noise_message(99, int(1.5 * MB)), ())
    source = ListSource({"INBOX": [*small[:3], big, *small[3:]]})
    result = run_backup(source, s3.client(), spec(s3, split), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    facts = verify_export(s3, "split/alice", source.truth(), split_bytes=split)
    emls = {key: [n for n in names if n.endswith(".eml")] for key, names in facts["volumes"].items()}
    assert list(emls) == ["split/alice.part001.zip", "split/alice.part002.zip", "split/alice.part003.zip"]
    assert [len(v) for v in emls.values()] == [3, 1, 2]
    assert s3.path("split/alice.part002.zip").stat().st_size > split
    rows = {row["source_id"]: row for row in facts["report"]}
    assert rows["big"]["archive"] == "split/alice.part002.zip"
    assert rows["s3"]["archive"] == "split/alice.part003.zip"


def test_each_volume_carries_the_labels_of_its_own_messages(s3):
    messages = [(f"1:{n}", noise_message(n, 150_000), ("\\Inbox", f"Label {n % 3}")) for n in range(20)]
    source = ListSource({"[Gmail]/All Mail": messages})
    result = run_backup(source, s3.client(), spec(s3, 1 * MB), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    facts = verify_export(s3, "split/alice", source.truth(), split_bytes=1 * MB)
    assert len(facts["volumes"]) >= 3
    labelled = []
    for number, (key, names) in enumerate(facts["volumes"].items(), start=1):
        with zipfile.ZipFile(s3.path(key)) as archive:  # named apart: extracting all volumes keeps all
            rows = list(csv.DictReader(io.StringIO(archive.read(f"labels.part{number:03d}.csv").decode())))
        assert {r["entry"] for r in rows} == {n for n in names if n.endswith(".eml")}
        labelled += [r["source_id"] for r in rows]
    assert sorted(labelled) == sorted(sid for sid, _raw, _labels in messages)


def _noise_mailbox(count: int = 30) -> dict:
    return {"INBOX": [(str(n), noise_message(n, 120_000), ()) for n in range(count)]}


class CancelInVolume(MemoryLedger):
    """Asks to cancel once ``volume`` has ``commits`` parts committed."""

    def __init__(self, volume: int, commits: int) -> None:
        super().__init__()
        self.volume, self.after = volume, commits

    def cancel_requested(self) -> bool:
        upload = self.upload
        return upload is not None and upload.volume == self.volume and len(upload.parts) >= self.after


def test_cancel_in_a_later_volume_removes_every_volume(s3):
    ledger = CancelInVolume(volume=2, commits=2)
    client = s3.client()
    result = run_backup(ListSource(_noise_mailbox()), client, spec(s3, 1 * MB), ledger, fast_tuning())
    assert result.state == CANCELLED
    assert bucket_keys(s3) == []  # part001.zip was complete: deleted too
    assert multipart_uploads(client, s3.bucket) == []
    assert ledger.load_upload() is None


def test_source_failing_in_a_later_volume_fails_cleanly(s3):
    client = s3.client()
    ledger = MemoryLedger()
    result = run_backup(ListSource(_noise_mailbox(), fail_after=20), client, spec(s3, 1 * MB), ledger,
                        fast_tuning())
    assert result.state == FAILED_STATE and "closed the connection" in result.error
    assert bucket_keys(s3) == []
    assert multipart_uploads(client, s3.bucket) == []
    assert ledger.load_upload() is None


def test_a_dropped_completion_of_a_volume_is_retried(s3):
    """The first CompleteMultipartUpload (volume 1's) loses its connection; the retry closes it."""
    source = ListSource(_noise_mailbox(20))
    with S3FaultProxy(s3.url, fail_completes=1, drop_instead=True) as proxy:
        result = run_backup(source, s3.client(proxy.url), spec(s3, 1 * MB), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    assert proxy.injected == 1
    verify_export(s3, "split/alice", source.truth(), split_bytes=1 * MB)
    assert multipart_uploads(s3.client(), s3.bucket) == []


@pytest.mark.parametrize("split", [0, None])
def test_no_split_size_means_one_file(s3, split):
    source = ListSource(_noise_mailbox(12))
    result = run_backup(source, s3.client(), spec(s3, split), MemoryLedger(), fast_tuning())
    assert result.state == COMPLETED, result.error
    assert [a.key for a in result.archives] == ["split/alice.zip"]
    assert {r["archive"] for r in read_report(s3, "split/alice.report.csv")} == {"split/alice.zip"}


def _central_directory_size(path) -> int:
    tail = path.read_bytes()[-22:]
    assert tail[:4] == b"PK\x05\x06"
    return struct.unpack("<IHHHHIIH", tail)[5]


def test_a_resumed_volume_counts_its_committed_directory_exactly(s3):
    """What a rerun rebuilds from the ledger is what the volume's central directory became."""
    messages = [(f"1:{n}", noise_message(n, 90_000), ("\\Inbox",) if n % 2 else ()) for n in range(25)]
    source = ListSource({"[Gmail]/All Mail": messages, "Sent": [("s", noise_message(99, 10), ())]})
    ledger = MemoryLedger()
    result = run_backup(source, s3.client(), spec(s3, 1 * MB), ledger, fast_tuning())
    assert result.state == COMPLETED and len(result.archives) >= 3
    for number, archive in enumerate(result.archives, start=1):
        rerun = ZipBackup(source, s3.client(), spec(s3, 1 * MB), ledger, fast_tuning())
        rerun.volume = number
        rerun._rebuild_volume_budget()
        assert rerun.volume_budget.directory == _central_directory_size(s3.path(archive.key))
        with zipfile.ZipFile(s3.path(archive.key)) as volume:
            assert rerun.volume_budget.messages == sum(n.endswith(".eml") for n in volume.namelist())
        assert rerun.volume_budget.label_rows > 0

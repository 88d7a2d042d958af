"""Restore's two connector halves together: a real Dovecot mailbox backed up by the current ZIP
writer into real S3, read back with ranged GETs (ZipArchiveReader) and appended into another
Dovecot (ImapDestination) in the other layout — every message byte-identical in its folder, and
a second pass (find_existing) finds every one of them, so nothing would be appended twice."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from connectors.archives import ArchivedMessage
from connectors.archives.zip.reader import ZipArchiveReader
from connectors.destinations.imap import ImapDestination
from connectors.pipeline.ledger import MemoryLedger
from connectors.pipeline.run import run_backup
from connectors.pipeline.spec import COMPLETED, ExportSpec
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import PASSWORD, USER, fast_tuning, imap_source, truth_of
from tests.mailgen import generate_mailbox, write_maildir
from tests.servers.dovecot import DovecotServer


def flags_and_dates(dc) -> Counter:
    """(folder, sha256, flags, internal date) of every message, read with a plain imapclient."""
    from imapclient import IMAPClient

    from connectors.sources.imap.client import folder_path

    out: Counter = Counter()
    prefix, sep = ("INBOX.", ".") if dc.layout == "mithi" else ("", "/")
    with IMAPClient("127.0.0.1", dc.port, ssl=False) as client:
        client.plain_login(USER, PASSWORD)
        for flags, _delim, name in client.list_folders():
            if b"\\Noselect" in flags or not client.select_folder(name, readonly=True)[b"EXISTS"]:
                continue
            for data in client.fetch(client.search("ALL"), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]).values():
                kept = tuple(sorted(f.decode() for f in data[b"FLAGS"] if f != b"\\Recent"))
                out[(folder_path(name, sep, prefix), hashlib.sha256(data[b"BODY[]"]).hexdigest(), kept,
                     data[b"INTERNALDATE"].timestamp())] += 1
    return out


@pytest.mark.parametrize("layouts", [("fs", "mithi"), ("mithi", "fs")])
def test_backup_then_restore_into_the_other_layout_is_byte_identical(s3, layouts):
    with DovecotServer({USER: PASSWORD}, layout=layouts[0]) as source_dc, \
            DovecotServer({USER: PASSWORD}, layout=layouts[1]) as target_dc:
        write_maildir(source_dc, USER, generate_mailbox("test"))
        truth = truth_of(source_dc)
        with imap_source(source_dc) as source:
            result = run_backup(source, s3.client(), ExportSpec(bucket=s3.bucket, prefix="r", file_name="alice"),
                                MemoryLedger(), fast_tuning())
        assert result.state == COMPLETED, result.error
        reader = ZipArchiveReader(s3.client(), s3.bucket, "r/alice")
        restored: Counter = Counter()
        indexed = []
        with ImapDestination("127.0.0.1", target_dc.port, "none", USER, PASSWORD, allow_private=True) as dest:
            for item in reader.messages():
                assert isinstance(item, ArchivedMessage), item
                dest.append(dest.ensure_folder(item.folder), item.raw, item.flags, item.internal_date)
                restored[item.folder] += 1
                indexed.append(item.extra["indexed"])
            # a second pass: every archived message is found where it was put
            for folder, count in restored.items():
                candidates = [(m.message_id, len(m.raw), m.sha256) for m in reader.messages()
                              if isinstance(m, ArchivedMessage) and m.folder == folder]
                assert len(dest.find_existing(dest.ensure_folder(folder), candidates)) == count
        after = truth_of(target_dc)
        if all(indexed):  # archives that record flags and dates (index.csv): those come back too
            assert flags_and_dates(target_dc) == flags_and_dates(source_dc)
    want = Counter((folder, hashlib.sha256(raw).hexdigest()) for (folder, _sid), raw in truth.messages.items())
    got = Counter((folder, hashlib.sha256(raw).hexdigest()) for (folder, _sid), raw in after.messages.items())
    assert got == want
    assert sum(restored.values()) == len(truth.messages)

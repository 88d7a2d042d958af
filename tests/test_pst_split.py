"""SplittingPstWriter: parts of bounded size, each a complete PST with the whole folder tree,
each opened by every reader (libpff, readpst, pffexport, pst-extractor)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.archives.pst import SplittingPstWriter, check_pst
from connectors.model import Message
from tests.pst_corpus import (
    assert_every_reader_opens,
    bulk_messages,
    read_pst_with_pst_extractor,
    read_pst_with_pypff,
    run_pffexport,
    run_readpst,
)

pytestmark = pytest.mark.timeout(300)

FOLDERS = ["INBOX", "INBOX/Sub", "Sent"]
EMPTY = ["Empty", "INBOX/Nothing here/日本語"]


def _messages() -> list[Message]:
    out = []
    for index, folder in enumerate(FOLDERS):
        out += bulk_messages(40, folder, size=30_000, seed=index)
    for number, message in enumerate(out):
        message.raw = message.raw.replace(b"Subject: Bulk", f"Subject: {number:03d} Bulk".encode())
    return out


def test_split_parts_are_complete_valid_psts(tmp_path):
    messages = _messages()
    split_bytes = 1_500_000
    base = tmp_path / "mailbox.pst"
    with SplittingPstWriter(base, split_bytes=split_bytes) as writer:
        for folder in EMPTY + FOLDERS:  # as the export engine does: list_folders() first
            writer.add_folder(folder)
        for message in messages:
            writer.add_message(message)
    paths = writer.paths
    assert len(paths) >= 3
    assert [p.name for p in paths] == [f"mailbox.part{i:03d}.pst" for i in range(1, len(paths) + 1)]
    assert writer.bytes_written == sum(p.stat().st_size for p in paths)
    assert not base.exists()
    assert sorted(tmp_path.glob("*.pst")) == sorted(paths)

    seen_subjects: list[str] = []
    for path in paths:
        assert path.stat().st_size <= split_bytes
        assert check_pst(path) == []
        folders = read_pst_with_pypff(path)
        for folder in EMPTY + FOLDERS:
            assert folder in folders  # every part carries the folder tree
        part_subjects = [m.subject for msgs in folders.values() for m in msgs]
        assert part_subjects
        seen_subjects += part_subjects
        readpst = run_readpst(path, tmp_path / f"readpst-{path.stem}")
        assert readpst.returncode == 0 and readpst.skipped == 0, readpst.output
        assert sum(len(v) for v in readpst.emls.values()) == len(part_subjects)
        assert run_pffexport(path, tmp_path / f"pff-{path.stem}").returncode == 0
        extracted = read_pst_with_pst_extractor(path)
        assert set(extracted) >= set(EMPTY + FOLDERS)
        assert sorted(m.subject for msgs in extracted.values() for m in msgs) == sorted(part_subjects)
    expected = sorted(m.raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
                      for m in messages)  # fmt: skip
    assert sorted(seen_subjects) == expected  # every message exactly once


def test_later_parts_include_folders_first_seen_in_earlier_parts(tmp_path):
    base = tmp_path / "late.pst"
    with SplittingPstWriter(base, split_bytes=400_000) as writer:
        writer.add_message(bulk_messages(1, "A/First", size=200_000)[0])
        writer.add_message(bulk_messages(1, "B/Second", size=200_000, seed=3)[0])
        writer.add_message(bulk_messages(1, "C", size=200_000, seed=4)[0])
    assert len(writer.paths) == 3
    last = read_pst_with_pypff(writer.paths[-1])
    assert {"A/First", "B/Second", "C"} <= set(last)
    for path in writer.paths:
        assert_every_reader_opens(path, tmp_path, 1)


def test_one_part_keeps_the_base_name(tmp_path):
    base = tmp_path / "small.pst"
    with SplittingPstWriter(base, split_bytes=50_000_000) as writer:
        for message in bulk_messages(10, "INBOX"):
            writer.add_message(message)
    assert writer.paths == [base]
    assert_every_reader_opens(base, tmp_path, 10)
    assert len(read_pst_with_pypff(base)["INBOX"]) == 10


def test_a_message_larger_than_the_split_size_gets_its_own_part(tmp_path):
    base = tmp_path / "big.pst"
    small = bulk_messages(3, "INBOX", size=1000)
    large = bulk_messages(1, "INBOX", size=600_000, seed=99)[0]
    with SplittingPstWriter(base, split_bytes=400_000) as writer:
        writer.add_message(small[0])
        writer.add_message(large)
        writer.add_message(small[1])
    assert len(writer.paths) == 3
    counts = [len(read_pst_with_pypff(p)["INBOX"]) for p in writer.paths]
    assert counts == [1, 1, 1]
    for path in writer.paths:
        assert_every_reader_opens(path, tmp_path, 1)
    assert writer.paths[1].stat().st_size > 400_000
    assert writer.bytes_written == sum(p.stat().st_size for p in writer.paths)


def test_split_size_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        SplittingPstWriter(Path(tmp_path / "x.pst"), split_bytes=0)

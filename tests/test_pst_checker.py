"""check_pst: passes what Outlook and this writer produce, catches deliberate corruption.

Each corruption is made surgically (CRCs recomputed where the point is another defect) so that
the test proves the checker sees that particular problem, not just any damage.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.archives.pst import PstWriter, check_pst
from connectors.archives.pst import props as P
from connectors.archives.pst.encoding import permute_decode, permute_encode, pst_crc
from connectors.archives.pst.header import pack_header
from connectors.archives.pst.layout import FIRST_AMAP_OFFSET, PAGE_DATA_SIZE
from connectors.archives.pst.reader import PstReader
from tests.pst_corpus import OUTLOOK_EMPTY, assert_every_reader_opens, bulk_messages, feature_corpus


@pytest.fixture(scope="module")
def good_pst(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("checker") / "good.pst"
    with PstWriter(path) as writer:
        writer.add_folder("Empty")
        for item in feature_corpus()[:9]:
            writer.add_message(item.message)
        for message in bulk_messages(40, "INBOX/Bulk"):
            writer.add_message(message)
    return path


@pytest.fixture
def victim(good_pst, tmp_path) -> Path:
    copy = tmp_path / "victim.pst"
    shutil.copyfile(good_pst, copy)
    return copy


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _read(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _refresh_page_crc(path: Path, offset: int) -> None:
    data = _read(path, offset, PAGE_DATA_SIZE)
    _patch(path, offset + PAGE_DATA_SIZE + 4, struct.pack("<I", pst_crc(data)))


def _any(problems: list[str], *words: str) -> bool:
    return any(all(w in p for w in words) for p in problems)


# -- files that must pass -----------------------------------------------------------------------


@pytest.mark.skipif(not OUTLOOK_EMPTY.exists(), reason="reference fixture missing")
def test_outlook_written_empty_store_passes():
    assert check_pst(OUTLOOK_EMPTY) == []


def test_writer_output_passes(good_pst, tmp_path):
    assert check_pst(good_pst) == []
    assert_every_reader_opens(good_pst, tmp_path, 49)


# -- what java-libpst's readers and libpff need, caught in files written the wrong way ----------


def _write_with(monkeypatch, path: Path, target: object, name: str, replacement) -> list[str]:
    """The problems check_pst finds in a PST written with ``target.name`` replaced."""
    with monkeypatch.context() as patch:
        patch.setattr(target, name, replacement)
        with PstWriter(path) as writer:
            for item in feature_corpus()[:9]:
                writer.add_message(item.message)
            for message in bulk_messages(80, "INBOX/Bulk"):
                writer.add_message(message)
    return check_pst(path)


def test_a_bth_header_away_from_hid_0x20_is_caught(monkeypatch, tmp_path):
    from connectors.archives.pst import ltp

    original = ltp.BTreeOnHeapWriter.__init__

    def header_later(self, heap, *args, **kwargs):
        heap.allocate(b"first")  # as the writer did before: something else first
        original(self, heap, *args, **kwargs)

    problems = _write_with(monkeypatch, tmp_path / "late.pst", ltp.BTreeOnHeapWriter,
                           "__init__", header_later)  # fmt: skip
    assert _any(problems, "node 0x21", "BTH header at HID 0x40, not 0x20")
    assert _any(problems, "message 0x", "BTH header at HID 0x40")


def test_unpadded_row_matrix_blocks_are_caught(monkeypatch, tmp_path):
    from connectors.archives.pst import ltp

    original = ltp.TableWriter.__init__

    def unpadded(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._padding = b""

    problems = _write_with(monkeypatch, tmp_path / "unpadded.pst", ltp.TableWriter, "__init__",
                           unpadded)  # fmt: skip
    assert _any(problems, "row matrix blocks not padded to 8176 bytes")


def test_empty_string_and_binary_values_are_caught(monkeypatch, tmp_path):
    from connectors.archives.pst import messages

    def keep_all(properties):  # as the writer did before: empty values written too
        return properties, sum(messages._value_size(t, v) for t, v in properties)

    monkeypatch.setattr(messages, "without_empty_values", lambda properties: properties)
    problems = _write_with(monkeypatch, tmp_path / "empty.pst", messages,
                           "_sized_without_empty_values", keep_all)  # fmt: skip
    assert _any(problems, "message 0x", "property 0x003D001F is empty")  # no subject prefix


def test_an_empty_string_stream_in_the_name_map_is_caught(monkeypatch, tmp_path):
    from connectors.archives.pst import messaging

    numeric = tuple(n for n in messaging.REGISTERED_NAMES if isinstance(n[1], int))
    monkeypatch.setattr(messaging, "LEGACYFLO_NAMES", ())  # its messages' names are strings too
    problems = _write_with(monkeypatch, tmp_path / "names.pst", messaging, "REGISTERED_NAMES", numeric)
    assert problems == ["name-to-id map: stream 0x00040102 is empty or missing"]


def test_cli_reports_ok_and_problems(good_pst, victim):
    ok = subprocess.run([sys.executable, "-m", "connectors.archives.pst.checker", str(good_pst)],
                        capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.strip().endswith("OK")
    _patch(victim, 4, b"\x00\x00\x00\x00")
    bad = subprocess.run([sys.executable, "-m", "connectors.archives.pst.checker", str(victim)],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "dwCRCPartial" in bad.stdout
    assert "RuntimeWarning" not in bad.stderr


# -- corruptions --------------------------------------------------------------------------------


def test_flipped_block_crc_is_caught(victim):
    with PstReader(victim) as reader:
        entry = next(e for e in reader.blocks.values() if e.cb > 100)
    from connectors.archives.pst.layout import block_size

    trailer_crc = entry.ib + block_size(entry.cb) - 12
    original = _read(victim, trailer_crc, 1)
    _patch(victim, trailer_crc, bytes([original[0] ^ 0xFF]))
    assert _any(check_pst(victim), f"block 0x{entry.bid:X}", "CRC mismatch")


def test_flipped_data_byte_is_caught_by_block_crc(victim):
    with PstReader(victim) as reader:
        entry = next(e for e in reader.blocks.values() if not e.bid & 2 and e.cb > 100)
    original = _read(victim, entry.ib + 50, 1)
    _patch(victim, entry.ib + 50, bytes([original[0] ^ 0x01]))
    assert _any(check_pst(victim), f"block 0x{entry.bid:X}", "CRC mismatch")


def test_unsorted_btree_keys_are_caught(victim):
    with PstReader(victim) as reader:
        page = next(p for p in reader.nbt_pages if p.level == 0 and p.entry_count >= 3)
    size = page.entry_size
    first, second = _read(victim, page.offset, size), _read(victim, page.offset + size, size)
    _patch(victim, page.offset, second + first)
    _refresh_page_crc(victim, page.offset)
    problems = check_pst(victim)
    assert _any(problems, "NBT", "out of order"), problems


def test_cleared_amap_bit_is_caught(victim):
    with PstReader(victim) as reader:
        entry = max(reader.blocks.values(), key=lambda e: e.ib)
    amap = FIRST_AMAP_OFFSET + (entry.ib - FIRST_AMAP_OFFSET) // 253_952 * 253_952
    slot = (entry.ib - amap) // 64
    byte = _read(victim, amap + slot // 8, 1)[0]
    _patch(victim, amap + slot // 8, bytes([byte & ~(0x80 >> (slot % 8))]))
    _refresh_page_crc(victim, amap)
    problems = check_pst(victim)
    assert _any(problems, "AMap", "1 allocated slots not marked"), problems


def test_amap_bit_set_on_free_space_is_caught(victim):
    with PstReader(victim) as reader:
        amap = reader.header.amap_last  # the last span has free space at its end
    data = _read(victim, amap, PAGE_DATA_SIZE)
    free_byte = max(i for i, b in enumerate(data) if b != 0xFF)
    free_bit = next(bit for bit in range(8) if not data[free_byte] & (0x80 >> bit))
    _patch(victim, amap + free_byte, bytes([data[free_byte] | (0x80 >> free_bit)]))
    _refresh_page_crc(victim, amap)
    problems = check_pst(victim)
    assert _any(problems, "AMap", "1 marked slots not allocated"), problems


def test_amap_page_crc_is_checked(victim):
    _patch(victim, FIRST_AMAP_OFFSET + PAGE_DATA_SIZE + 4, b"\xde\xad\xbe\xef")
    assert _any(check_pst(victim), f"map page at 0x{FIRST_AMAP_OFFSET:X}", "CRC mismatch")


def test_header_crc_is_checked(victim):
    original = _read(victim, 40, 1)
    _patch(victim, 40, bytes([original[0] ^ 0x01]))  # dwUnique, covered by both CRCs
    problems = check_pst(victim)
    assert _any(problems, "dwCRCPartial") and _any(problems, "dwCRCFull")


def _rewrite_header(path: Path, **changes: object) -> None:
    """Re-pack the header with some fields changed (valid CRCs)."""
    from dataclasses import replace

    with PstReader(path) as reader:
        h = reader.header
    from connectors.archives.pst.header import HeaderFields

    fields = HeaderFields(
        bid_next_page=h.bid_next_page, bid_next_block=h.bid_next_block, unique=h.unique,
        rgnid=struct.pack("<32I", *h.rgnid), file_eof=h.file_eof, amap_last=h.amap_last,
        amap_free=h.amap_free, nbt=(h.nbt_bid, h.nbt_ib), bbt=(h.bbt_bid, h.bbt_ib),
        amap_valid=True, crypt_method=h.crypt_method,
    )  # fmt: skip
    _patch(path, 0, pack_header(replace(fields, **changes)))


def test_low_nid_high_water_mark_is_caught(victim):
    with PstReader(victim) as reader:
        rgnid = list(reader.header.rgnid)
    rgnid[4] = 0x10000  # messages were given indexes above this
    _rewrite_header(victim, rgnid=struct.pack("<32I", *rgnid))
    problems = check_pst(victim)
    assert _any(problems, "above rgnid[0x04]"), problems


def test_wrong_free_space_and_eof_are_caught(victim):
    with PstReader(victim) as reader:
        free = reader.header.amap_free
    _rewrite_header(victim, amap_free=free - 64)
    assert _any(check_pst(victim), "cbAMapFree")
    with open(victim, "ab") as f:
        f.write(b"\x00" * 512)
    assert _any(check_pst(victim), "ibFileEof")


def test_btree_page_with_foreign_bid_is_caught(victim):
    with PstReader(victim) as reader:
        page = reader.bbt_pages[-1]
    _patch(victim, page.offset + PAGE_DATA_SIZE + 8, struct.pack("<Q", page.bid + 1000))
    problems = check_pst(victim)
    assert _any(problems, "BBT page", "trailer bid") and _any(problems, "signature mismatch")


def test_unresolvable_parent_is_caught(victim):
    with PstReader(victim) as reader:
        page, i, nid = next(
            (page, i, nid)
            for page in reader.nbt_pages if page.level == 0
            for i in range(page.entry_count)
            for nid, _d, _s, parent in [struct.unpack_from("<QQQI", page.data, i * 32)]
            if parent and parent != nid
        )  # fmt: skip
    _patch(victim, page.offset + i * 32 + 24, struct.pack("<I", 0x7FFFFFE2))
    _refresh_page_crc(victim, page.offset)
    problems = check_pst(victim)
    assert _any(problems, f"node 0x{nid:X}", "parent 0x7FFFFFE2 not found"), problems


def test_missing_block_is_caught(victim):
    with PstReader(victim) as reader:
        page = next(p for p in reader.nbt_pages if p.level == 0 and p.entry_count)
        nid, bid_data = struct.unpack_from("<QQ", page.data, 0)
    _patch(victim, page.offset + 8, struct.pack("<Q", 0x7FFFFFF0))
    _refresh_page_crc(victim, page.offset)
    problems = check_pst(victim)
    assert _any(problems, f"node 0x{nid:X}", "0x7FFFFFF0 not in the BBT"), problems
    assert _any(problems, "referenced by no node")


def _patch_inline_property(path: Path, nid: int, prop_tag: int, value: int) -> None:
    """Change an inline (<= 4 bytes) value in a node's property context, fixing the CRC."""
    with PstReader(path) as reader:
        node = reader.nodes[nid]
        assert not node.bid_data & 2, "test expects a single-block PC"
        entry = reader.blocks[node.bid_data]
        encoded = reader.header.crypt_method == 1
    raw = _read(path, entry.ib, entry.cb)
    plain = bytearray(permute_decode(raw) if encoded else raw)
    key = struct.pack("<HH", prop_tag >> 16, prop_tag & 0xFFFF)
    at = plain.find(key)
    assert at > 0
    plain[at + 4 : at + 8] = struct.pack("<I", value)
    stored = permute_encode(plain) if encoded else bytes(plain)
    _patch(path, entry.ib, stored)
    from connectors.archives.pst.layout import block_size

    _patch(path, entry.ib + block_size(entry.cb) - 12, struct.pack("<I", pst_crc(stored)))


def test_wrong_message_size_is_caught(victim):
    with PstReader(victim) as reader:
        nid = min(n for n in reader.nodes if n & 0x1F == 0x04 and not reader.nodes[n].bid_data & 2)
        size = reader.property_context(nid)[P.MESSAGE_SIZE]
    _patch_inline_property(victim, nid, P.MESSAGE_SIZE, size + 1)
    problems = check_pst(victim)
    assert _any(problems, f"message 0x{nid:X}", "PidTagMessageSize"), problems


def test_wrong_content_count_is_caught(victim):
    with PstReader(victim) as reader:
        folder = next(n for n, e in reader.nodes.items() if n & 0x1F == 0x02
                      and reader.property_context(n)[P.CONTENT_COUNT] == 40)  # fmt: skip
    _patch_inline_property(victim, folder, P.CONTENT_COUNT, 39)
    assert _any(check_pst(victim), f"folder 0x{folder:X}", "content count 39 != 40")


def test_truncated_file_is_reported_not_raised(victim):
    with open(victim, "r+b") as f:
        f.truncate(FIRST_AMAP_OFFSET + 1000)
    problems = check_pst(victim)
    assert problems and isinstance(problems[0], str)


def test_garbage_is_reported_not_raised(tmp_path):
    junk = tmp_path / "junk.pst"
    junk.write_bytes(b"not a pst" * 100)
    assert check_pst(junk)
    assert check_pst(tmp_path / "missing.pst")

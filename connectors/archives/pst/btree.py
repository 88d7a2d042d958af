"""The NBT and BBT: 512-byte B-tree pages built bottom-up from entries already sorted by key.

Leaves are filled completely (the last one takes the remainder), each intermediate entry holds
the first key of its child, and every page trailer carries the bid of the BREF pointing to it,
which is what readers verify. Only one level's child references are held in memory (24 bytes
per page below), so a tree over millions of entries costs a few megabytes at most.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from . import layout as L
from .encoding import pst_crc, signature

NBT_ENTRY = struct.Struct("<QQQII")  # nid, bidData, bidSub, nidParent, padding
BBT_ENTRY = struct.Struct("<QQHHI")  # bid, ib, cb, cRef, padding
INTERMEDIATE_ENTRY = struct.Struct("<QQQ")  # key, child bid, child ib


def btree_page(
    ptype: int, entries: bytes, count: int, entry_size: int, level: int, offset: int, bid: int
) -> bytes:
    entry_max = L.BTPAGE_ENTRIES_SIZE // entry_size
    assert count <= entry_max and len(entries) == count * entry_size
    data = (
        entries.ljust(L.BTPAGE_ENTRIES_SIZE, b"\x00")
        + bytes((count, entry_max, entry_size, level))
        + b"\x00" * 4
    )
    trailer = struct.pack("<BBHIQ", ptype, ptype, signature(offset, bid), pst_crc(data), bid)
    return data + trailer


def write_btree(
    ptype: int,
    leaf_entries: Iterable[bytes],
    leaf_entry_size: int,
    place_page: Callable[[], tuple[int, int]],
    write_at: Callable[[int, bytes], None],
) -> tuple[int, int]:
    """Write a whole B-tree; return the root page's (bid, offset).

    ``leaf_entries`` are packed entries whose first 8 bytes are the key, strictly ascending.
    ``place_page`` allocates a 512-byte page and returns (offset, page bid).
    """
    level = 0
    children = bytearray()  # INTERMEDIATE_ENTRY per page of the level just written
    pages = _write_level(ptype, leaf_entries, leaf_entry_size, 0, place_page, write_at, children)
    while pages > 1:
        level += 1
        source = bytes(children)
        children = bytearray()
        rows = (
            source[at : at + L.BTREE_ENTRY_SIZE]
            for at in range(0, len(source), L.BTREE_ENTRY_SIZE)
        )
        pages = _write_level(ptype, rows, L.BTREE_ENTRY_SIZE, level, place_page, write_at, children)
    _key, bid, offset = INTERMEDIATE_ENTRY.unpack(children)
    return bid, offset


def _write_level(
    ptype: int,
    entries: Iterable[bytes],
    entry_size: int,
    level: int,
    place_page: Callable[[], tuple[int, int]],
    write_at: Callable[[int, bytes], None],
    out: bytearray,
) -> int:
    per_page = L.BTPAGE_ENTRIES_SIZE // entry_size
    batch: list[bytes] = []
    previous_key = -1
    pages = 0

    def flush() -> None:
        nonlocal pages
        offset, bid = place_page()
        raw = b"".join(batch)
        write_at(offset, btree_page(ptype, raw, len(batch), entry_size, level, offset, bid))
        out.extend(INTERMEDIATE_ENTRY.pack(_key(batch[0]) if batch else 0, bid, offset))
        batch.clear()
        pages += 1

    for entry in entries:
        key = _key(entry)
        if key <= previous_key:
            raise ValueError(f"B-tree keys out of order: 0x{key:X} after 0x{previous_key:X}")
        previous_key = key
        batch.append(entry)
        if len(batch) == per_page:
            flush()
    if batch or pages == 0:
        flush()
    return pages


def _key(entry: bytes) -> int:
    return int.from_bytes(entry[:8], "little")

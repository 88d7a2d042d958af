"""NDB building blocks in isolation: map-page layout up to the FPMap, allocation, B-trees, codecs.

These cover sizes the end-to-end tests cannot reach quickly (an FPMap needs a 2 GB file): the
allocator and the B-tree builder run here against an in-memory sink.
"""

from __future__ import annotations

import struct

import pytest

from connectors.archives.pst import layout as L
from connectors.archives.pst.allocation import SpaceAllocator, longest_free_run
from connectors.archives.pst.btree import BBT_ENTRY, write_btree
from connectors.archives.pst.encoding import (
    permute_decode,
    permute_encode,
    pst_crc,
    signature,
)
from connectors.archives.pst.heap import fill_level


def test_map_page_positions_follow_the_spec():
    assert L.map_pages(0) == [(L.PTYPE_AMAP, 0x4400), (L.PTYPE_PMAP, 0x4600)]
    assert L.map_pages(1) == [(L.PTYPE_AMAP, 0x4400 + 253_952)]
    assert L.map_pages(128) == [
        (L.PTYPE_AMAP, L.amap_offset(128)),
        (L.PTYPE_PMAP, L.amap_offset(128) + 512),
        (L.PTYPE_FMAP, L.amap_offset(128) + 1024),
    ]
    assert L.has_fmap(128 + 496) and not L.has_fmap(128 + 495)
    assert L.map_pages(8192)[-1] == (L.PTYPE_FPMAP, L.amap_offset(8192) + 1536)
    assert L.has_fpmap(8192 + 31_744) and not L.has_fpmap(8192 + 496)
    assert L.reserved_end(0) == 0x4800
    assert L.amap_offset(8192) == 0x4400 + 8192 * 253_952  # the first FPMap, past 2 GB


class _Sink:
    def __init__(self) -> None:
        self.pages: dict[int, bytes] = {}

    def write_at(self, offset: int, data: bytes) -> None:
        self.pages[offset] = data


def test_allocator_writes_every_map_page_up_to_the_first_fpmap():
    sink = _Sink()
    allocator = SpaceAllocator(sink.write_at)
    allocated: list[tuple[int, int]] = []
    while allocator.cursor < L.amap_offset(8193) + 10_000:
        size = 8192 if len(allocated) % 5 else 640
        allocated.append((allocator.allocate(size), size))
    eof, amap_last, free = allocator.finish()
    spans = (eof - L.FIRST_AMAP_OFFSET) // L.AMAP_SPAN
    assert amap_last == L.amap_offset(spans - 1)

    map_ranges = set()
    for span in range(spans):
        for ptype, offset in L.map_pages(span):
            page = sink.pages[offset]
            assert page[496] == page[497] == ptype
            assert struct.unpack_from("<I", page, 500)[0] == pst_crc(page[:496])
            assert struct.unpack_from("<Q", page, 504)[0] == offset
            map_ranges.add(offset // 512)
    assert sink.pages[L.amap_offset(8192) + 1536][496] == L.PTYPE_FPMAP
    assert L.amap_offset(8192) + 1024 not in sink.pages  # no FMap there: the slot stays free
    for offset, size in allocated:
        assert offset % 64 == 0
        assert all(page not in map_ranges for page in range(offset // 512, (offset + size) // 512 + 1)
                   if page * 512 < offset + size)  # fmt: skip
        span = L.amap_index_of(offset)
        assert L.amap_index_of(offset + size - 1) == span

    # The AMaps mark exactly the allocations and the map pages, and free space adds up.
    marked = 0
    for span in range(spans):
        marked += int.from_bytes(sink.pages[L.amap_offset(span)][:496], "big").bit_count()
    used = sum(size // 64 for _, size in allocated) + sum(len(L.map_pages(s)) * 8
                                                         for s in range(spans))  # fmt: skip
    assert marked == used
    assert free == spans * 496 * 8 * 64 - used * 64


def test_span_tails_are_reused_by_small_blocks():
    sink = _Sink()
    allocator = SpaceAllocator(sink.write_at)
    offsets = [allocator.allocate(8192) for _ in range(31)]  # the 31st does not fit in span 0
    assert L.amap_index_of(offsets[-1]) == 1
    small = allocator.allocate(640)
    assert L.amap_index_of(small) == 0  # went into the tail of span 0


def test_longest_free_run():
    assert longest_free_run(bytes(496)) == 255
    assert longest_free_run(b"\xff" * 496) == 0
    assert longest_free_run(b"\xff\x0f" + b"\xff" * 494) == 4
    assert longest_free_run(b"\xf0" + b"\xff" * 495) == 4


def test_btree_of_three_levels_keeps_keys_in_order():
    sink = _Sink()
    next_offset = [0x10000]
    next_bid = [1]

    def place_page() -> tuple[int, int]:
        offset, bid = next_offset[0], next_bid[0]
        next_offset[0] += 512
        next_bid[0] += 1
        return offset, bid

    entries = [BBT_ENTRY.pack(4 * (i + 1), 0x5000 + 64 * i, 100, 2, 0) for i in range(5000)]
    root_bid, root_ib = write_btree(L.PTYPE_BBT, iter(entries), 24, place_page, sink.write_at)

    seen: list[bytes] = []

    def walk(ib: int, bid: int, level: int | None) -> int:
        page = sink.pages[ib]
        count, maximum, size, depth = page[488:492]
        assert struct.unpack_from("<Q", page, 504)[0] == bid
        assert struct.unpack_from("<H", page, 498)[0] == signature(ib, bid)
        assert struct.unpack_from("<I", page, 500)[0] == pst_crc(page[:496])
        assert maximum == 20 and size == 24
        if level is not None:
            assert depth == level - 1
        for i in range(count):
            if depth:
                key, child_bid, child_ib = struct.unpack_from("<QQQ", page, 24 * i)
                first = walk(child_ib, child_bid, depth)
                assert key == first
            else:
                seen.append(page[24 * i : 24 * i + 24])
        return struct.unpack_from("<Q", page, 0)[0]

    walk(root_ib, root_bid, None)
    assert sink.pages[root_ib][491] == 2  # 5,000 entries: 250 leaves, 13 index pages, a root
    assert seen == entries
    with pytest.raises(ValueError):
        write_btree(L.PTYPE_BBT, iter(entries[::-1]), 24, place_page, sink.write_at)


def test_codecs():
    assert pst_crc(bytes(496)) == 0
    data = bytes(range(256)) * 3
    assert permute_decode(permute_encode(data)) == data
    assert permute_encode(b"\x00") == bytes([65])  # mpbbR[0] in [MS-PST] section 5.1
    assert signature(0x8E00, 0x15A) == 0x8F5A  # from the Outlook-written reference store
    assert fill_level(8176) == 0xF and fill_level(8176 - 10) == 0xE and fill_level(0) == 0

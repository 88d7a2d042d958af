"""Constants and geometry of a Unicode PST file: sizes, offsets and where the map pages sit.

[MS-PST] fixes the map pages at absolute offsets: an AMap page at 0x4400 and then every
253,952 bytes (each maps its own span, itself included), a PMap page right after every 8th
AMap, an FMap page after the AMap (and PMap) of AMap 128 and then every 496 AMaps, an FPMap
page after AMap 8,192 and then every 31,744 AMaps, in the slot after where an FMap would be.
The writer and the checker both derive every position from the functions here.
"""

from __future__ import annotations

HEADER_SIZE = 564
DLIST_OFFSET = 0x4200
FIRST_AMAP_OFFSET = 0x4400

PAGE_SIZE = 512
PAGE_DATA_SIZE = 496
PAGE_TRAILER_SIZE = 16

BLOCK_ALIGN = 64
BLOCK_TRAILER_SIZE = 16
MAX_BLOCK_SIZE = 8192
MAX_BLOCK_DATA = MAX_BLOCK_SIZE - BLOCK_TRAILER_SIZE  # 8176

AMAP_SPAN = PAGE_DATA_SIZE * 8 * BLOCK_ALIGN  # 253,952 bytes mapped by one AMap page
AMAPS_PER_PMAP = 8
FMAP_FIRST_AMAP = 128
AMAPS_PER_FMAP = PAGE_DATA_SIZE  # one byte per AMap
FPMAP_FIRST_AMAP = 128 * 64
AMAPS_PER_FPMAP = PAGE_DATA_SIZE * 8 * AMAPS_PER_PMAP  # one bit per PMap

# Page types ([MS-PST] §2.2.2.7.1).
PTYPE_BBT = 0x80
PTYPE_NBT = 0x81
PTYPE_FMAP = 0x82
PTYPE_PMAP = 0x83
PTYPE_AMAP = 0x84
PTYPE_FPMAP = 0x85
PTYPE_DLIST = 0x86

# B-tree pages: 488 bytes of entries, then cEnt, cEntMax, cbEnt, cLevel, 4 bytes padding.
BTPAGE_ENTRIES_SIZE = 488
NBT_LEAF_ENTRY_SIZE = 32
BTREE_ENTRY_SIZE = 24  # BBT leaf entries and intermediate entries of both trees

# Data-tree and subnode-tree block capacities.
XBLOCK_MAX_ENTRIES = (MAX_BLOCK_DATA - 8) // 8  # 1,021
SLBLOCK_MAX_ENTRIES = (MAX_BLOCK_DATA - 8) // 24  # 340
SIBLOCK_MAX_ENTRIES = (MAX_BLOCK_DATA - 8) // 16  # 510


def align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def block_size(data_size: int) -> int:
    """Bytes a block occupies on disk: data plus trailer, rounded up to 64."""
    return align(data_size + BLOCK_TRAILER_SIZE, BLOCK_ALIGN)


def amap_offset(index: int) -> int:
    return FIRST_AMAP_OFFSET + index * AMAP_SPAN


def has_pmap(amap_index: int) -> bool:
    return amap_index % AMAPS_PER_PMAP == 0


def has_fmap(amap_index: int) -> bool:
    return amap_index >= FMAP_FIRST_AMAP and (amap_index - FMAP_FIRST_AMAP) % AMAPS_PER_FMAP == 0


def has_fpmap(amap_index: int) -> bool:
    return (
        amap_index >= FPMAP_FIRST_AMAP and (amap_index - FPMAP_FIRST_AMAP) % AMAPS_PER_FPMAP == 0
    )


def map_pages(amap_index: int) -> list[tuple[int, int]]:
    """(page type, absolute offset) of every map page inside the span of one AMap."""
    base = amap_offset(amap_index)
    pages = [(PTYPE_AMAP, base)]
    if has_pmap(amap_index):
        pages.append((PTYPE_PMAP, base + PAGE_SIZE))
    if has_fmap(amap_index):
        pages.append((PTYPE_FMAP, base + 2 * PAGE_SIZE))
    if has_fpmap(amap_index):
        pages.append((PTYPE_FPMAP, base + 3 * PAGE_SIZE))
    return pages


def reserved_end(amap_index: int) -> int:
    """First offset after the map pages at the start of an AMap span (where data may go)."""
    return max(offset for _, offset in map_pages(amap_index)) + PAGE_SIZE


def amap_index_of(offset: int) -> int:
    return (offset - FIRST_AMAP_OFFSET) // AMAP_SPAN

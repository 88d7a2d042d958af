"""Heap-on-node writer ([MS-PST] §2.3.1): small allocations packed into a node's blocks.

Block 0 starts with HNHDR, blocks 8, 136, 264... with HNBITMAPHDR, the others with HNPAGEHDR;
each ends with its page map (allocation offsets). Blocks are written to the node's data tree as
soon as they are full, so a heap of any size costs a few blocks of memory: block 0 (whose header
is completed at the end, when the user root is known) and the current bitmap block (whose fill
levels cover the 128 blocks after it) stay in memory until they are final.

A HID names (block index, allocation index); allocations never move once made.
"""

from __future__ import annotations

import struct

from . import layout as L
from .ndb import DataTreeWriter

MAX_ALLOCATION = 3580  # larger values go to a subnode ([MS-PST] §2.3.3.2)
HN_SIGNATURE = 0xEC
CLIENT_PC = 0xBC
CLIENT_TC = 0x7C
CLIENT_BTH = 0xB5

_HNHDR_SIZE = 12
_PAGEHDR_SIZE = 2
_BITMAPHDR_SIZE = 66
_MAX_ALLOCATIONS_PER_BLOCK = 2047  # hidIndex is 11 bits

# Fill levels ([MS-PST] §2.3.1.2): the first threshold of free bytes each level starts at.
_FILL_THRESHOLDS = (3584, 2560, 2048, 1792, 1536, 1280, 1024, 768, 512, 256, 128, 64, 32, 16, 8)


def make_hid(block_index: int, allocation_index: int) -> int:
    return (block_index << 16) | (allocation_index << 5)


def fill_level(block_size: int) -> int:
    free = L.MAX_BLOCK_DATA - block_size
    for level, threshold in enumerate(_FILL_THRESHOLDS):
        if free >= threshold:
            return level
    return 0xF


def _is_bitmap_block(index: int) -> bool:
    return index >= 8 and (index - 8) % 128 == 0


class _HeapBlock:
    __slots__ = ("index", "header_size", "data", "offsets")

    def __init__(self, index: int) -> None:
        self.index = index
        if index == 0:
            self.header_size = _HNHDR_SIZE
        elif _is_bitmap_block(index):
            self.header_size = _BITMAPHDR_SIZE
        else:
            self.header_size = _PAGEHDR_SIZE
        self.data = bytearray(self.header_size)
        self.offsets = [self.header_size]  # start of each allocation, then the end

    def fits(self, size: int) -> bool:
        count = len(self.offsets)  # allocations after adding this one
        end = len(self.data) + size
        return (
            count <= _MAX_ALLOCATIONS_PER_BLOCK
            and end + (end & 1) + 4 + 2 * (count + 1) <= L.MAX_BLOCK_DATA
        )

    def size_if_sealed(self) -> int:
        end = len(self.data)
        return end + (end & 1) + 4 + 2 * len(self.offsets)

    def seal(self) -> bytes:
        """The block's bytes: header, allocations, page map (2-byte aligned)."""
        if len(self.data) & 1:
            self.data.append(0)
        ib_map = len(self.data)
        struct.pack_into("<H", self.data, 0, ib_map)
        count = len(self.offsets) - 1
        page_map = struct.pack(f"<HH{count + 1}H", count, 0, *self.offsets)
        return bytes(self.data) + page_map


class HeapWriter:
    """Builds one heap-on-node into a data tree. Call ``finish`` once, with the user root."""

    def __init__(self, client_signature: int, tree: DataTreeWriter) -> None:
        self._client_signature = client_signature
        self._tree = tree
        self._first = _HeapBlock(0)
        self._first_slot = tree.reserve_block()
        self._current = self._first
        self._bitmap: _HeapBlock | None = None
        self._bitmap_slot = 0
        self._levels = bytearray()  # fill level of every sealed block, by index

    def allocate(self, data: bytes | bytearray) -> int:
        """Store ``data`` (at most 3,580 bytes) and return its HID."""
        size = len(data)
        if size > MAX_ALLOCATION:
            raise ValueError(f"heap allocation of {size} bytes exceeds {MAX_ALLOCATION}")
        block = self._current
        offsets, end = block.offsets, len(block.data) + size
        # _HeapBlock.fits, inlined (the writer's most frequent call)
        if len(offsets) > _MAX_ALLOCATIONS_PER_BLOCK or (
            end + (end & 1) + 6 + 2 * len(offsets) > L.MAX_BLOCK_DATA
        ):
            self._next_block()
            block = self._current
            offsets = block.offsets
        block.data += data
        offsets.append(len(block.data))
        return (block.index << 16) | ((len(offsets) - 1) << 5)  # make_hid

    def replace(self, hid: int, data: bytes | bytearray) -> None:
        """Overwrite an allocation with data of the same size. Only block 0 and the current
        block are still in memory: headers, TCINFO, BTH leaves and row matrices reserved
        early and completed later live there."""
        block_index, index = hid >> 16, (hid >> 5) & 0x7FF
        if block_index == 0:
            block = self._first
        elif block_index == self._current.index:
            block = self._current
        else:
            raise ValueError(f"heap block {block_index} is already written")
        start, end = block.offsets[index - 1], block.offsets[index]
        if end - start != len(data):
            raise ValueError("a heap allocation cannot change size")
        block.data[start:end] = data

    def _next_block(self) -> None:
        self._seal(self._current)
        self._current = _HeapBlock(self._current.index + 1)
        if _is_bitmap_block(self._current.index):
            self._bitmap = self._current
            self._bitmap_slot = self._tree.reserve_block()

    def _seal(self, block: _HeapBlock) -> None:
        self._levels.append(fill_level(block.size_if_sealed()))
        if block is self._first:
            return  # written by finish(), with the user root
        if block is self._bitmap:
            pass  # written once the 128 blocks it describes are sealed
        else:
            self._tree.add_block(block.seal())
        bitmap = self._bitmap
        if bitmap is not None and block.index == bitmap.index + 127:
            self._write_bitmap(bitmap)

    def _write_bitmap(self, bitmap: _HeapBlock) -> None:
        levels = self._levels[bitmap.index : bitmap.index + 128]
        struct.pack_into("64s", bitmap.data, 2, _pack_levels(levels, 64))
        self._tree.fill_block(self._bitmap_slot, bitmap.seal())
        self._bitmap = None

    def finish(self, user_root: int) -> None:
        """Seal the remaining blocks, completing HNHDR with ``user_root`` and fill levels."""
        last = self._current
        self._seal(last)
        if self._bitmap is not None:
            self._write_bitmap(self._bitmap)
        first = self._first
        struct.pack_into(
            "<xxBBI4s", first.data, 0, HN_SIGNATURE, self._client_signature, user_root,
            _pack_levels(self._levels[:8], 4),
        )  # fmt: skip
        self._tree.fill_block(self._first_slot, first.seal())


def _pack_levels(levels: bytes | bytearray, size: int) -> bytes:
    """Two 4-bit fill levels per byte, the even block in the low nibble."""
    out = bytearray(size)
    for i, level in enumerate(levels[: size * 2]):
        out[i // 2] |= level << (4 * (i % 2))
    return bytes(out)

"""Append-only space allocation and the map pages (AMap, PMap, FMap, FPMap) that describe it.

The writer never frees space, so allocation is a cursor that only moves forward, jumping over
the map pages that [MS-PST] pins at the start of every AMap span (the tail a large block left
unused is filled by later small ones). Once a span can take no more, its AMap is final and is
written at once: memory stays constant however large the file grows (a few dozen bitmaps of
496 bytes, plus one byte per span for the FMaps written at the end).

Invariants: every byte range handed out is marked in its span's AMap, nothing else is (map
pages mark themselves), blocks are 64-byte aligned, pages 512-byte aligned.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from . import layout as L
from .encoding import pst_crc


def map_page(ptype: int, offset: int, data: bytes) -> bytes:
    """A 512-byte map page: 496 data bytes and a trailer whose bid is the page's offset."""
    assert len(data) == L.PAGE_DATA_SIZE
    trailer = struct.pack("<BBHIQ", ptype, ptype, 0, pst_crc(data), offset)
    return data + trailer


def longest_free_run(bitmap: bytes | bytearray) -> int:
    """Longest run of clear bits (free 64-byte slots), MSB first, capped at 255 (FMap byte)."""
    bits = format(int.from_bytes(bitmap, "big"), f"0{len(bitmap) * 8}b")
    return min(255, max(map(len, bits.replace("1", " ").split()), default=0))


_ALL_SET = b"\xff" * L.PAGE_DATA_SIZE


class _Span:
    """One AMap span being filled: its index and allocation bitmap (MSB first)."""

    __slots__ = ("index", "bits")

    def __init__(self, index: int) -> None:
        self.index = index
        self.bits = bytearray(L.PAGE_DATA_SIZE)
        base = L.amap_offset(index)
        for _ptype, offset in L.map_pages(index):
            self.mark(offset - base, L.PAGE_SIZE)

    def mark(self, relative: int, size: int) -> None:
        slot = relative // L.BLOCK_ALIGN
        last = (relative + size) // L.BLOCK_ALIGN  # exclusive; sizes are 64-aligned
        bits = self.bits
        while slot < last and slot % 8:
            bits[slot // 8] |= 0x80 >> (slot % 8)
            slot += 1
        whole = (last - slot) // 8
        if whole > 0:
            bits[slot // 8 : slot // 8 + whole] = _ALL_SET[:whole]
            slot += whole * 8
        while slot < last:
            bits[slot // 8] |= 0x80 >> (slot % 8)
            slot += 1


class SpaceAllocator:
    """Hands out file space in order and writes each AMap span's map pages when it is done.

    When a block does not fit in what is left of a span, the cursor moves to the next span and
    the left-over tail becomes a hole that later, smaller allocations fill. A span with a hole
    stays open (its bitmap in memory) until the hole is nearly full or the span is one of more
    than ``MAX_OPEN_HOLES`` older ones; then its AMap is final and written. Holes only ever
    receive blocks, so B-tree pages keep their 512-byte alignment from the cursor.

    ``write_at(offset, data)`` writes the map pages; callers write their own data at the
    offsets they are given.
    """

    MAX_OPEN_HOLES = 32

    def __init__(self, write_at: Callable[[int, bytes], None]) -> None:
        self._write = write_at
        self._current = _Span(0)
        self._holes: list[list] = []  # [span, start, end], oldest first
        self._pending_finish: dict[int, _Span] = {}
        self._next_to_finish = 0
        self._free_run_per_span = bytearray()
        self.free_bytes = 0  # cbAMapFree of every finished span
        self.cursor = L.reserved_end(0)
        self._largest_hole = 0  # at least the largest hole: nothing larger is tried in one
        self._span_base, self._span_end = L.amap_offset(0), L.amap_offset(1)  # of _current

    def _finish_span(self, span: _Span) -> None:
        """Write the map pages of a span whose allocations are final (in span order)."""
        self._pending_finish[span.index] = span
        while self._next_to_finish in self._pending_finish:
            ready = self._pending_finish.pop(self._next_to_finish)
            self._write_maps(ready)
            self._next_to_finish += 1

    def _write_maps(self, span: _Span) -> None:
        for ptype, offset in L.map_pages(span.index):
            if ptype == L.PTYPE_AMAP:
                self._write(offset, map_page(ptype, offset, bytes(span.bits)))
            elif ptype in (L.PTYPE_PMAP, L.PTYPE_FPMAP):
                # Deprecated maps: all bits set means "nothing reserved here" to old readers.
                self._write(offset, map_page(ptype, offset, b"\xff" * L.PAGE_DATA_SIZE))
            # FMap pages describe later spans too: written by finish() once all are known.
        used = int.from_bytes(span.bits, "big").bit_count()
        self.free_bytes += (L.PAGE_DATA_SIZE * 8 - used) * L.BLOCK_ALIGN
        self._free_run_per_span.append(longest_free_run(span.bits))

    def _from_hole(self, size: int) -> int | None:
        for position, hole in enumerate(self._holes):
            span, start, end = hole
            if start + size <= end:
                span.mark(start - L.amap_offset(span.index), size)
                hole[1] = start + size
                if end - hole[1] < L.BLOCK_ALIGN * 2:
                    del self._holes[position]
                    self._finish_span(span)
                return start
        # None fits: the bound was stale (holes shrink without lowering it), make it exact.
        self._largest_hole = max((end - start for _span, start, end in self._holes), default=0)
        return None

    def allocate_block(self) -> int:
        """``allocate(MAX_BLOCK_SIZE)``, the common case made cheap: a full block never fits a
        hole (a hole is what was too small for the allocation that left it)."""
        start = self.cursor
        if start + L.MAX_BLOCK_SIZE <= self._span_end:
            self._current.mark(start - self._span_base, L.MAX_BLOCK_SIZE)
            self.cursor = start + L.MAX_BLOCK_SIZE
            return start
        return self.allocate(L.MAX_BLOCK_SIZE)

    def allocate(self, size: int, alignment: int = L.BLOCK_ALIGN) -> int:
        """Reserve ``size`` bytes (a multiple of 64) aligned to ``alignment``; return the offset."""
        assert size % L.BLOCK_ALIGN == 0 and 0 < size <= L.AMAP_SPAN // 2
        if alignment == L.BLOCK_ALIGN and size <= self._largest_hole:
            offset = self._from_hole(size)
            if offset is not None:
                return offset
        start = L.align(self.cursor, alignment)
        span_end = L.amap_offset(self._current.index + 1)
        if start + size > span_end:
            if span_end - self.cursor >= L.BLOCK_ALIGN * 2:
                self._holes.append([self._current, self.cursor, span_end])
                if len(self._holes) > self.MAX_OPEN_HOLES:
                    self._finish_span(self._holes.pop(0)[0])
                self._largest_hole = max(self._largest_hole, span_end - self.cursor)
            else:
                self._finish_span(self._current)
            self._current = _Span(self._current.index + 1)
            self._span_base = L.amap_offset(self._current.index)
            self._span_end = L.amap_offset(self._current.index + 1)
            start = L.align(L.reserved_end(self._current.index), alignment)
        self._current.mark(start - L.amap_offset(self._current.index), size)
        self.cursor = start + size
        return start

    def finish(self) -> tuple[int, int, int]:
        """Finish the open spans and write the FMap pages.

        Returns (end of file, offset of the last AMap, free bytes in all AMaps).
        """
        for span, _start, _end in self._holes:
            self._finish_span(span)
        self._holes = []
        self._largest_hole = 0
        self._finish_span(self._current)
        assert not self._pending_finish
        spans = self._current.index + 1
        for fmap_span in range(L.FMAP_FIRST_AMAP, spans, L.AMAPS_PER_FMAP):
            covered = self._free_run_per_span[fmap_span : fmap_span + L.AMAPS_PER_FMAP]
            data = bytes(covered).ljust(L.PAGE_DATA_SIZE, b"\x00")
            offset = L.amap_offset(fmap_span) + 2 * L.PAGE_SIZE
            self._write(offset, map_page(L.PTYPE_FMAP, offset, data))
        eof = L.amap_offset(spans)
        return eof, L.amap_offset(spans - 1), self.free_bytes

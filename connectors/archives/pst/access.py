"""Lazy random access to a PST's node database and its heaps, tables and property contexts.

For restore and browsing (``restore``), unlike ``reader.PstReader`` (the checker's reader,
which loads both B-trees whole): nothing is loaded on open but the header. A node or block is
found by descending its B-tree from the root, through a small cache of pages, so memory does
not grow with the number of messages. A data tree is read block by block (``iter_data``), and
a property context keeps every value stored in a subnode as a ``LazyValue`` that the caller
reads whole (a body) or in blocks (attachment data). Tables are read row by row.

Invariant: memory is bounded by the caches (``PAGE_CACHE`` pages and ``BLOCK_CACHE`` blocks)
plus what the caller keeps; a damaged structure raises ``PstFormatError`` (never an endless
walk: every descent is bounded by the tree's levels and every list by its count).
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import layout as L
from . import props as P
from .encoding import CRYPT_NONE, CRYPT_PERMUTE, permute_decode, pst_crc
from .header import header_crcs_valid
from .reader import Column, PstFormatError, bid_is_internal, parse_header

PAGE_CACHE = 128  # B-tree pages (512 bytes each)
BLOCK_CACHE = 64  # heap blocks (at most 8 KB each)
_WORD = struct.Struct("<H")
_PC_VALUE = struct.Struct("<HI")
MAX_BTREE_LEVELS = 8
MAX_SUBNODE_LEVELS = 4
UNICODE_VERSION = 23  # wVer of a Unicode PST (14/15: ANSI; 36: 4K pages, not read)

__all__ = ["PstFile", "PstFormatError", "LazyValue", "PropertyContext", "TableRows", "Node"]


@dataclass(frozen=True)
class Node:
    """A node's data tree and subnode tree (an NBT entry, or a subnode's SLENTRY)."""

    nid: int
    bid_data: int
    bid_sub: int
    parent: int = 0


class PstFile:
    """One PST opened for reading: a path, or a seekable binary file object the caller owns."""

    def __init__(self, source: str | os.PathLike | BinaryIO) -> None:
        if isinstance(source, str | os.PathLike):
            self._file: BinaryIO = open(Path(source), "rb")  # noqa: SIM115 - closed by close()
            self._owned = True
        else:
            self._file = source
            self._owned = False
        self._file.seek(0, os.SEEK_END)
        self.size = self._file.tell()
        raw = self._read_at(0, L.HEADER_SIZE, "the header")
        if raw[:4] != b"!BDN":
            raise PstFormatError("not a PST file (no !BDN magic)")
        self.header = parse_header(raw)
        if self.header.version != UNICODE_VERSION:
            version = self.header.version
            kind = "ANSI (Outlook 97-2002)" if version in (14, 15) else f"version {version}"
            raise PstFormatError(f"unsupported PST format: {kind}; only Unicode PSTs are read")
        partial_ok, _full_ok = header_crcs_valid(raw)
        if not partial_ok:
            raise PstFormatError("the PST header is damaged (CRC mismatch)")
        if self.header.crypt_method not in (CRYPT_NONE, CRYPT_PERMUTE):
            raise PstFormatError(f"unsupported PST encryption {self.header.crypt_method}")
        self._pages: OrderedDict[int, tuple[bytes, int, int, list[int]]] = OrderedDict()
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __enter__(self) -> PstFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- NDB ----------------------------------------------------------------------------------

    def _read_at(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or offset + size > self.size:
            raise PstFormatError(f"{what} at 0x{offset:X} lies past the end of the file")
        self._file.seek(offset)
        data = self._file.read(size)
        if len(data) != size:
            raise PstFormatError(f"{what} at 0x{offset:X}: short read")
        return data

    def _page(self, ib: int, ptype: int) -> tuple[bytes, int, int, list[int]]:
        """(page bytes, entry size, level, entry keys) of the B-tree page at ``ib``."""
        cached = self._pages.get(ib)
        if cached is not None:
            self._pages.move_to_end(ib)
            return cached
        if ib % L.PAGE_SIZE:
            raise PstFormatError(f"B-tree page at 0x{ib:X} is not page-aligned")
        page = self._read_at(ib, L.PAGE_SIZE, "B-tree page")
        if page[L.PAGE_DATA_SIZE] != ptype:
            raise PstFormatError(f"page at 0x{ib:X} has type 0x{page[L.PAGE_DATA_SIZE]:02X}")
        crc = struct.unpack_from("<I", page, L.PAGE_DATA_SIZE + 4)[0]
        if crc != pst_crc(page[: L.PAGE_DATA_SIZE]):
            raise PstFormatError(f"B-tree page at 0x{ib:X} is damaged (CRC mismatch)")
        count, _max, size, level = page[488:492]
        if count * size > L.BTPAGE_ENTRIES_SIZE or size < 8 or level > MAX_BTREE_LEVELS:
            raise PstFormatError(f"B-tree page at 0x{ib:X} has {count} entries of {size}")
        keys = [struct.unpack_from("<Q", page, i * size)[0] for i in range(count)]
        if any(b <= a for a, b in zip(keys, keys[1:], strict=False)):
            raise PstFormatError(f"B-tree page at 0x{ib:X}: keys out of order")
        cached = (page, size, level, keys)
        self._pages[ib] = cached
        if len(self._pages) > PAGE_CACHE:
            self._pages.popitem(last=False)
        return cached

    def _lookup(self, root_ib: int, ptype: int, key: int) -> bytes | None:
        """The leaf entry of ``key`` in the B-tree rooted at ``root_ib`` (raw bytes), or None."""
        ib = root_ib
        expected_level = None
        for _ in range(MAX_BTREE_LEVELS + 1):
            page, size, level, keys = self._page(ib, ptype)
            if expected_level is not None and level != expected_level:
                raise PstFormatError(f"B-tree page at 0x{ib:X} has level {level}")
            at = bisect_right(keys, key) - 1  # the last entry whose key is <= key
            if at < 0:
                return None
            if level == 0:
                return page[at * size : (at + 1) * size] if keys[at] == key else None
            ib = struct.unpack_from("<Q", page, at * size + 16)[0]
            expected_level = level - 1
        raise PstFormatError("B-tree deeper than any PST holds")

    def node(self, nid: int) -> Node:
        entry = self._lookup(self.header.nbt_ib, L.PTYPE_NBT, nid)
        if entry is None:
            raise PstFormatError(f"node 0x{nid:X} is not in the node B-tree")
        nid_, bid_data, bid_sub, parent = struct.unpack_from("<QQQI", entry, 0)
        return Node(nid_ & 0xFFFFFFFF, bid_data, bid_sub, parent)

    def has_node(self, nid: int) -> bool:
        return self._lookup(self.header.nbt_ib, L.PTYPE_NBT, nid) is not None

    def block(self, bid: int) -> bytes:
        """A block's payload, decoded if it is an external block of a permute-encoded file."""
        entry = self._lookup(self.header.bbt_ib, L.PTYPE_BBT, bid & ~1)
        if entry is None:
            raise PstFormatError(f"block 0x{bid:X} is not in the block B-tree")
        _bid, ib, cb = struct.unpack_from("<QQH", entry, 0)
        if cb > L.MAX_BLOCK_DATA:
            raise PstFormatError(f"block 0x{bid:X} claims {cb} bytes")
        total = L.block_size(cb)
        raw = self._read_at(ib, total, f"block 0x{bid:X}")
        t_cb, _sig, crc, t_bid = struct.unpack_from("<HHIQ", raw, total - L.BLOCK_TRAILER_SIZE)
        data = raw[:cb]
        if t_cb != cb or (t_bid & ~1) != (bid & ~1):
            raise PstFormatError(f"block 0x{bid:X} at 0x{ib:X} has a mismatched trailer")
        if crc != pst_crc(data):
            raise PstFormatError(f"block 0x{bid:X} at 0x{ib:X} is damaged (CRC mismatch)")
        if not bid_is_internal(bid) and self.header.crypt_method == CRYPT_PERMUTE:
            return permute_decode(data)
        return data

    def data_block_ids(self, bid: int, _depth: int = 0) -> list[int]:
        """The external block ids of a data tree, in order (8 bytes each: a 30 MB value has
        about 3,700)."""
        if bid == 0:
            return []
        if not bid_is_internal(bid):
            return [bid]
        if _depth > 1:
            raise PstFormatError(f"data tree 0x{bid:X} nested too deep")
        raw = self.block(bid)
        btype, level, count = struct.unpack_from("<BBH", raw, 0)
        if btype != 0x01 or level not in (1, 2) or 8 + 8 * count > len(raw):
            raise PstFormatError(f"block 0x{bid:X} is not an XBLOCK/XXBLOCK")
        children = struct.unpack_from(f"<{count}Q", raw, 8)
        if level == 1:
            if any(bid_is_internal(c) for c in children):
                raise PstFormatError(f"XBLOCK 0x{bid:X} lists an internal block")
            return list(children)
        out: list[int] = []
        for child in children:
            if not bid_is_internal(child):
                raise PstFormatError(f"XXBLOCK 0x{bid:X} lists an external block")
            out.extend(self.data_block_ids(child, _depth + 1))
        return out

    def iter_data(self, bid: int) -> Iterator[bytes]:
        """A data tree's bytes, one block at a time."""
        for child in self.data_block_ids(bid):
            yield self.block(child)

    def subnodes(self, bid_sub: int, _depth: int = 0) -> dict[int, Node]:
        """The subnode tree at ``bid_sub`` (one message's or attachment's: bounded by it)."""
        out: dict[int, Node] = {}
        if bid_sub == 0:
            return out
        if _depth > MAX_SUBNODE_LEVELS:
            raise PstFormatError(f"subnode tree 0x{bid_sub:X} nested too deep")
        raw = self.block(bid_sub)
        btype, level, count = struct.unpack_from("<BBH", raw, 0)
        if btype != 0x02:
            raise PstFormatError(f"block 0x{bid_sub:X} is not an SLBLOCK/SIBLOCK")
        width = 24 if level == 0 else 16
        if 8 + width * count > len(raw):
            raise PstFormatError(f"subnode block 0x{bid_sub:X} lists more than it holds")
        for i in range(count):
            if level == 0:
                nid, bid_data, bid_child = struct.unpack_from("<QQQ", raw, 8 + 24 * i)
                out[nid & 0xFFFFFFFF] = Node(nid & 0xFFFFFFFF, bid_data, bid_child)
            else:
                _nid, bid_child = struct.unpack_from("<QQ", raw, 8 + 16 * i)
                out.update(self.subnodes(bid_child, _depth + 1))
        return out

    # -- LTP ----------------------------------------------------------------------------------

    def heap(self, node: Node) -> Heap:
        return Heap(self, node)

    def property_context(self, node: Node) -> PropertyContext:
        return self.heap(node).property_context()

    def table(self, node: Node) -> TableRows:
        return self.heap(node).table()


class LazyValue:
    """A property value kept in a subnode: read whole, or block by block."""

    def __init__(self, pst: PstFile, node: Node) -> None:
        self._pst = pst
        self.node = node
        self._ids: list[int] | None = None

    def _block_ids(self) -> list[int]:
        if self._ids is None:
            self._ids = self._pst.data_block_ids(self.node.bid_data)
        return self._ids

    @property
    def size(self) -> int:
        ids = self._block_ids()
        if not ids:
            return 0
        if len(ids) == 1:
            return len(self._pst.block(ids[0]))
        if bid_is_internal(self.node.bid_data):  # the XBLOCK records the total
            raw = self._pst.block(self.node.bid_data)
            return struct.unpack_from("<I", raw, 4)[0]
        return sum(len(self._pst.block(b)) for b in ids)

    def chunks(self) -> Iterator[bytes]:
        for bid in self._block_ids():
            yield self._pst.block(bid)

    def read(self) -> bytes:
        return b"".join(self.chunks())


Value = int | bytes | LazyValue


def as_bytes(value: Value | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, LazyValue):
        return value.read()
    if isinstance(value, int):
        raise PstFormatError("a fixed-size value where bytes were expected")
    return value


def as_text(value: Value | None) -> str | None:
    """A PtypString as text (UTF-16LE), cut at a NUL as MAPI readers do."""
    data = as_bytes(value)
    if data is None:
        return None
    return data.decode("utf-16-le", "replace").split("\x00", 1)[0]


class Heap:
    """A heap-on-node whose blocks are fetched when an allocation in them is asked for."""

    def __init__(self, pst: PstFile, node: Node) -> None:
        self.pst = pst
        self.node = node
        self._ids = pst.data_block_ids(node.bid_data)
        if not self._ids:
            raise PstFormatError(f"node 0x{node.nid:X} has no data")
        self._subnodes: dict[int, Node] | None = None
        self._maps: dict[int, tuple[int, ...]] = {}
        first = self._block(0)
        if len(first) < 12 or first[2] != 0xEC:
            raise PstFormatError(f"node 0x{node.nid:X}: heap lacks the 0xEC signature")
        self.client_signature = first[3]
        self.user_root = struct.unpack_from("<I", first, 4)[0]

    def _block(self, index: int) -> bytes:
        cache = self.pst._blocks
        bid = self._ids[index]
        data = cache.get(bid)
        if data is None:
            data = self.pst.block(bid)
            cache[bid] = data
            if len(cache) > BLOCK_CACHE:
                cache.popitem(last=False)
        else:
            cache.move_to_end(bid)
        return data

    def get(self, hid: int) -> bytes:
        if hid & 0x1F:
            raise PstFormatError(f"0x{hid:X} is not a HID")
        index, block_index = (hid >> 5) & 0x7FF, hid >> 16
        if block_index >= len(self._ids):
            raise PstFormatError(f"HID 0x{hid:X} points past the heap")
        block = self._block(block_index)
        offsets = self._maps.get(block_index)
        if offsets is None:
            offsets = self._maps[block_index] = _page_map(block, block_index)
        if index == 0 or index >= len(offsets):
            raise PstFormatError(f"HID 0x{hid:X} has no allocation")
        return block[offsets[index - 1] : offsets[index]]

    def subnode(self, nid: int) -> Node:
        if self._subnodes is None:
            self._subnodes = self.pst.subnodes(self.node.bid_sub)
        node = self._subnodes.get(nid)
        if node is None:
            raise PstFormatError(f"node 0x{self.node.nid:X}: subnode 0x{nid:X} not found")
        return node

    def subnode_entries(self) -> dict[int, Node]:
        if self._subnodes is None:
            self._subnodes = self.pst.subnodes(self.node.bid_sub)
        return self._subnodes

    def hnid(self, hnid: int) -> bytes | LazyValue:
        """An HNID's value: a heap allocation's bytes, or a subnode as a ``LazyValue``."""
        if hnid == 0:
            return b""
        if hnid & 0x1F == 0:
            return self.get(hnid)
        return LazyValue(self.pst, self.subnode(hnid))

    def bth(self, hid: int) -> tuple[int, int, Iterator[tuple[bytes, bytes]]]:
        """(cbKey, cbEnt, the BTH's leaf records in order) of the BTH whose header is ``hid``."""
        header = self.get(hid)
        if len(header) < 8:
            raise PstFormatError("BTH header too short")
        btype, cb_key, cb_ent, levels, root = struct.unpack_from("<BBBBI", header, 0)
        if btype != 0xB5 or cb_key == 0 or levels > MAX_BTREE_LEVELS:
            raise PstFormatError("BTH header lacks the 0xB5 signature")
        return cb_key, cb_ent, self._bth_walk(root, levels, cb_key, cb_ent) if root else iter(())

    def _bth_walk(self, hid: int, level: int, cb_key: int, cb_ent: int) -> Iterator:
        data = self.get(hid)
        size = cb_key + (cb_ent if level == 0 else 4)
        for at in range(0, len(data) - size + 1, size):
            if level == 0:
                yield data[at : at + cb_key], data[at + cb_key : at + size]
            else:
                child = struct.unpack_from("<I", data, at + cb_key)[0]
                yield from self._bth_walk(child, level - 1, cb_key, cb_ent)

    def property_context(self) -> PropertyContext:
        if self.client_signature != 0xBC:
            raise PstFormatError(f"node 0x{self.node.nid:X} is not a property context")
        cb_key, cb_ent, records = self.bth(self.user_root)
        if (cb_key, cb_ent) != (2, 6):
            raise PstFormatError("property context BTH has wrong record sizes")
        values: dict[int, Value] = {}
        stored: dict[int, int] = {}  # tag -> HNID of a value read when first asked for
        fixed_sizes = P.FIXED_SIZES
        for key, value in records:
            prop_id = _WORD.unpack(key)[0]
            prop_type, hnid = _PC_VALUE.unpack(value)
            size = fixed_sizes.get(prop_type)
            prop_tag = (prop_id << 16) | prop_type
            if size is not None and size <= 4:
                values[prop_tag] = hnid if prop_type != P.PT_BOOLEAN else hnid & 0xFF
            else:
                stored[prop_tag] = hnid
        return PropertyContext(self, values, stored)

    def table(self) -> TableRows:
        if self.client_signature != 0x7C:
            raise PstFormatError(f"node 0x{self.node.nid:X} is not a table context")
        info = self.get(self.user_root)
        if len(info) < 22 or info[0] != 0x7C:
            raise PstFormatError("TCINFO lacks the 0x7C signature")
        col_count = info[1]
        ends = struct.unpack_from("<4H", info, 2)
        _row_index, rows_hnid, _deprecated = struct.unpack_from("<III", info, 10)
        if len(info) < 22 + 8 * col_count:
            raise PstFormatError("TCINFO shorter than its columns")
        columns = [Column(*struct.unpack_from("<IHBB", info, 22 + 8 * i)) for i in range(col_count)]
        return TableRows(self, columns, ends, rows_hnid)


def _page_map(block: bytes, index: int) -> tuple[int, ...]:
    """The allocation offsets of a heap block (HNPAGEMAP), checked to ascend within it."""
    if len(block) < 2:
        raise PstFormatError(f"heap block {index} is empty")
    ib_map = struct.unpack_from("<H", block, 0)[0]
    if ib_map + 4 > len(block):
        raise PstFormatError(f"heap block {index}: page map out of range")
    count = struct.unpack_from("<H", block, ib_map)[0]
    if ib_map + 4 + 2 * (count + 1) > len(block):
        raise PstFormatError(f"heap block {index}: page map longer than the block")
    offsets = struct.unpack_from(f"<{count + 1}H", block, ib_map + 4)
    if any(b < a for a, b in zip(offsets, offsets[1:], strict=False)) or offsets[-1] > ib_map:
        raise PstFormatError(f"heap block {index}: allocations out of order")
    return offsets


class PropertyContext:
    """A PC's values by tag: int for inline fixed values, bytes for heap values, LazyValue for
    values in subnodes."""

    def __init__(self, heap: Heap, values: dict[int, Value], stored: dict[int, int]) -> None:
        self.heap = heap
        self.values = values  # inline values, and the stored ones read so far
        self._stored = stored

    def get(self, prop_tag: int) -> Value | None:
        value = self.values.get(prop_tag)
        if value is None and prop_tag in self._stored:
            value = self.values[prop_tag] = self.heap.hnid(self._stored.pop(prop_tag))
        return value

    def __contains__(self, prop_tag: int) -> bool:
        return prop_tag in self.values or prop_tag in self._stored

    def text(self, prop_id: int) -> str | None:
        """A string property by id (PtypString, else PtypString8 read as Windows-1252)."""
        value = self.get((prop_id << 16) | P.PT_UNICODE)
        if value is not None:
            return as_text(value)
        value = self.get((prop_id << 16) | P.PT_STRING8)
        data = as_bytes(value)
        return None if data is None else data.decode("cp1252", "replace").split("\x00", 1)[0]

    def integer(self, prop_tag: int) -> int | None:
        value = self.get(prop_tag)
        return value if isinstance(value, int) else None

    def time(self, prop_tag: int):
        value = self.get(prop_tag)
        if isinstance(value, bytes) and len(value) == 8:
            ticks = struct.unpack("<Q", value)[0]
            if 0 < ticks < 0x7FFFFFFFFFFFFFFF:
                try:
                    return P.from_filetime(ticks)
                except OverflowError:
                    return None
        return None

    def object_node(self, prop_tag: int) -> Node | None:
        """The subnode a PtypObject value (an embedded message) points to."""
        value = self.get(prop_tag)
        if not isinstance(value, bytes) or len(value) < 8:
            return None
        nid, _size = struct.unpack_from("<II", value, 0)
        return self.heap.subnode(nid)

    def subnode(self, nid: int) -> Node | None:
        return self.heap.subnode_entries().get(nid)


class TableRows:
    """A table context's rows, in the row matrix's order, read one block at a time."""

    def __init__(self, heap: Heap, columns: list[Column], ends: tuple[int, ...], rows_hnid: int):
        self.heap = heap
        self.columns = columns
        self.ends = ends
        self.rows_hnid = rows_hnid
        self.row_size = ends[3]

    def _raw_rows(self) -> Iterator[bytes]:
        size = self.row_size
        if not self.rows_hnid or size <= 0:
            return
        if self.rows_hnid & 0x1F == 0:
            blocks: Iterator[bytes] = iter((self.heap.get(self.rows_hnid),))
            per_block = None
        else:
            blocks = self.heap.pst.iter_data(self.heap.subnode(self.rows_hnid).bid_data)
            per_block = L.MAX_BLOCK_DATA // size
        for block in blocks:
            usable = len(block) if per_block is None else min(len(block), per_block * size)
            for at in range(0, usable - size + 1, size):
                yield block[at : at + size]

    def row_ids(self) -> Iterator[int]:
        for raw in self._raw_rows():
            yield struct.unpack_from("<I", raw, 0)[0]

    def rows(self, tags: frozenset[int] | None = None) -> Iterator[dict[int, Value]]:
        """Each row as tag -> value (the values of absent cells left out); ``tags``: only
        these columns (a fixed-size column costs no heap read)."""
        columns = self.columns if tags is None else [c for c in self.columns if c.tag in tags]
        for raw in self._raw_rows():
            yield self._decode(raw, columns)

    def _decode(self, raw: bytes, columns: list[Column]) -> dict[int, Value]:
        ceb_at = self.ends[2]
        out: dict[int, Value] = {}
        for col in columns:
            if ceb_at + col.bit // 8 >= len(raw) or col.offset + col.size > len(raw):
                raise PstFormatError("table row shorter than its columns")
            if not raw[ceb_at + col.bit // 8] & (0x80 >> (col.bit % 8)):
                continue
            cell = raw[col.offset : col.offset + col.size]
            prop_type = col.tag & 0xFFFF
            fixed = P.FIXED_SIZES.get(prop_type)
            if fixed is not None:
                out[col.tag] = int.from_bytes(cell, "little") if fixed <= 4 else cell
            else:
                out[col.tag] = self.heap.hnid(int.from_bytes(cell, "little"))
        return out

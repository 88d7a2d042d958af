"""A small, strict reader of Unicode PST files, for the checker and the tests.

It reads what the writer writes (and what Outlook writes): the header, both B-trees, data and
subnode trees, heaps, BTHs, property contexts and table contexts. It never repairs anything:
malformed input raises ``PstFormatError`` so that the checker can report it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import layout as L
from . import props as P
from .encoding import CRYPT_PERMUTE, permute_decode


class PstFormatError(Exception):
    pass


@dataclass
class Header:
    magic: bytes
    crc_partial: int
    magic_client: bytes
    version: int
    client_version: int
    platform_create: int
    platform_access: int
    bid_next_page: int
    unique: int
    rgnid: tuple[int, ...]
    file_eof: int
    amap_last: int
    amap_free: int
    pmap_free: int
    nbt_bid: int
    nbt_ib: int
    bbt_bid: int
    bbt_ib: int
    amap_valid: int
    rgb_fm: bytes
    rgb_fp: bytes
    sentinel: int
    crypt_method: int
    bid_next_block: int
    crc_full: int
    raw: bytes


def parse_header(raw: bytes) -> Header:
    if len(raw) < L.HEADER_SIZE:
        raise PstFormatError("file shorter than a header")
    (magic, crc_partial, magic_client, version, client_version, p_create, p_access) = (
        struct.unpack_from("<4sI2sHHBB", raw, 0)
    )
    _bid_unused, bid_next_page, unique = struct.unpack_from("<QQI", raw, 24)
    rgnid = struct.unpack_from("<32I", raw, 44)
    (_res, file_eof, amap_last, amap_free, pmap_free, nbt_bid, nbt_ib, bbt_bid, bbt_ib) = (
        struct.unpack_from("<IQQQQQQQQ", raw, 180)
    )
    amap_valid = raw[248]
    sentinel, crypt_method = raw[512], raw[513]
    (bid_next_block, crc_full) = struct.unpack_from("<QI", raw, 516)
    return Header(
        magic, crc_partial, magic_client, version, client_version, p_create, p_access,
        bid_next_page, unique, rgnid, file_eof, amap_last, amap_free, pmap_free, nbt_bid,
        nbt_ib, bbt_bid, bbt_ib, amap_valid, raw[256:384], raw[384:512], sentinel,
        crypt_method, bid_next_block, crc_full, raw[: L.HEADER_SIZE],
    )  # fmt: skip


@dataclass
class Page:
    offset: int
    data: bytes  # the 496 bytes before the trailer
    ptype: int
    ptype_repeat: int
    wsig: int
    crc: int
    bid: int


@dataclass
class BTreePage(Page):
    entry_count: int = 0
    entry_max: int = 0
    entry_size: int = 0
    level: int = 0


@dataclass(frozen=True)
class NodeEntry:
    nid: int
    bid_data: int
    bid_sub: int
    parent: int


@dataclass(frozen=True)
class BlockEntry:
    bid: int
    ib: int
    cb: int
    refs: int


@dataclass
class Block:
    bid: int
    ib: int
    data: bytes  # stored bytes (still permute-encoded for external blocks)
    cb: int
    wsig: int
    crc: int
    trailer_bid: int


def bid_is_internal(bid: int) -> bool:
    return bool(bid & 0x2)


class PstReader:
    """Random access to one PST file. Builds both B-tree maps on open."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "rb")
        self.size = self.path.stat().st_size
        self.header = parse_header(self._file.read(L.HEADER_SIZE))
        self.nbt_pages: list[BTreePage] = []
        self.bbt_pages: list[BTreePage] = []
        self.nodes: dict[int, NodeEntry] = {}
        self.blocks: dict[int, BlockEntry] = {}
        self.tree_problems: list[str] = []
        self._load_tree(self.header.nbt_ib, self.header.nbt_bid, L.PTYPE_NBT, None)
        self._load_tree(self.header.bbt_ib, self.header.bbt_bid, L.PTYPE_BBT, None)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PstReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw access -------------------------------------------------------------------------

    def read_at(self, offset: int, size: int) -> bytes:
        self._file.seek(offset)
        data = self._file.read(size)
        if len(data) != size:
            raise PstFormatError(f"read past end of file at 0x{offset:X}")
        return data

    def read_page(self, offset: int) -> Page:
        raw = self.read_at(offset, L.PAGE_SIZE)
        ptype, ptype_repeat, wsig, crc, bid = struct.unpack_from("<BBHIQ", raw, L.PAGE_DATA_SIZE)
        return Page(offset, raw[: L.PAGE_DATA_SIZE], ptype, ptype_repeat, wsig, crc, bid)

    def _load_tree(self, ib: int, bid: int, ptype: int, parent_level: int | None) -> None:
        """Walk one B-tree depth-first, recording pages and leaf entries in key order."""
        page = self.read_page(ib)
        c_ent, c_max, cb_ent, level = page.data[488:492]
        bt = BTreePage(
            page.offset, page.data, page.ptype, page.ptype_repeat, page.wsig, page.crc, page.bid,
            c_ent, c_max, cb_ent, level,
        )  # fmt: skip
        pages = self.nbt_pages if ptype == L.PTYPE_NBT else self.bbt_pages
        pages.append(bt)
        name = "NBT" if ptype == L.PTYPE_NBT else "BBT"
        if page.ptype != ptype:
            raise PstFormatError(f"{name} page at 0x{ib:X} has type 0x{page.ptype:02X}")
        if page.bid != bid:
            self.tree_problems.append(
                f"{name} page at 0x{ib:X}: trailer bid 0x{page.bid:X} != BREF bid 0x{bid:X}"
            )
        if parent_level is not None and level != parent_level - 1:
            raise PstFormatError(f"{name} page at 0x{ib:X} has level {level}")
        if c_ent * cb_ent > L.BTPAGE_ENTRIES_SIZE:
            raise PstFormatError(f"{name} page at 0x{ib:X} has {c_ent} entries of {cb_ent}")
        for i in range(c_ent):
            at = i * cb_ent
            if level > 0:
                _key, child_bid, child_ib = struct.unpack_from("<QQQ", page.data, at)
                self._load_tree(child_ib, child_bid, ptype, level)
            elif ptype == L.PTYPE_NBT:
                nid, bid_data, bid_sub, parent = struct.unpack_from("<QQQI", page.data, at)
                self.nodes[nid] = NodeEntry(nid, bid_data, bid_sub, parent)
            else:
                bid_, ib_, cb, refs = struct.unpack_from("<QQHH", page.data, at)
                self.blocks[bid_] = BlockEntry(bid_, ib_, cb, refs)

    def read_block(self, bid: int) -> Block:
        entry = self.blocks.get(bid & ~1)
        if entry is None:
            raise PstFormatError(f"block 0x{bid:X} is not in the BBT")
        total = L.block_size(entry.cb)
        raw = self.read_at(entry.ib, total)
        cb, wsig, crc, trailer_bid = struct.unpack_from("<HHIQ", raw, total - 16)
        return Block(bid, entry.ib, raw[: entry.cb], cb, wsig, crc, trailer_bid)

    def block_payload(self, bid: int) -> bytes:
        """A block's bytes, decoded if it is an external block of a permute-encoded file."""
        block = self.read_block(bid)
        if not bid_is_internal(bid) and self.header.crypt_method == CRYPT_PERMUTE:
            return permute_decode(block.data)
        return block.data

    # -- node data and subnodes -------------------------------------------------------------

    def data_blocks(self, bid: int) -> list[bytes]:
        """The external blocks of a data tree, in order (one element for a plain block)."""
        if bid == 0:
            return []
        if not bid_is_internal(bid):
            return [self.block_payload(bid)]
        raw = self.block_payload(bid)
        btype, level, count, _total = struct.unpack_from("<BBHI", raw, 0)
        if btype != 0x01 or level not in (1, 2):
            raise PstFormatError(f"block 0x{bid:X} is not an XBLOCK/XXBLOCK")
        children = struct.unpack_from(f"<{count}Q", raw, 8)
        out: list[bytes] = []
        for child in children:
            if level == 2:
                out.extend(self.data_blocks(child))
            else:
                if bid_is_internal(child):
                    raise PstFormatError(f"XBLOCK 0x{bid:X} lists internal block 0x{child:X}")
                out.append(self.block_payload(child))
        return out

    def node_data(self, bid: int) -> bytes:
        return b"".join(self.data_blocks(bid))

    def subnodes(self, bid_sub: int) -> dict[int, NodeEntry]:
        """The subnode tree rooted at ``bid_sub``: nid -> (data bid, subnode bid)."""
        out: dict[int, NodeEntry] = {}
        if bid_sub == 0:
            return out
        raw = self.block_payload(bid_sub)
        btype, level, count = struct.unpack_from("<BBH", raw, 0)
        if btype != 0x02:
            raise PstFormatError(f"block 0x{bid_sub:X} is not an SLBLOCK/SIBLOCK")
        if level == 0:
            for i in range(count):
                nid, bid_data, bid_child = struct.unpack_from("<QQQ", raw, 8 + 24 * i)
                out[nid & 0xFFFFFFFF] = NodeEntry(nid & 0xFFFFFFFF, bid_data, bid_child, 0)
        else:
            for i in range(count):
                _nid, bid_child = struct.unpack_from("<QQ", raw, 8 + 16 * i)
                out.update(self.subnodes(bid_child))
        return out

    def heap(self, bid_data: int, bid_sub: int = 0) -> Heap:
        return Heap(self.data_blocks(bid_data), self, bid_sub)

    def property_context(self, nid: int) -> dict[int, object]:
        node = self.nodes[nid]
        return self.heap(node.bid_data, node.bid_sub).property_context()

    def table_context(self, nid: int) -> Table:
        node = self.nodes[nid]
        return self.heap(node.bid_data, node.bid_sub).table_context()


class Heap:
    """A heap-on-node ([MS-PST] §2.3.1) over a node's blocks, with its subnodes for HNIDs."""

    def __init__(self, blocks: list[bytes], reader: PstReader, bid_sub: int) -> None:
        if not blocks:
            raise PstFormatError("heap node has no data")
        self.blocks = blocks
        self.reader = reader
        self.bid_sub = bid_sub
        self._subnodes: dict[int, NodeEntry] | None = None
        first = blocks[0]
        if len(first) < 12 or first[2] != 0xEC:
            raise PstFormatError("heap node lacks the 0xEC signature")
        self.client_signature = first[3]
        self.user_root = struct.unpack_from("<I", first, 4)[0]
        self.fill_levels = first[8:12]
        self.maps = [self._page_map(i) for i in range(len(blocks))]

    def _page_map(self, index: int) -> list[int]:
        block = self.blocks[index]
        ib_map = struct.unpack_from("<H", block, 0)[0]
        if ib_map + 4 > len(block):
            raise PstFormatError(f"heap block {index}: page map offset {ib_map} out of range")
        count, _free = struct.unpack_from("<HH", block, ib_map)
        offsets = list(struct.unpack_from(f"<{count + 1}H", block, ib_map + 4))
        if any(b < a for a, b in zip(offsets, offsets[1:], strict=False)) or offsets[-1] > ib_map:
            raise PstFormatError(f"heap block {index}: allocations out of order")
        return offsets

    def get(self, hid: int) -> bytes:
        if hid & 0x1F:
            raise PstFormatError(f"0x{hid:X} is not a HID")
        index = (hid >> 5) & 0x7FF
        block_index = hid >> 16
        if block_index >= len(self.blocks):
            raise PstFormatError(f"HID 0x{hid:X} points past the heap")
        offsets = self.maps[block_index]
        if index == 0 or index >= len(offsets):
            raise PstFormatError(f"HID 0x{hid:X} has no allocation")
        return self.blocks[block_index][offsets[index - 1] : offsets[index]]

    def subnode_entries(self) -> dict[int, NodeEntry]:
        if self._subnodes is None:
            self._subnodes = self.reader.subnodes(self.bid_sub)
        return self._subnodes

    def get_hnid(self, hnid: int) -> bytes:
        """Bytes of an HNID: a heap allocation, or a subnode's whole data."""
        if hnid == 0:
            return b""
        if hnid & 0x1F == 0:
            return self.get(hnid)
        entry = self.subnode_entries().get(hnid)
        if entry is None:
            raise PstFormatError(f"subnode 0x{hnid:X} not found")
        return self.reader.node_data(entry.bid_data)

    def bth_records(self, hid: int) -> tuple[int, int, list[tuple[bytes, bytes]]]:
        """(cbKey, cbEnt, leaf records in stored order) of the BTH whose header is ``hid``."""
        header = self.get(hid)
        btype, cb_key, cb_ent, levels, root = struct.unpack_from("<BBBBI", header, 0)
        if btype != 0xB5:
            raise PstFormatError("BTH header lacks the 0xB5 signature")
        records: list[tuple[bytes, bytes]] = []
        if root:
            self._bth_walk(root, levels, cb_key, cb_ent, records)
        return cb_key, cb_ent, records

    def _bth_walk(self, hid: int, level: int, cb_key: int, cb_ent: int, out: list) -> None:
        data = self.get(hid)
        if level == 0:
            size = cb_key + cb_ent
            for at in range(0, len(data) - size + 1, size):
                out.append((data[at : at + cb_key], data[at + cb_key : at + size]))
        else:
            size = cb_key + 4
            for at in range(0, len(data) - size + 1, size):
                child = struct.unpack_from("<I", data, at + cb_key)[0]
                self._bth_walk(child, level - 1, cb_key, cb_ent, out)

    def property_context(self) -> dict[int, object]:
        """Tag -> raw value: bytes for variable/8-byte types, int for inline ones."""
        if self.client_signature != 0xBC:
            raise PstFormatError("not a property context")
        cb_key, cb_ent, records = self.bth_records(self.user_root)
        if (cb_key, cb_ent) != (2, 6):
            raise PstFormatError("property context BTH has wrong record sizes")
        out: dict[int, object] = {}
        for key, value in records:
            prop_id = struct.unpack("<H", key)[0]
            prop_type, hnid = struct.unpack("<HI", value)
            prop_tag = (prop_id << 16) | prop_type
            size = P.FIXED_SIZES.get(prop_type)
            if size is not None and size <= 4:
                out[prop_tag] = hnid if prop_type != P.PT_BOOLEAN else hnid & 0xFF
            else:
                out[prop_tag] = self.get_hnid(hnid)
        return out

    def table_context(self) -> Table:
        if self.client_signature != 0x7C:
            raise PstFormatError("not a table context")
        info = self.get(self.user_root)
        btype, col_count = info[0], info[1]
        if btype != 0x7C:
            raise PstFormatError("TCINFO lacks the 0x7C signature")
        ends = struct.unpack_from("<4H", info, 2)
        row_index_hid, rows_hnid, _deprecated = struct.unpack_from("<III", info, 10)
        columns = []
        for i in range(col_count):
            col_tag, ib, cb, ibit = struct.unpack_from("<IHBB", info, 22 + 8 * i)
            columns.append(Column(col_tag, ib, cb, ibit))
        row_size = ends[3]
        _k, _e, index_records = self.bth_records(row_index_hid) if row_index_hid else (4, 4, [])
        row_index = [
            (struct.unpack("<I", k)[0], struct.unpack("<I", v)[0]) for k, v in index_records
        ]
        rows_raw: list[bytes] = []
        if rows_hnid:
            if rows_hnid & 0x1F == 0:
                data = self.get(rows_hnid)
                rows_raw = [data[i : i + row_size] for i in range(0, len(data), row_size)]
            else:
                entry = self.subnode_entries().get(rows_hnid)
                if entry is None:
                    raise PstFormatError(f"row matrix subnode 0x{rows_hnid:X} not found")
                per_block = L.MAX_BLOCK_DATA // row_size if row_size else 0
                for block in self.reader.data_blocks(entry.bid_data):
                    usable = min(len(block), per_block * row_size)
                    rows_raw.extend(
                        block[i : i + row_size] for i in range(0, usable, row_size)
                    )
        rows_raw = [r for r in rows_raw if len(r) == row_size]
        return Table(self, columns, ends, row_index, rows_raw)


@dataclass(frozen=True)
class Column:
    tag: int
    offset: int
    size: int
    bit: int


@dataclass
class Table:
    heap: Heap
    columns: list[Column]
    ends: tuple[int, ...]
    row_index: list[tuple[int, int]]
    rows_raw: list[bytes]
    _decoded: list[dict[int, object]] | None = field(default=None, repr=False)

    def rows(self) -> list[dict[int, object]]:
        """Each row as tag -> value (int for inline fixed values, bytes otherwise)."""
        if self._decoded is None:
            self._decoded = [self._decode(raw) for raw in self.rows_raw]
        return self._decoded

    def _decode(self, raw: bytes) -> dict[int, object]:
        ceb_at = self.ends[2]
        out: dict[int, object] = {}
        for col in self.columns:
            if not raw[ceb_at + col.bit // 8] & (0x80 >> (col.bit % 8)):
                continue
            cell = raw[col.offset : col.offset + col.size]
            prop_type = col.tag & 0xFFFF
            fixed = P.FIXED_SIZES.get(prop_type)
            if fixed is not None:
                out[col.tag] = int.from_bytes(cell, "little") if fixed <= 4 else cell
            else:
                out[col.tag] = self.heap.get_hnid(int.from_bytes(cell, "little"))
        return out


def decode_string(value: object) -> str:
    assert isinstance(value, bytes)
    return value.decode("utf-16-le", "replace")

"""Structural checker for Unicode PST files: ``check_pst(path)`` lists the problems it finds.

What it verifies (stricter than the Linux readers, which skip most of it):

- header: magics, version 23, sentinel, crypt method, both CRCs, fAMapValid, rgbFM/rgbFP,
  ibFileEof equal to the file size and a whole number of AMap spans, ibAMapLast, cbAMapFree;
- B-tree pages: 512-byte alignment, page type, CRC, signature, trailer bid equal to the BREF
  bid, entry sizes and counts, keys strictly ascending across the tree, intermediate keys equal
  to their child's first key;
- blocks: 64-byte alignment, size, trailer cb/bid/signature/CRC, inside the file;
- allocation maps: AMap, PMap, FMap, FPMap pages where the layout puts them, with valid
  trailers; every block and page marked allocated, nothing else, and no two overlapping;
- nodes: data and subnode bids present in the BBT (through XBLOCKs and SLBLOCKs), lcbTotal
  of data trees, every block referenced, parent NIDs resolvable, exactly one node its own
  parent, rgnid at least every NID index used, the mandatory nodes of a new store present;
- heaps as Outlook lays them out (java-libpst and its ports read nothing else): every PC's and
  TC's BTH header at HID 0x20, a row matrix in a subnode padded to 8,176 bytes per block but
  the last, the name-to-id map's GUID, entry and string streams all holding data;
- messaging: folders' content and unread counts and contents-table rows match their
  messages; PidTagMessageSize and PidTagAttachSize equal the sums of their values' sizes
  (the writer's definition; other writers compute these differently); no message, attachment
  or recipient has a zero-length string or binary (Outlook leaves those out, and libpff fails
  on them), but the data of a zero-byte attachment.

Run ``python -m connectors.archives.pst.checker FILE.pst``: prints the problems, exits 1 if any.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path

from . import layout as L
from . import props as P
from .encoding import pst_crc, signature
from .header import header_crcs_valid
from .ndb import NID_TYPE_NORMAL_FOLDER, NID_TYPE_NORMAL_MESSAGE, nid_index, nid_type
from .reader import BTreePage, Heap, NodeEntry, PstFormatError, PstReader

# [MS-PST] §2.7.1: the nodes every PST must have (0x2223, the spam search folder, as in
# Outlook's own stores; the specification allows another search-folder NID for it).
MANDATORY_NODES = (
    0x21, 0x61, 0x122, 0x12D, 0x12E, 0x12F, 0x1E1, 0x201, 0x60D, 0x60E, 0x60F, 0x610, 0x671,
    0x692, 0x8022, 0x802D, 0x802E, 0x802F, 0x8042, 0x804D, 0x804E, 0x804F, 0x8062, 0x806D,
    0x806E, 0x806F,
)  # fmt: skip
SEARCH_FOLDER_TYPE = 0x03
MAX_PROBLEMS = 200


def check_pst(path: Path | str, *, messages: bool = True) -> list[str]:
    """Problems found in the PST at ``path``; an empty list means none.

    ``messages=False`` skips the per-message property checks (the slow part on big files).
    """
    try:
        reader = PstReader(path)
    except (OSError, PstFormatError, struct.error, ValueError) as exc:
        return [f"cannot read the file: {exc}"]
    with reader:
        return _Checker(reader, messages).run()


class _Checker:
    def __init__(self, reader: PstReader, check_messages: bool) -> None:
        self.r = reader
        self.h = reader.header
        self.check_messages = check_messages
        self.problems: list[str] = list(reader.tree_problems)
        self.spans = max(0, (reader.size - L.FIRST_AMAP_OFFSET) // L.AMAP_SPAN)
        self.bitmaps = [bytearray(L.PAGE_DATA_SIZE) for _ in range(self.spans)]
        self.referenced: set[int] = set()

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def run(self) -> list[str]:
        steps: list[Callable[[], None]] = [
            self.check_header,
            self.check_btree_pages,
            self.check_blocks,
            self.check_nodes,
            self.check_allocation_maps,
            self.check_unreferenced_blocks,
            self.check_heaps,
            self.check_folders_and_messages,
        ]
        for step in steps:
            try:
                step()
            except (PstFormatError, struct.error, ValueError, KeyError, IndexError) as exc:
                self.problem(f"{step.__name__}: cannot continue: {exc}")
        return self.problems

    # -- header -----------------------------------------------------------------------------

    def check_header(self) -> None:
        h, size = self.h, self.r.size
        if h.magic != b"!BDN" or h.magic_client != b"SM":
            self.problem("header: bad magic")
        if h.version not in (21, 23):
            self.problem(f"header: wVer {h.version} is not a Unicode PST (23)")
        if h.sentinel != 0x80:
            self.problem(f"header: bSentinel 0x{h.sentinel:02X} != 0x80")
        if h.crypt_method not in (0, 1):
            self.problem(f"header: unsupported bCryptMethod {h.crypt_method}")
        partial_ok, full_ok = header_crcs_valid(h.raw)
        if not partial_ok:
            self.problem("header: dwCRCPartial mismatch")
        if not full_ok:
            self.problem("header: dwCRCFull mismatch")
        if h.amap_valid not in (1, 2):
            self.problem(f"header: fAMapValid is {h.amap_valid} (file not closed cleanly?)")
        if h.rgb_fm != b"\xff" * 128 or h.rgb_fp != b"\xff" * 128:
            self.problem("header: rgbFM/rgbFP not filled with 0xFF")
        if h.file_eof != size:
            self.problem(f"header: ibFileEof {h.file_eof} != file size {size}")
        if (size - L.FIRST_AMAP_OFFSET) % L.AMAP_SPAN or size < L.FIRST_AMAP_OFFSET + L.AMAP_SPAN:
            self.problem(f"file size {size} is not 0x4400 + a whole number of AMap spans")
        if self.spans and h.amap_last != L.amap_offset(self.spans - 1):
            self.problem(f"header: ibAMapLast 0x{h.amap_last:X} is not the last AMap")
        if h.bid_next_block <= max(self.r.blocks, default=0):
            self.problem("header: bidNextB not above every block id")

    # -- B-trees ----------------------------------------------------------------------------

    def check_btree_pages(self) -> None:
        for name, pages, ptype in (("NBT", self.r.nbt_pages, L.PTYPE_NBT),
                                   ("BBT", self.r.bbt_pages, L.PTYPE_BBT)):  # fmt: skip
            for page in pages:
                self._check_btree_page(name, page, ptype)
                self._mark(page.offset, L.PAGE_SIZE, f"{name} page")
            self._check_key_order(name, pages)

    def _check_btree_page(self, name: str, page: BTreePage, ptype: int) -> None:
        where = f"{name} page at 0x{page.offset:X}"
        if page.offset % L.PAGE_SIZE:
            self.problem(f"{where}: not 512-byte aligned")
        if page.ptype != ptype or page.ptype_repeat != ptype:
            self.problem(f"{where}: page type 0x{page.ptype:02X}/0x{page.ptype_repeat:02X}")
        if page.crc != pst_crc(page.data):
            self.problem(f"{where}: CRC mismatch")
        if page.wsig != signature(page.offset, page.bid):
            self.problem(f"{where}: signature mismatch")
        if page.level > 0:
            expected_size = L.BTREE_ENTRY_SIZE
        else:
            expected_size = L.NBT_LEAF_ENTRY_SIZE if ptype == L.PTYPE_NBT else L.BTREE_ENTRY_SIZE
        if page.entry_size != expected_size:
            self.problem(f"{where}: cbEnt {page.entry_size} != {expected_size}")
        if page.entry_max != L.BTPAGE_ENTRIES_SIZE // expected_size:
            self.problem(f"{where}: cEntMax {page.entry_max}")
        if page.entry_count > page.entry_max or (page.entry_count == 0 and page.level > 0):
            self.problem(f"{where}: cEnt {page.entry_count}")

    def _check_key_order(self, name: str, pages: list[BTreePage]) -> None:
        """Keys ascend over the leaves in tree order; each index key is its child's first key."""
        previous = -1
        by_offset = {p.offset: p for p in pages}
        for page in pages:
            keys = [
                struct.unpack_from("<Q", page.data, i * page.entry_size)[0]
                for i in range(page.entry_count)
            ]
            if page.level == 0:
                for key in keys:
                    if key <= previous:
                        self.problem(f"{name}: key 0x{key:X} out of order at 0x{page.offset:X}")
                    previous = max(previous, key)
            else:
                if any(b <= a for a, b in zip(keys, keys[1:], strict=False)):
                    self.problem(f"{name} page at 0x{page.offset:X}: index keys not ascending")
                for i, key in enumerate(keys):
                    child_ib = struct.unpack_from("<Q", page.data, i * page.entry_size + 16)[0]
                    child = by_offset.get(child_ib)
                    if child is not None and child.entry_count:
                        first = struct.unpack_from("<Q", child.data, 0)[0]
                        if first != key:
                            self.problem(
                                f"{name} page at 0x{page.offset:X}: index key 0x{key:X} "
                                f"!= first key 0x{first:X} of its child"
                            )

    # -- blocks -----------------------------------------------------------------------------

    def check_blocks(self) -> None:
        for entry in sorted(self.r.blocks.values(), key=lambda e: e.ib):
            where = f"block 0x{entry.bid:X}"
            if entry.ib % L.BLOCK_ALIGN:
                self.problem(f"{where}: offset 0x{entry.ib:X} not 64-byte aligned")
            if entry.cb > L.MAX_BLOCK_DATA:
                self.problem(f"{where}: {entry.cb} bytes exceed 8176")
                continue
            size = L.block_size(entry.cb)
            if entry.ib + size > self.r.size:
                self.problem(f"{where}: extends past the end of the file")
                continue
            self._mark(entry.ib, size, where)
            block = self.r.read_block(entry.bid)
            if block.cb != entry.cb:
                self.problem(f"{where}: trailer cb {block.cb} != BBT cb {entry.cb}")
            if block.trailer_bid != entry.bid:
                self.problem(f"{where}: trailer bid 0x{block.trailer_bid:X}")
            if block.wsig != signature(entry.ib, entry.bid):
                self.problem(f"{where}: signature mismatch")
            if block.crc != pst_crc(block.data):
                self.problem(f"{where}: CRC mismatch")

    # -- nodes ------------------------------------------------------------------------------

    def check_nodes(self) -> None:
        nodes = self.r.nodes
        self_parented = [n.nid for n in nodes.values() if n.parent == n.nid]
        if len(self_parented) != 1:
            self.problem(f"{len(self_parented)} nodes are their own parent (want exactly 1)")
        for missing in (nid for nid in MANDATORY_NODES if nid not in nodes):
            self.problem(f"mandatory node 0x{missing:X} missing")
        if not any(nid_type(nid) == SEARCH_FOLDER_TYPE and node.parent == 0x122
                   for nid, node in nodes.items()):  # fmt: skip
            self.problem("no search folder below the root folder (the spam search folder)")
        for node in nodes.values():
            where = f"node 0x{node.nid:X}"
            if node.parent and node.parent not in nodes:
                self.problem(f"{where}: parent 0x{node.parent:X} not found")
            t, index = nid_type(node.nid), nid_index(node.nid)
            if index > self.h.rgnid[t]:
                self.problem(f"{where}: index above rgnid[0x{t:02X}] = 0x{self.h.rgnid[t]:X}")
            self._check_data_tree(node.bid_data, where)
            self._check_subnode_tree(node.bid_sub, where)

    def _check_data_tree(self, bid: int, where: str) -> int:
        """Mark a data tree's blocks referenced; return its byte length."""
        if bid == 0:
            return 0
        entry = self.r.blocks.get(bid)
        if entry is None:
            self.problem(f"{where}: block 0x{bid:X} not in the BBT")
            return 0
        self.referenced.add(bid)
        if not bid & 2:
            return entry.cb
        raw = self.r.block_payload(bid)
        btype, level, count, total = struct.unpack_from("<BBHI", raw, 0)
        if btype != 0x01 or level not in (1, 2):
            self.problem(f"{where}: block 0x{bid:X} is not an XBLOCK/XXBLOCK")
            return 0
        children = struct.unpack_from(f"<{count}Q", raw, 8)
        length = 0
        for child in children:
            if level == 1 and child & 2:
                self.problem(f"{where}: XBLOCK 0x{bid:X} lists internal block 0x{child:X}")
            length += self._check_data_tree(child, where)
        if length != total:
            self.problem(f"{where}: lcbTotal {total} of 0x{bid:X} != {length} bytes below it")
        return length

    def _check_subnode_tree(self, bid: int, where: str) -> None:
        if bid == 0:
            return
        if bid not in self.r.blocks:
            self.problem(f"{where}: subnode block 0x{bid:X} not in the BBT")
            return
        self.referenced.add(bid)
        raw = self.r.block_payload(bid)
        btype, level, count = struct.unpack_from("<BBH", raw, 0)
        if btype != 0x02:
            self.problem(f"{where}: block 0x{bid:X} is not an SLBLOCK/SIBLOCK")
            return
        previous = -1
        for i in range(count):
            if level == 0:
                nid, bid_data, bid_sub = struct.unpack_from("<QQQ", raw, 8 + 24 * i)
                self._check_data_tree(bid_data, f"{where}/0x{nid:X}")
                self._check_subnode_tree(bid_sub, f"{where}/0x{nid:X}")
            else:
                nid, child = struct.unpack_from("<QQ", raw, 8 + 16 * i)
                self._check_subnode_tree(child, where)
            if nid <= previous:
                self.problem(f"{where}: subnode 0x{nid:X} out of order in 0x{bid:X}")
            previous = nid

    def check_unreferenced_blocks(self) -> None:
        unreferenced = [bid for bid in self.r.blocks if bid not in self.referenced]
        if unreferenced:
            shown = ", ".join(f"0x{b:X}" for b in unreferenced[:5])
            self.problem(f"{len(unreferenced)} blocks referenced by no node ({shown}...)")

    # -- allocation maps --------------------------------------------------------------------

    def _mark(self, offset: int, size: int, what: str) -> None:
        if offset < L.FIRST_AMAP_OFFSET:
            self.problem(f"{what}: at 0x{offset:X}, before the first AMap")
            return
        span = L.amap_index_of(offset)
        if span >= self.spans or L.amap_index_of(offset + size - 1) != span:
            self.problem(f"{what}: at 0x{offset:X} crosses an AMap span or the end of file")
            return
        bits = self.bitmaps[span]
        first = (offset - L.amap_offset(span)) // L.BLOCK_ALIGN
        for slot in range(first, first + (size + L.BLOCK_ALIGN - 1) // L.BLOCK_ALIGN):
            mask = 0x80 >> (slot % 8)
            if bits[slot // 8] & mask:
                self.problem(f"{what}: at 0x{offset:X} overlaps another allocation")
                return
            bits[slot // 8] |= mask

    def check_allocation_maps(self) -> None:
        free = 0
        for span in range(self.spans):
            for ptype, offset in L.map_pages(span):
                self._mark(offset, L.PAGE_SIZE, f"map page 0x{ptype:02X}")
                page = self.r.read_page(offset)
                where = f"map page at 0x{offset:X}"
                if page.ptype != ptype or page.ptype_repeat != ptype:
                    self.problem(f"{where}: type 0x{page.ptype:02X}, expected 0x{ptype:02X}")
                if page.crc != pst_crc(page.data):
                    self.problem(f"{where}: CRC mismatch")
                if page.bid != offset:
                    self.problem(f"{where}: trailer bid 0x{page.bid:X}")
        for span in range(self.spans):
            offset = L.amap_offset(span)
            expected = bytes(self.bitmaps[span])
            actual = self.r.read_page(offset).data
            if actual != expected:
                extra = _bit_diff(actual, expected)
                missing = _bit_diff(expected, actual)
                self.problem(
                    f"AMap at 0x{offset:X}: {missing} allocated slots not marked, "
                    f"{extra} marked slots not allocated"
                )
            used = int.from_bytes(actual, "big").bit_count()
            free += (L.PAGE_DATA_SIZE * 8 - used) * L.BLOCK_ALIGN
        if self.h.amap_valid and free != self.h.amap_free:
            self.problem(f"header: cbAMapFree {self.h.amap_free} != {free} free in the AMaps")
        dlist = self.r.read_page(L.DLIST_OFFSET)
        if dlist.ptype == L.PTYPE_DLIST and dlist.crc != pst_crc(dlist.data):
            self.problem("density list page: CRC mismatch")

    # -- messaging --------------------------------------------------------------------------

    def check_folders_and_messages(self) -> None:
        nodes = self.r.nodes
        messages_by_folder: dict[int, list[NodeEntry]] = {}
        for node in nodes.values():
            if nid_type(node.nid) == NID_TYPE_NORMAL_MESSAGE:
                messages_by_folder.setdefault(node.parent, []).append(node)
        for node in nodes.values():
            if nid_type(node.nid) == NID_TYPE_NORMAL_FOLDER:
                self._check_folder(node, messages_by_folder.get(node.nid, []))
        if self.check_messages:
            for children in messages_by_folder.values():
                for message in children:
                    try:
                        self._check_message_size(message.bid_data, message.bid_sub,
                                                 f"message 0x{message.nid:X}")  # fmt: skip
                    except (PstFormatError, struct.error, KeyError, ValueError) as exc:
                        self.problem(f"message 0x{message.nid:X}: unreadable: {exc}")

    def check_heaps(self) -> None:
        """Every heap node of the NBT laid out as Outlook lays it out (messages are checked
        with their subnodes in ``_check_message_size``)."""
        for node in self.r.nodes.values():
            if node.bid_data and nid_type(node.nid) != NID_TYPE_NORMAL_MESSAGE:
                try:
                    blocks = self.r.data_blocks(node.bid_data)
                except PstFormatError:
                    continue  # reported by check_nodes
                if blocks and len(blocks[0]) >= 12 and blocks[0][2] == 0xEC:
                    self._check_heap_layout(Heap(blocks, self.r, node.bid_sub),
                                            f"node 0x{node.nid:X}")  # fmt: skip
        if 0x61 in self.r.nodes:
            names = self.r.property_context(0x61)
            for prop_tag in (P.NAMEID_STREAM_GUID, P.NAMEID_STREAM_ENTRY, P.NAMEID_STREAM_STRING):
                if not names.get(prop_tag):
                    self.problem(f"name-to-id map: stream 0x{prop_tag:08X} is empty or missing")

    def _check_heap_layout(self, heap: Heap, where: str) -> None:
        if heap.client_signature == 0xBC:
            bth = heap.user_root
        elif heap.client_signature == 0x7C:
            info = heap.get(heap.user_root)
            bth = struct.unpack_from("<I", info, 10)[0]
            row_size = struct.unpack_from("<H", info, 8)[0]
            rows_hnid = struct.unpack_from("<I", info, 14)[0]
            if rows_hnid & 0x1F and row_size:
                entry = heap.subnode_entries().get(rows_hnid)
                blocks = self.r.data_blocks(entry.bid_data) if entry else []
                if any(len(block) != L.MAX_BLOCK_DATA for block in blocks[:-1]):
                    self.problem(f"{where}: row matrix blocks not padded to 8176 bytes")
        else:
            return
        if bth != 0x20:
            self.problem(f"{where}: BTH header at HID 0x{bth:X}, not 0x20")

    def _check_no_empty_values(self, values: dict[int, object], where: str) -> None:
        for prop_tag, value in values.items():
            if prop_tag == P.ATTACH_DATA_BINARY or P.tag_type(prop_tag) in P.FIXED_SIZES:
                continue
            if isinstance(value, bytes) and not value:
                self.problem(f"{where}: property 0x{prop_tag:08X} is empty")

    def _check_folder(self, folder: NodeEntry, messages: list[NodeEntry]) -> None:
        where = f"folder 0x{folder.nid:X}"
        index = nid_index(folder.nid)
        for table_type in (0x0D, 0x0E, 0x0F):
            if (index << 5 | table_type) not in self.r.nodes:
                self.problem(f"{where}: table of type 0x{table_type:02X} missing")
        try:
            pc = self.r.property_context(folder.nid)
        except (PstFormatError, struct.error, KeyError) as exc:
            self.problem(f"{where}: unreadable property context: {exc}")
            return
        unread = 0
        if self.check_messages:
            for message in messages:
                flags = self.r.heap(message.bid_data, message.bid_sub).property_context().get(
                    P.MESSAGE_FLAGS, 0
                )
                unread += 0 if int(flags) & P.MSGFLAG_READ else 1  # type: ignore[arg-type]
            if pc.get(P.CONTENT_UNREAD_COUNT, 0) != unread:
                self.problem(f"{where}: unread count {pc.get(P.CONTENT_UNREAD_COUNT)} != {unread}")
        if pc.get(P.CONTENT_COUNT, 0) != len(messages):
            self.problem(f"{where}: content count {pc.get(P.CONTENT_COUNT)} != {len(messages)}")
        contents_nid = index << 5 | 0x0E
        if contents_nid in self.r.nodes:
            table = self.r.table_context(contents_nid)
            row_ids = sorted(row_id for row_id, _ in table.row_index)
            if row_ids != sorted(m.nid for m in messages):
                self.problem(f"{where}: contents table rows differ from its messages")
            if len(table.rows_raw) != len(table.row_index):
                self.problem(f"{where}: contents table has {len(table.rows_raw)} rows, "
                             f"{len(table.row_index)} in its index")  # fmt: skip

    def _check_message_size(self, bid_data: int, bid_sub: int, where: str) -> int:
        heap = self.r.heap(bid_data, bid_sub)
        self._check_heap_layout(heap, where)
        values = heap.property_context()
        self._check_no_empty_values(values, where)
        size = _values_size(heap, values)
        attachments = 0
        for nid, entry in heap.subnode_entries().items():
            if nid_type(nid) == 0x05:
                attachments += self._check_attachment_size(entry, f"{where}/0x{nid:X}")
            elif nid in (0x671, 0x692):
                table_heap = self.r.heap(entry.bid_data, entry.bid_sub)
                self._check_heap_layout(table_heap, f"{where}/0x{nid:X}")
                for row in table_heap.table_context().rows():
                    self._check_no_empty_values(row, f"{where}/0x{nid:X} row")
        stored = values.get(P.MESSAGE_SIZE)
        if stored != size + attachments:
            self.problem(f"{where}: PidTagMessageSize {stored} != {size + attachments}")
        return int(stored or 0)  # type: ignore[arg-type]

    def _check_attachment_size(self, entry: NodeEntry, where: str) -> int:
        heap = self.r.heap(entry.bid_data, entry.bid_sub)
        self._check_heap_layout(heap, where)
        values = heap.property_context()
        self._check_no_empty_values(values, where)
        size = _values_size(heap, values)
        embedded = values.get(P.ATTACH_DATA_OBJECT)
        if isinstance(embedded, bytes) and len(embedded) == 8:
            nid, object_size = struct.unpack("<II", embedded)
            inner = heap.subnode_entries().get(nid)
            if inner is None:
                self.problem(f"{where}: embedded message subnode 0x{nid:X} missing")
            else:
                actual = self._check_message_size(inner.bid_data, inner.bid_sub, f"{where}/msg")
                if actual != object_size:
                    self.problem(f"{where}: object size {object_size} != message size {actual}")
            size += object_size - 8  # the object counts at its size, not its 8-byte pointer
        stored = values.get(P.ATTACH_SIZE)
        if stored != size:
            self.problem(f"{where}: PidTagAttachSize {stored} != {size}")
        return int(stored or 0)  # type: ignore[arg-type]


def _values_size(heap: Heap, values: dict[int, object]) -> int:
    total = 0
    for prop_tag, value in values.items():
        fixed = P.FIXED_SIZES.get(prop_tag & 0xFFFF)
        total += fixed if fixed is not None else len(value)  # type: ignore[arg-type]
    return total


def _bit_diff(a: bytes, b: bytes) -> int:
    """Bits set in ``a`` and clear in ``b``."""
    return (int.from_bytes(a, "big") & ~int.from_bytes(b, "big")).bit_count()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m connectors.archives.pst.checker FILE.pst [FILE.pst ...]", file=sys.stderr)
        return 2
    status = 0
    for name in args:
        problems = check_pst(name)
        for problem in problems:
            print(f"{name}: {problem}")
        if problems:
            status = 1
        else:
            print(f"{name}: OK")
    return status


if __name__ == "__main__":
    sys.exit(main())

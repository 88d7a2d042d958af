"""Lists, tables and properties: BTH, property context (PC) and table context (TC) writers.

A PC is a heap whose user root is a BTH of (property id -> type + HNID); values of up to four
bytes sit in the record, larger ones in the heap, and values over 3,580 bytes in a subnode.
A TC is a heap whose user root is TCINFO: column descriptors, a BTH of row id -> row index and
the row matrix (in the heap when small, else in a subnode whose blocks each hold whole rows,
every block but the last padded to 8,176 bytes).

Heaps are laid out as Outlook lays them out, which readers built on java-libpst take for
granted: the BTH header is the first allocation (HID 0x20), then TCINFO for a table, then the
BTH leaf, the row matrix, and the values.

Invariants: BTH keys ascend (rows of a large table come in ascending row id order; a small
table's index is sorted at the end); every row is the same size; the CEB bit of a column is
set exactly when the row has a value for it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from . import layout as L
from . import props as P
from .heap import CLIENT_BTH, CLIENT_PC, CLIENT_TC, MAX_ALLOCATION, HeapWriter
from .ndb import NID_TYPE_LTP, NodeDatabaseWriter

SubnodeEntry = tuple[int, int, int]  # (nid, bid_data, bid_sub)


@dataclass(frozen=True)
class StoredValue:
    """A value already written as a subnode (streamed attachment data): its NID and size.

    ``bid_data`` is the subnode's data tree. ``inline`` holds the bytes instead when the value
    turned out small enough for the heap, in which case no subnode was written.
    """

    nid: int
    bid_data: int
    size: int
    inline: bytes | None = None


@dataclass(frozen=True)
class ObjectValue:
    """A PtypObject value: the subnode holding the object (an embedded message) and its size."""

    nid: int
    bid_data: int
    bid_sub: int
    size: int


class BTreeOnHeapWriter:
    """Streams sorted records into BTH leaf allocations; builds index levels at ``finish``.

    The BTH header is the heap's next allocation when the writer is made, and is filled in by
    ``finish``: made first, as Outlook does, it sits at HID 0x20, where java-libpst's readers
    look for it whatever the user root says. With ``records`` known and fitting one leaf, the
    leaf is allocated right after it (0x40), before any value, as in Outlook's files.
    """

    def __init__(
        self, heap: HeapWriter, key_size: int, entry_size: int, records: int | None = None
    ) -> None:
        self._heap = heap
        self._key_size = key_size
        self._entry_size = entry_size
        self._leaf_capacity = MAX_ALLOCATION // (key_size + entry_size)
        self._leaf = bytearray()
        self._leaf_count = 0
        self._index = bytearray()  # (first key, hid) of each leaf
        self._previous: int | None = None
        self._header_hid = heap.allocate(bytes(_BTH_HEADER.size))
        self._reserved_leaf: int | None = None
        if records and records <= self._leaf_capacity:
            self._reserved_leaf = heap.allocate(bytes(records * (key_size + entry_size)))
            self._leaf_capacity = records + 1  # the one leaf is written by finish()

    def add(self, key: bytes, entry: bytes) -> None:
        assert len(key) == self._key_size and len(entry) == self._entry_size
        value = int.from_bytes(key, "little")
        if self._previous is not None and value <= self._previous:
            raise ValueError("BTH keys must be added in strictly ascending order")
        self._previous = value
        if self._leaf_count == 0:
            self._index += key
        self._leaf += key
        self._leaf += entry
        self._leaf_count += 1
        if self._leaf_count == self._leaf_capacity:
            self._flush_leaf()

    def add_record(self, record: bytes) -> None:
        """``add`` for callers whose keys are known to ascend: the key and entry packed."""
        if self._leaf_count == 0:
            self._index += record[: self._key_size]
        self._leaf += record
        self._leaf_count += 1
        if self._leaf_count == self._leaf_capacity:
            self._flush_leaf()

    def _flush_leaf(self) -> None:
        self._index += struct.pack("<I", self._heap.allocate(self._leaf))
        self._leaf = bytearray()
        self._leaf_count = 0

    def finish(self) -> int:
        """Complete the BTH header and return its HID."""
        if self._reserved_leaf is not None:
            self._heap.replace(self._reserved_leaf, bytes(self._leaf))
            root = self._reserved_leaf if self._leaf_count else 0
            self._heap.replace(self._header_hid, _BTH_HEADER.pack(
                CLIENT_BTH, self._key_size, self._entry_size, 0, root))  # fmt: skip
            return self._header_hid
        if self._leaf_count:
            self._flush_leaf()
        levels = 0
        root = 0
        records = bytes(self._index)
        record_size = self._key_size + 4
        if len(records) == record_size:
            root = struct.unpack_from("<I", records, self._key_size)[0]
        while len(records) > record_size:
            levels += 1
            capacity = MAX_ALLOCATION // record_size
            chunk_size = capacity * record_size
            upper = bytearray()
            for start in range(0, len(records), chunk_size):
                chunk = records[start : start + chunk_size]
                upper += chunk[: self._key_size]
                upper += struct.pack("<I", self._heap.allocate(chunk))
            records = bytes(upper)
            if len(records) == record_size:
                root = struct.unpack_from("<I", records, self._key_size)[0]
        header = _BTH_HEADER.pack(CLIENT_BTH, self._key_size, self._entry_size, levels, root)
        self._heap.replace(self._header_hid, header)
        return self._header_hid


_BTH_HEADER = struct.Struct("<BBBBI")  # bType, cbKey, cbEnt, bIdxLevels, hidRoot


def value_size(prop_tag: int, value: object, encoded: bytes | None) -> int:
    """The size a value counts for in PidTagMessageSize / PidTagAttachSize."""
    if isinstance(value, StoredValue):
        return value.size
    if isinstance(value, ObjectValue):
        return value.size
    fixed = P.FIXED_SIZES.get(P.tag_type(prop_tag))
    if fixed is not None:
        return fixed
    assert encoded is not None
    return len(encoded)


@dataclass(frozen=True)
class NodeParts:
    """Where a PC or TC landed: its data tree, its subnode tree, and (for a PC) value bytes."""

    bid_data: int
    bid_sub: int
    value_bytes: int = 0


def write_property_context(
    ndb: NodeDatabaseWriter,
    properties: Iterable[tuple[int, object]],
    extra_subnodes: Sequence[SubnodeEntry] = (),
) -> NodeParts:
    """Write a PC holding ``properties`` (tag, value); return its data/subnode bids.

    Values go into the heap in the order given (Outlook's order where the caller knows it),
    after the BTH header and its leaf; the BTH itself is sorted by property id.
    ``extra_subnodes`` are other subnodes of the same node (recipient and attachment tables,
    attachments, embedded objects) to put in its subnode tree beside large values.
    """
    tree = ndb.data_tree()
    heap = HeapWriter(CLIENT_PC, tree)
    subnodes: list[SubnodeEntry] = list(extra_subnodes)
    properties = list(properties)
    bth = BTreeOnHeapWriter(heap, 2, 6, records=len(properties))
    fixed_sizes, encode, pack_record = P.FIXED_SIZES, P.encode_value, _PC_RECORD.pack
    total = 0
    records: list[int] = []  # id << 48 | type << 32 | HNID: sorts by property id
    for prop_tag, value in properties:
        prop_id, prop_type = prop_tag >> 16, prop_tag & 0xFFFF
        kind = type(value)
        if kind is bytes and prop_type not in fixed_sizes:  # the common case, first
            total += len(value)
            if not value:
                hnid = 0
            elif len(value) <= MAX_ALLOCATION:
                hnid = heap.allocate(value)
            else:
                hnid = _store_variable(ndb, heap, value, subnodes)
        elif kind is StoredValue:
            if value.inline is not None:
                hnid = heap.allocate(value.inline) if value.inline else 0
            else:
                subnodes.append((value.nid, value.bid_data, 0))
                hnid = value.nid
            total += value.size
        elif kind is ObjectValue:
            subnodes.append((value.nid, value.bid_data, value.bid_sub))
            hnid = heap.allocate(struct.pack("<II", value.nid, value.size))
            total += value.size
        else:
            encoded = encode(prop_tag, value)
            fixed = fixed_sizes.get(prop_type)
            if fixed is None:
                total += len(encoded)
                if not encoded:
                    hnid = 0
                elif len(encoded) <= MAX_ALLOCATION:
                    hnid = heap.allocate(encoded)
                else:
                    hnid = _store_variable(ndb, heap, encoded, subnodes)
            else:
                total += fixed
                hnid = int.from_bytes(encoded, "little") if fixed <= 4 else heap.allocate(encoded)
        records.append((prop_tag << 32) | hnid)
    records.sort()
    previous_id = -1
    for record in records:
        prop_id = record >> 48
        if prop_id == previous_id:
            raise ValueError(f"property 0x{prop_id:04X} given twice")
        previous_id = prop_id
        bth.add_record(pack_record(prop_id, (record >> 32) & 0xFFFF, record & 0xFFFFFFFF))
    heap.finish(bth.finish())
    return NodeParts(tree.finish(), ndb.write_subnode_tree(subnodes), total)


_PC_RECORD = struct.Struct("<HHI")  # BTH record of a PC: property id, then type and HNID


def _store_variable(
    ndb: NodeDatabaseWriter, heap: HeapWriter, encoded: bytes, subnodes: list[SubnodeEntry]
) -> int:
    """HNID of a variable-size value: 0 when empty, a HID when small, else a new subnode."""
    if not encoded:
        return 0
    if len(encoded) <= MAX_ALLOCATION:
        return heap.allocate(encoded)
    nid = ndb.nids.allocate(NID_TYPE_LTP)
    subnodes.append((nid, ndb.write_data(encoded), 0))
    return nid


@dataclass(frozen=True)
class _Column:
    tag: int
    offset: int
    size: int
    bit: int


@dataclass(frozen=True)
class _TableLayout:
    """Everything about a column set that does not depend on the rows (one per column set)."""

    columns: list[_Column]
    ends: tuple[int, int, int, int]
    cells: dict[int, tuple[int, int, int, int, bool]]  # tag -> offset, size, CEB byte, bit, fixed
    descriptors: bytes  # TCOLDESCs, by tag

    @property
    def row_size(self) -> int:
        return self.ends[3]


@lru_cache(maxsize=64)
def _table_layout(column_tags: tuple[int, ...]) -> _TableLayout:
    tags = [t for t in dict.fromkeys(column_tags) if t not in (P.LTP_ROW_ID, P.LTP_ROW_VERSION)]
    columns, ends = _layout_columns(tags)
    cells = {c.tag: (c.offset, c.size, ends[2] + c.bit // 8, 0x80 >> (c.bit % 8),
                     P.tag_type(c.tag) in P.FIXED_SIZES) for c in columns}  # fmt: skip
    descriptors = b"".join(
        struct.pack("<IHBB", c.tag, c.offset, c.size, c.bit)
        for c in sorted(columns, key=lambda c: c.tag)
    )
    return _TableLayout(columns, ends, cells, descriptors)


_ROW_INDEX = struct.Struct("<II")  # BTH record of a TC's row index: row id, row number


def _row_id_of(record: bytes) -> int:
    return _ROW_INDEX.unpack(record)[0]


class TableWriter:
    """Streams rows into a TC, in the row matrix in the order they are added.

    The heap is laid out as Outlook lays out its tables: the row index's BTH header (0x20),
    TCINFO (0x40) and, for a table small enough for its rows to sit in the heap, the row
    index leaf, the row matrix and then the rows' variable-size values. Such rows wait in
    memory (at most 3,580 bytes of them) until ``finish``, and may come in any row id order,
    as in Outlook's tables (the row index is sorted at the end). Past that the row matrix goes
    to a subnode, block by block, each row's values are stored as it comes, and every later
    row id must be greater than all before it.
    """

    def __init__(self, ndb: NodeDatabaseWriter, column_tags: Iterable[int]) -> None:
        self._ndb = ndb
        self._tree = ndb.data_tree()
        self._heap = HeapWriter(CLIENT_TC, self._tree)
        self._subnodes: list[SubnodeEntry] = []
        self._layout = _table_layout(tuple(column_tags))
        self._columns, self._ends = self._layout.columns, self._layout.ends
        self.row_size = self._layout.row_size
        self._index = BTreeOnHeapWriter(self._heap, 4, 4)
        self._info_hid = self._heap.allocate(self._tcinfo(0, 0))
        self._previous_row_id = -1
        self._row_ids: set[int] | None = set()  # while rows wait: the ids taken
        self._records: list[bytes] = []  # while rows wait: their row index records
        self._rows = bytearray()  # rows not yet in a block (or in the heap)
        self._waiting: list[tuple[int, bytes]] | None = []  # (offset in _rows, value) to store
        self._rows_tree = None
        self._rows_per_block = L.MAX_BLOCK_DATA // self.row_size
        self._padding = bytes(L.MAX_BLOCK_DATA - self._rows_per_block * self.row_size)
        self.row_count = 0

    def add_row(self, row_id: int, values: dict[int, object], version: int = 1) -> None:
        """Add a row; ``values`` maps column tags to values (absent or None: no value)."""
        row = bytearray(self.row_size)
        _ROW_INDEX.pack_into(row, 0, row_id, version)
        row[self._ends[2]] |= 0xC0  # row id and row version always exist
        cells, encode = self._layout.cells, P.encode_value
        waiting, base = self._waiting, len(self._rows)
        for prop_tag, value in values.items():
            cell = cells.get(prop_tag)
            if cell is None or value is None:
                continue
            offset, size, ceb_byte, ceb_bit, fixed = cell
            encoded = encode(prop_tag, value)
            if fixed:
                row[offset : offset + size] = encoded
            elif not encoded:
                pass  # HNID 0; callers leave out the values Outlook leaves out
            elif waiting is not None:
                waiting.append((base + offset, encoded))
            else:
                hnid = _store_variable(self._ndb, self._heap, encoded, self._subnodes)
                struct.pack_into("<I", row, offset, hnid)
            row[ceb_byte] |= ceb_bit
        record = _ROW_INDEX.pack(row_id, self.row_count)
        if self._row_ids is not None:
            if row_id in self._row_ids:
                raise ValueError(f"row id 0x{row_id:X} given twice")
            self._row_ids.add(row_id)
            self._records.append(record)
        elif row_id <= self._previous_row_id:
            raise ValueError("rows of a large table must come in ascending row id order")
        else:
            self._index.add_record(record)
        self._previous_row_id = max(self._previous_row_id, row_id)
        self.row_count += 1
        self._rows += row
        if self._rows_tree is None and len(self._rows) > MAX_ALLOCATION:
            self._index_waiting()
            self._store_waiting()
            self._rows_tree = self._ndb.data_tree()
        if self._rows_tree is not None:
            block_bytes = self._rows_per_block * self.row_size
            while len(self._rows) >= block_bytes:
                # Every block but the last is padded to 8,176 bytes ([MS-PST] §2.3.4.4): readers
                # find row n at block n // rows-per-block, offset (n % rows-per-block) * size.
                self._rows_tree.add_block(self._rows[:block_bytes] + self._padding)
                del self._rows[:block_bytes]

    def _index_waiting(self) -> None:
        """Put the waiting rows' records in the row index, sorted by row id."""
        self._records.sort(key=_row_id_of)
        for record in self._records:
            self._index.add_record(record)
        self._records, self._row_ids = [], None

    def _store_waiting(self) -> None:
        """Store the values of the rows held so far and put their HNIDs in the rows."""
        waiting, self._waiting = self._waiting or [], None
        for at, encoded in waiting:
            hnid = _store_variable(self._ndb, self._heap, encoded, self._subnodes)
            struct.pack_into("<I", self._rows, at, hnid)

    def finish(self) -> NodeParts:
        if self._row_ids is not None:
            self._index_waiting()
        row_index = self._index.finish()
        if self._rows_tree is not None:
            if self._rows:
                self._rows_tree.add_block(self._rows)
            nid = self._ndb.nids.allocate(NID_TYPE_LTP)
            self._subnodes.append((nid, self._rows_tree.finish(), 0))
            rows_hnid = nid
        elif self._rows:
            rows_hnid = self._heap.allocate(self._rows)
            self._store_waiting()
            self._heap.replace(rows_hnid, self._rows)
        else:
            rows_hnid = 0
        self._heap.replace(self._info_hid, self._tcinfo(row_index, rows_hnid))
        self._heap.finish(self._info_hid)
        return NodeParts(self._tree.finish(), self._ndb.write_subnode_tree(self._subnodes))

    def _tcinfo(self, row_index: int, rows_hnid: int) -> bytes:
        head = struct.pack(
            "<BB4HIII", 0x7C, len(self._columns), *self._ends, row_index, rows_hnid, 0
        )
        return head + self._layout.descriptors


def _layout_columns(tags: Sequence[int]) -> tuple[list[_Column], tuple[int, int, int, int]]:
    """Row layout as Outlook makes it: row id and row version, then the columns in the order
    given (their CEB bits in that order), their cells grouped by width: 8- and 4-byte cells in
    that order, then 2-byte, then 1-byte cells; then the CEB."""

    def cell_size(prop_tag: int) -> int:
        return P.FIXED_SIZES.get(P.tag_type(prop_tag), 4)

    bits = {prop_tag: 2 + i for i, prop_tag in enumerate(tags)}
    columns = [_Column(P.LTP_ROW_ID, 0, 4, 0), _Column(P.LTP_ROW_VERSION, 4, 4, 1)]
    offset = 8
    ends = []
    for widths in ((8, 4), (2,), (1,)):
        for prop_tag in tags:
            if cell_size(prop_tag) in widths:
                columns.append(_Column(prop_tag, offset, cell_size(prop_tag), bits[prop_tag]))
                offset += cell_size(prop_tag)
        ends.append(offset)
    end_4b, end_2b, end_1b = ends
    end_bm = end_1b + (len(columns) + 7) // 8
    return columns, (end_4b, end_2b, end_1b, end_bm)



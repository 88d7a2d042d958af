"""The node database writer: blocks, data trees, subnode trees, both B-trees, the header.

Everything is appended: a block is encoded, check-summed and written the moment it is
produced, and only its BBT entry (24 packed bytes) is kept, spilled to a temporary file.
Block ids are handed out when a block is written, so BBT entries are produced in key order
and need no sorting. NBT entries of message nodes are spilled the same way (their NIDs are
allocated in increasing order); the few other nodes are sorted in memory and merged at close.

``close`` writes the B-trees, the last map pages, the density list and, last of all, the
header with fAMapValid set: a file that was not closed keeps fAMapValid 0 and no B-tree roots.
With ``durable`` (the default) the file is fsynced before and after that header, so not even a
power cut can leave a header that promises a body the disk does not hold.
"""

from __future__ import annotations

import heapq
import struct
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from itertools import repeat
from pathlib import Path

from . import layout as L
from .allocation import SpaceAllocator
from .btree import BBT_ENTRY, NBT_ENTRY, write_btree
from .encoding import CRYPT_PERMUTE, permute_encode, pst_crc, signature
from .fileout import PositionedOutput
from .header import HeaderFields, pack_header

_BLOCK_TRAILER = struct.Struct("<HHIQ")  # cb, wSig, dwCRC, bid

# NID types ([MS-PST] §2.2.2.1) used by the messaging layer.
NID_TYPE_HID = 0x00
NID_TYPE_INTERNAL = 0x01
NID_TYPE_NORMAL_FOLDER = 0x02
NID_TYPE_SEARCH_FOLDER = 0x03
NID_TYPE_NORMAL_MESSAGE = 0x04
NID_TYPE_ATTACHMENT = 0x05
NID_TYPE_ASSOC_MESSAGE = 0x08
NID_TYPE_HIERARCHY_TABLE = 0x0D
NID_TYPE_CONTENTS_TABLE = 0x0E
NID_TYPE_ASSOC_CONTENTS_TABLE = 0x0F
NID_TYPE_LTP = 0x1F

# rgnid defaults of a new store ([MS-PST] §2.2.2.6): 0x400, except these types.
RGNID_DEFAULTS = {NID_TYPE_SEARCH_FOLDER: 0x4000, NID_TYPE_NORMAL_MESSAGE: 0x10000,
                  NID_TYPE_ASSOC_MESSAGE: 0x8000}  # fmt: skip


def make_nid(nid_type: int, index: int) -> int:
    return (index << 5) | nid_type


def nid_type(nid: int) -> int:
    return nid & 0x1F


def nid_index(nid: int) -> int:
    return nid >> 5


class NidAllocator:
    """rgnid: per NID type, the last index handed out (Outlook increments, then uses)."""

    def __init__(self) -> None:
        self.last = [RGNID_DEFAULTS.get(t, 0x400) for t in range(32)]

    def allocate(self, nid_type_: int) -> int:
        self.last[nid_type_] += 1
        if self.last[nid_type_] >= 1 << 27:
            raise OverflowError(f"NID space of type 0x{nid_type_:02X} exhausted")
        return make_nid(nid_type_, self.last[nid_type_])

    def observe(self, nid: int) -> None:
        """Account for a fixed NID (special folders, tables) so rgnid covers it."""
        t, index = nid_type(nid), nid_index(nid)
        self.last[t] = max(self.last[t], index)


class _SpillFile:
    """Fixed-size records appended to an anonymous temporary file, read back in order."""

    def __init__(self, directory: Path, record_size: int) -> None:
        self._file = tempfile.TemporaryFile(dir=directory, prefix=".pst-spill-")
        self._buffer = bytearray()
        self.record_size = record_size
        self.count = 0

    def append(self, record: bytes) -> None:
        self._buffer += record
        self.count += 1
        if len(self._buffer) >= 1 << 20:
            self._file.write(self._buffer)
            self._buffer.clear()

    def __iter__(self) -> Iterator[bytes]:
        self._file.write(self._buffer)
        self._buffer.clear()
        self._file.flush()
        self._file.seek(0)
        size = self.record_size
        while chunk := self._file.read(size * 4096):
            for at in range(0, len(chunk), size):
                yield chunk[at : at + size]

    def close(self) -> None:
        self._file.close()


class NodeDatabaseWriter:
    """Writes blocks and nodes of one PST file; ``close`` makes it a valid file."""

    def __init__(
        self, path: Path, crypt_method: int, spill_dir: Path | None = None, *, durable: bool = True
    ) -> None:
        self.path = Path(path)
        self.crypt_method = crypt_method
        self.durable = durable
        self._out = PositionedOutput(self.path)
        self._write_at = self._out.write_at
        spill = Path(spill_dir) if spill_dir else self.path.parent
        self._bbt = _SpillFile(spill, BBT_ENTRY.size)
        self._message_nodes = _SpillFile(spill, NBT_ENTRY.size)
        self._last_message_nid = 0
        self._other_nodes: list[bytes] = []
        self.nids = NidAllocator()
        self._next_block_bid = 4
        self._next_page_bid = 1
        self.allocator = SpaceAllocator(self._write_at)
        # A header marking the file as not finished (fAMapValid 0, no B-trees) until close.
        self._write_at(0, pack_header(self._header_fields(0, 0, 0, 0, 0, 0, 0, valid=False)))
        self.closed = False

    # -- file output ------------------------------------------------------------------------

    @property
    def bytes_written(self) -> int:
        """Bytes in the file so far (map pages of the current span not yet included)."""
        return self._out.eof

    @property
    def output(self) -> PositionedOutput:
        """The file output, for a reader that copies the file while it grows (see
        ``PstWriter.settled_bytes``)."""
        return self._out

    # -- blocks -----------------------------------------------------------------------------

    def write_block(self, payload: bytes | bytearray | memoryview, internal: bool = False) -> int:
        """Write one block (at most 8,176 bytes of payload); return its bid."""
        cb = len(payload)
        if cb > L.MAX_BLOCK_DATA:
            raise ValueError(f"block payload of {cb} bytes exceeds {L.MAX_BLOCK_DATA}")
        if not internal and self.crypt_method == CRYPT_PERMUTE:
            stored = permute_encode(payload)
        else:
            stored = bytes(payload)
        size = L.block_size(cb)
        ib = self.allocator.allocate(size)
        bid = self._next_block_bid | (0x2 if internal else 0)
        self._next_block_bid += 4
        trailer = _BLOCK_TRAILER.pack(cb, signature(ib, bid), pst_crc(stored), bid)
        self._write_at(ib, b"".join((stored, bytes(size - cb - L.BLOCK_TRAILER_SIZE), trailer)))
        self._bbt.append(BBT_ENTRY.pack(bid, ib, cb, 2, 0))
        return bid

    def write_full_blocks(self, data: bytes | bytearray | memoryview, bids: array) -> None:
        """Write ``data`` (a multiple of 8,176 bytes) as full external blocks, appending their
        bids to ``bids``: ``write_block`` for each, with the per-block work cut to the minimum
        (one permute and one copy for the whole run, blocks that land next to each other written
        together). Attachment data is ~90% of a mail PST, 55,000 blocks per 450 MB."""
        full = L.MAX_BLOCK_DATA
        assert len(data) % full == 0
        stored = permute_encode(data) if self.crypt_method == CRYPT_PERMUTE else data
        view = memoryview(stored)
        allocate, crc, pack_trailer = self.allocator.allocate_block, pst_crc, _BLOCK_TRAILER.pack
        pack_bbt, bbt, write_at = BBT_ENTRY.pack, self._bbt, self._write_at
        run = bytearray()
        run_at = run_end = -1
        bid = self._next_block_bid
        for at in range(0, len(view), full):
            chunk = view[at : at + full]
            ib = allocate()
            if ib != run_end:
                if run:
                    write_at(run_at, run)
                    run = bytearray()
                run_at = ib
            value = (ib ^ bid) & 0xFFFFFFFF
            run += chunk
            run += pack_trailer(full, ((value >> 16) ^ value) & 0xFFFF, crc(chunk), bid)
            run_end = ib + L.MAX_BLOCK_SIZE
            bbt.append(pack_bbt(bid, ib, full, 2, 0))
            bids.append(bid)
            bid += 4
        if run:
            write_at(run_at, run)
        self._next_block_bid = bid

    def data_tree(self) -> DataTreeWriter:
        return DataTreeWriter(self)

    def write_data(self, data: bytes | bytearray | memoryview) -> int:
        """Write a whole byte string as a node's data (block or XBLOCK tree); 0 if empty."""
        tree = DataTreeWriter(self)
        tree.write(data)
        return tree.finish()

    # -- nodes ------------------------------------------------------------------------------

    def add_node(self, nid: int, bid_data: int, bid_sub: int, parent: int) -> None:
        """Record an NBT entry. Message nodes must come in increasing NID order."""
        self.nids.observe(nid)
        entry = NBT_ENTRY.pack(nid, bid_data, bid_sub, parent, 0)
        if nid_type(nid) == NID_TYPE_NORMAL_MESSAGE and nid > self._last_message_nid:
            self._last_message_nid = nid
            self._message_nodes.append(entry)
        else:
            self._other_nodes.append(entry)

    def write_subnode_tree(self, entries: Iterable[tuple[int, int, int]]) -> int:
        """Write SLBLOCKs (and an SIBLOCK above them if needed); return the root bid or 0."""
        ordered = sorted(entries)
        if not ordered:
            return 0
        leaves: list[tuple[int, int]] = []
        for start in range(0, len(ordered), L.SLBLOCK_MAX_ENTRIES):
            chunk = ordered[start : start + L.SLBLOCK_MAX_ENTRIES]
            body = b"".join(struct.pack("<QQQ", nid, data, sub) for nid, data, sub in chunk)
            payload = struct.pack("<BBHI", 0x02, 0, len(chunk), 0) + body
            leaves.append((chunk[0][0], self.write_block(payload, internal=True)))
        if len(leaves) == 1:
            return leaves[0][1]
        if len(leaves) > L.SIBLOCK_MAX_ENTRIES:
            raise ValueError("too many subnodes for one node")
        body = b"".join(struct.pack("<QQ", nid, bid) for nid, bid in leaves)
        return self.write_block(struct.pack("<BBHI", 0x02, 1, len(leaves), 0) + body, True)

    # -- finishing --------------------------------------------------------------------------

    def projected_size(self) -> int:
        """A conservative estimate of the file size if it were closed now."""
        pages = (self._bbt.count // 19 + 2) + (
            (self._message_nodes.count + len(self._other_nodes)) // 14 + 2
        )
        return self.allocator.cursor + pages * L.PAGE_SIZE * 21 // 20 + L.AMAP_SPAN

    def _place_page(self) -> tuple[int, int]:
        offset = self.allocator.allocate(L.PAGE_SIZE, L.PAGE_SIZE)
        bid = self._next_page_bid
        self._next_page_bid += 1
        return offset, bid

    def close(self) -> None:
        if self.closed:
            return
        bbt_bid, bbt_ib = write_btree(
            L.PTYPE_BBT, self._bbt, BBT_ENTRY.size, self._place_page, self._write_at
        )
        self._other_nodes.sort(key=_nid_key)
        nodes = heapq.merge(self._other_nodes, self._message_nodes, key=_nid_key)
        nbt_bid, nbt_ib = write_btree(
            L.PTYPE_NBT, nodes, NBT_ENTRY.size, self._place_page, self._write_at
        )
        eof, amap_last, amap_free = self.allocator.finish()
        dlist_bid = self._next_page_bid
        self._next_page_bid += 1
        self._write_at(L.DLIST_OFFSET, _empty_density_list(dlist_bid))
        self._out.truncate(eof)
        if self.durable:  # everything on disk before the header that makes the file valid
            self._out.sync()
        fields = self._header_fields(eof, amap_last, amap_free, nbt_bid, nbt_ib, bbt_bid, bbt_ib)
        self._write_at(0, pack_header(fields))
        if self.durable:
            self._out.sync()
        else:
            self._out.flush()
        self._out.eof = eof
        self._release()

    def abort(self) -> None:
        """Stop without finishing: the file stays marked as unfinished."""
        if not self.closed:
            self._release(quiet=True)

    def _release(self, quiet: bool = False) -> None:
        self.closed = True
        self._out.close(quiet=quiet)
        self._bbt.close()
        self._message_nodes.close()
        self._other_nodes = []

    def _header_fields(
        self, eof: int, amap_last: int, amap_free: int, nbt_bid: int, nbt_ib: int,
        bbt_bid: int, bbt_ib: int, valid: bool = True,
    ) -> HeaderFields:  # fmt: skip
        return HeaderFields(
            bid_next_page=self._next_page_bid,
            bid_next_block=self._next_block_bid,
            unique=1,
            rgnid=array("I", self.nids.last).tobytes(),
            file_eof=eof,
            amap_last=amap_last,
            amap_free=amap_free,
            nbt=(nbt_bid, nbt_ib),
            bbt=(bbt_bid, bbt_ib),
            amap_valid=valid,
            crypt_method=self.crypt_method,
        )


def _nid_key(entry: bytes) -> int:
    return int.from_bytes(entry[:8], "little")


def _empty_density_list(bid: int) -> bytes:
    """A density list page with no entries ([MS-PST] §2.2.2.7.4), as a new Outlook store has."""
    data = bytes(L.PAGE_DATA_SIZE)
    sig = signature(L.DLIST_OFFSET, bid)
    return data + struct.pack("<BBHIQ", L.PTYPE_DLIST, L.PTYPE_DLIST, sig, pst_crc(data), bid)


class DataTreeWriter:
    """Streams bytes into full data blocks, then ties them together with XBLOCKs/XXBLOCKs.

    ``write`` packs a byte stream into 8,176-byte blocks (every block but the last is full, as
    readers that seek by offset require); ``add_block`` appends one block exactly as given,
    which heap-on-node and row-matrix streams need. Only the child bids are kept in memory.
    """

    def __init__(self, ndb: NodeDatabaseWriter) -> None:
        self._ndb = ndb
        self._bids = array("Q")
        self._sizes = array("I")
        self._pending = bytearray()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        self.size += len(view)
        if self._pending:
            take = min(len(view), L.MAX_BLOCK_DATA - len(self._pending))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) == L.MAX_BLOCK_DATA and len(view):
                self._append(self._ndb.write_block(self._pending), L.MAX_BLOCK_DATA)
                self._pending.clear()
        # Full blocks in one go, keeping the last (possibly partial) block pending.
        full = (len(view) - 1) // L.MAX_BLOCK_DATA * L.MAX_BLOCK_DATA if len(view) else 0
        if full:
            count = len(self._bids)
            self._ndb.write_full_blocks(view[:full], self._bids)
            self._sizes.extend(repeat(L.MAX_BLOCK_DATA, len(self._bids) - count))
            view = view[full:]
        if len(view):
            self._pending += view

    def add_block(self, payload: bytes | bytearray) -> int:
        """Append one pre-formed block; return its position in the tree."""
        assert not self._pending, "add_block cannot follow a partial write()"
        self.size += len(payload)
        self._append(self._ndb.write_block(payload), len(payload))
        return len(self._bids) - 1

    def reserve_block(self) -> int:
        """Keep a slot for a block written later with ``fill_block`` (heap block 0)."""
        self._append(0, 0)
        return len(self._bids) - 1

    def fill_block(self, position: int, payload: bytes | bytearray) -> None:
        self.size += len(payload)
        self._bids[position] = self._ndb.write_block(payload)
        self._sizes[position] = len(payload)

    def _append(self, bid: int, size: int) -> None:
        self._bids.append(bid)
        self._sizes.append(size)

    @property
    def block_count(self) -> int:
        return len(self._bids) + (1 if self._pending else 0)

    def finish(self) -> int:
        """Write the XBLOCK tree if needed; return the data bid (0 for no data)."""
        if self._pending:
            self._append(self._ndb.write_block(self._pending), len(self._pending))
            self._pending = bytearray()
        bids = self._bids
        assert all(bids), "a reserved block was never filled"
        if not bids:
            return 0
        if len(bids) == 1:
            return bids[0]
        if self.size >= 1 << 32:
            raise ValueError("a node's data cannot exceed 4 GiB")
        per = L.XBLOCK_MAX_ENTRIES
        if len(bids) <= per:
            return self._xblock(1, bids, self.size)
        if len(bids) > per * per:
            raise ValueError("value too large for an XXBLOCK tree")
        xblocks = array("Q")
        for start in range(0, len(bids), per):
            covered = sum(self._sizes[start : start + per])
            xblocks.append(self._xblock(1, bids[start : start + per], covered))
        return self._xblock(2, xblocks, self.size)

    def _xblock(self, level: int, bids: array, total: int) -> int:
        payload = struct.pack("<BBHI", 0x01, level, len(bids), total) + bids.tobytes()
        return self._ndb.write_block(payload, internal=True)

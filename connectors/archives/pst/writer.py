"""Public API: stream mailbox messages into one Unicode PST file, or into several of bounded size.

``PstWriter`` appends each message to the file as it is added; ``close`` writes the folder
tables, B-trees, allocation maps and finally the header. ``SplittingPstWriter`` starts a new
complete PST (with the whole folder tree) whenever the next message would push the current
one past ``split_bytes``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from connectors.model import Message

from . import layout as L
from .allocation import SpaceAllocator
from .encoding import CRYPT_NONE, CRYPT_PERMUTE
from .messages import ArchiveMetadata
from .messaging import MessageStore
from .mime import ParsedMessage, parse_message
from .ndb import NodeDatabaseWriter

_CRYPT_METHODS = {"none": CRYPT_NONE, "permute": CRYPT_PERMUTE}
# What a message adds besides its raw size: node, tables, B-tree entries (a rough upper bound),
# and what its contents-table row will take when the folder tables are written at close.
_PER_MESSAGE_OVERHEAD = 4096
_CONTENTS_ROW_ALLOWANCE = 320


def _crypt_code(crypt: str) -> int:
    try:
        return _CRYPT_METHODS[crypt]
    except KeyError:
        raise ValueError(f"crypt must be 'none' or 'permute', not {crypt!r}") from None


class PstWriter:
    """One PST file, written front to back. Not thread-safe; use as a context manager."""

    def __init__(
        self,
        path: Path,
        *,
        display_name: str = "LegacyFlo archive",
        crypt: str = "permute",
        durable: bool = True,
    ) -> None:
        """``durable=False`` skips the two fsyncs of ``close`` (about a second per 500 MB): for
        a file that is uploaded and deleted, and rebuilt from scratch after any crash."""
        self.path = Path(path)
        self._ndb = NodeDatabaseWriter(self.path, _crypt_code(crypt), durable=durable)
        self._store = MessageStore(self._ndb, display_name)
        self.message_count = 0
        self._closed = False

    def add_folder(self, path: str) -> None:
        """Create a folder (and its parents) below "Top of Outlook data file"."""
        self._check_open()
        self._store.folder(path)

    def add_message(self, msg: Message, parsed: ParsedMessage | None = None, sha256: str = "") -> int:
        """Append one message (``parsed``: ``parse_message(msg.raw)`` if the caller has it
        already; ``sha256``: the hex digest of ``msg.raw``, likewise); return roughly how many
        bytes it added to the file. Its flags, labels, internal date, source id and digest
        become its properties (``messages.metadata_properties``)."""
        self._check_open()
        before = self._ndb.bytes_written
        folder = self._store.folder(msg.folder)
        if parsed is None:
            parsed = parse_message(msg.raw)
        meta = ArchiveMetadata(tuple(msg.flags), tuple(msg.labels), msg.source_id,
                               sha256 or hashlib.sha256(msg.raw).hexdigest())
        self._store.add_message(folder, parsed, read=msg.seen, received=msg.internal_date, meta=meta)
        self.message_count += 1
        return self._ndb.bytes_written - before

    @property
    def bytes_written(self) -> int:
        return self._ndb.bytes_written

    # Space is handed out in order; what changes behind the allocation cursor is a hole being
    # filled or a span's map pages written once the span is final, never more than
    # MAX_OPEN_HOLES + 1 spans back. Then the header and the FMap pages when the file closes.
    SETTLED_LAG = (SpaceAllocator.MAX_OPEN_HOLES + 2) * L.AMAP_SPAN

    @property
    def allocated_bytes(self) -> int:
        """How far the allocator has handed out space (cheap: no I/O)."""
        return self._ndb.allocator.cursor

    def settled_bytes(self) -> int:
        """Put every write so far in the file and return how many leading bytes will most
        probably not change again (``written_at_close`` aside), for copying the file while it
        grows. "Most probably": a copier must call ``watch_rewrites`` and check ``rewrites``."""
        self._ndb.output.flush()
        return max(0, self._ndb.allocator.cursor - self.SETTLED_LAG)

    @staticmethod
    def written_at_close(start: int, end: int) -> bool:
        """Whether ``close`` writes inside ``[start, end)``: the header and density list at
        the start, and the FMap pages (they describe spans that come later)."""
        if start < L.FIRST_AMAP_OFFSET:
            return True
        for span in range(L.amap_index_of(start), L.amap_index_of(end - 1) + 1):
            if L.has_fmap(span) and start <= L.amap_offset(span) + 2 * L.PAGE_SIZE < end:
                return True
        return False

    def watch_rewrites(self, below: int) -> None:
        """From now on record every write that lands below ``below``."""
        self._ndb.output.watch_below = max(self._ndb.output.watch_below, below)

    @property
    def rewrites(self) -> list[list[int]]:
        """[start, end) ranges written below the watched offset since ``watch_rewrites``
        (what ``close`` writes included)."""
        return self._ndb.output.rewrites

    def projected_size(self, extra: int = 0) -> int:
        """A conservative guess of the closed file's size after ``extra`` more raw bytes."""
        rows = (self.message_count + 1) * _CONTENTS_ROW_ALLOWANCE
        return self._ndb.projected_size() + (extra * 11) // 10 + _PER_MESSAGE_OVERHEAD + rows

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._store.close()

    def abort(self) -> None:
        """Give up: release resources and leave the file marked unfinished."""
        if not self._closed:
            self._closed = True
            self._store.abort()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the PST writer is closed")

    def __enter__(self) -> PstWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class SplittingPstWriter:
    """Several complete PST files of at most about ``split_bytes`` each.

    The first file is ``base_path``; when a second is needed the first is renamed
    ``<stem>.part001<suffix>`` and the next ones are ``.part002`` and so on. Every part has the
    whole folder tree known when it is started, so add every folder first (as the export engine
    does from ``Source.list_folders``) for all parts to carry all of them. A single message
    larger than ``split_bytes`` gets a part of its own (which then exceeds the limit).
    """

    def __init__(
        self,
        base_path: Path,
        *,
        split_bytes: int,
        display_name: str = "LegacyFlo archive",
        crypt: str = "permute",
        durable: bool = True,
        on_part_closed: Callable[[PstWriter, Path], None] | None = None,
    ) -> None:
        """``on_part_closed(writer, path)`` is told of each part finished because the next
        one began (not of the last one, which ``close`` finishes)."""
        if split_bytes <= 0:
            raise ValueError("split_bytes must be positive")
        self.base_path = Path(base_path)
        self.split_bytes = split_bytes
        self._display_name = display_name
        self._crypt = crypt
        self._durable = durable
        self._on_part_closed = on_part_closed
        _crypt_code(crypt)
        self._folders: list[str] = []
        self._known_folders: set[str] = set()
        self._part_paths: list[Path] = [self.base_path]
        self._current = self._open(self.base_path)

    @property
    def paths(self) -> list[Path]:
        return list(self._part_paths)

    @property
    def current(self) -> PstWriter:
        """The part being written (the last of ``paths``)."""
        return self._current

    def _part_path(self, number: int) -> Path:
        return self.base_path.with_name(
            f"{self.base_path.stem}.part{number:03d}{self.base_path.suffix or '.pst'}"
        )

    def _open(self, path: Path) -> PstWriter:
        writer = PstWriter(path, display_name=self._display_name, crypt=self._crypt,
                           durable=self._durable)  # fmt: skip
        for folder in self._folders:
            writer.add_folder(folder)
        return writer

    def add_folder(self, path: str) -> None:
        if path not in self._known_folders:
            self._known_folders.add(path)
            self._folders.append(path)
        self._current.add_folder(path)

    def add_message(self, msg: Message, parsed: ParsedMessage | None = None, sha256: str = "") -> int:
        self.add_folder(msg.folder)
        current = self._current
        if current.message_count and current.projected_size(len(msg.raw)) > self.split_bytes:
            self._roll_over()
        return self._current.add_message(msg, parsed, sha256)

    def _roll_over(self) -> None:
        closed = self._current
        closed.close()
        if len(self._part_paths) == 1:
            first = self._part_path(1)
            self.base_path.replace(first)
            self._part_paths[0] = first
        if self._on_part_closed is not None:
            self._on_part_closed(closed, self._part_paths[-1])
        path = self._part_path(len(self._part_paths) + 1)
        self._part_paths.append(path)
        self._current = self._open(path)

    @property
    def bytes_written(self) -> int:
        """Bytes in all parts so far (closed parts at their final size)."""
        closed = sum(p.stat().st_size for p in self._part_paths[:-1])
        return closed + self._current.bytes_written

    def close(self) -> None:
        self._current.close()

    def abort(self) -> None:
        self._current.abort()

    def __enter__(self) -> SplittingPstWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

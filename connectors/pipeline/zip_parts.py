"""The ZIP pipeline's memory bounds: how many bytes wait between its threads, and the buffer of
one part on its way to S3.

Invariant: a part's bytes exist once while it is assembled and uploaded (chunks referenced, not
joined; a part beyond ``spill_bytes`` in a temp file), and producers wait while more than the
budget is in flight.
"""

from __future__ import annotations

import io
import tempfile
import threading
from bisect import bisect_right
from itertools import accumulate

from connectors.pipeline.ledger import EntryRecord


class Stopped(Exception):
    """A worker thread noticed the stop flag."""


class ByteBudget:
    """Blocks producers while more than ``limit`` bytes are in flight (one oversized item may
    pass alone, so a 30 MB message never deadlocks a 24 MB budget)."""

    def __init__(self, limit: int, stop: threading.Event) -> None:
        self.limit, self.used, self.peak = limit, 0, 0
        self._cond = threading.Condition()
        self._stop = stop

    def acquire(self, n: int) -> None:
        with self._cond:
            while self.used and self.used + n > self.limit:
                if self._stop.is_set():
                    raise Stopped()
                self._cond.wait(0.2)
            self.used += n
            self.peak = max(self.peak, self.used)

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class PartBuffer:
    """The bytes of one part being assembled and the records of everything in it.

    Small parts are a list of the entries' own bytes objects (no copying while assembling);
    past ``spill_bytes`` everything moves to a temp file, so a 30 MB message or a 100 MB
    central directory never sits in memory twice.
    """

    def __init__(self, number: int, spill_bytes: int, tmp_dir: str | None) -> None:
        self.number = number
        self.size = 0
        self.records: list[EntryRecord] = []
        self._chunks: list[bytes] = []
        self._file = None
        self._spill_bytes, self._tmp_dir = spill_bytes, tmp_dir

    def write(self, data: bytes) -> None:
        if self._file is None and self.size + len(data) > self._spill_bytes:
            self._file = tempfile.TemporaryFile(dir=self._tmp_dir)
            for chunk in self._chunks:
                self._file.write(chunk)
            self._chunks = []
        if self._file is not None:
            self._file.write(data)
        else:
            self._chunks.append(data)
        self.size += len(data)

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def body(self):
        """What to upload: a reader over the chunks (no joined copy), or the temp file."""
        if self._file is not None:
            self._file.flush()
            self._file.seek(0)
            return self._file
        return ChunksReader(self._chunks)

    def close(self) -> None:
        self._chunks = []
        if self._file is not None:
            self._file.close()


class ChunksReader(io.RawIOBase):
    """A seekable read-only file over a list of bytes objects, reading without copying them
    into one buffer first (an 8 MB part would otherwise exist twice while it is uploaded)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks
        self._starts = list(accumulate((len(c) for c in chunks), initial=0))
        self._size = self._starts[-1]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = min(max(0, base + offset), self._size)
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        written = 0
        while written < len(view) and self._pos < self._size:
            index = bisect_right(self._starts, self._pos) - 1
            chunk = self._chunks[index]
            start = self._pos - self._starts[index]
            n = min(len(chunk) - start, len(view) - written)
            view[written:written + n] = chunk[start:start + n]
            written += n
            self._pos += n
        return written

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        if self._pos < self._size:  # within one chunk: a slice, one copy of just what is asked
            index = bisect_right(self._starts, self._pos) - 1
            start = self._pos - self._starts[index]
            chunk = self._chunks[index]
            if start + size <= len(chunk):
                self._pos += size
                return chunk[start:start + size]
        return super().read(size)

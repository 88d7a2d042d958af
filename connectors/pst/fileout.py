"""Positioned file output: the node database's many small writes, gathered and written off-thread.

The writer produces one write per block or page: about 80,000 for a 450 MB file. Most
continue the previous one (the allocator hands out space in order), so they are gathered in
memory, and every megabyte is handed to a background thread that ``pwrite``s it: the kernel's
copy into the page cache (0.5-1 s per 450 MB) then runs on another core while the calling
thread, which holds the GIL for everything else the writer does, goes on encoding.

Order: runs are written by one thread, first in first out, and a write anywhere but the end
of the pending run (a hole being filled, a map page, the header) closes that run first; so the
file sees every write in the order it was made and a later write to the same bytes wins.
Memory: at most ``queue_runs`` runs wait for the thread (the caller blocks beyond that).
A failed write (a full disk) is raised by the next call after it.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

FLUSH_BYTES = 1 << 20
QUEUE_RUNS = 8

_STOP = object()


class PositionedOutput:
    """``write_at(offset, data)`` into one file; ``flush`` makes everything so far visible."""

    def __init__(
        self, path: Path, flush_bytes: int = FLUSH_BYTES, queue_runs: int = QUEUE_RUNS
    ) -> None:
        self._file = open(path, "w+b", buffering=0)  # noqa: SIM115 - closed in close()
        self._fd = self._file.fileno()
        self._flush_bytes = flush_bytes
        self._pending = bytearray()
        self._pending_at = 0
        self.eof = 0  # end of the furthest write so far, written or not
        self._runs: queue.Queue = queue.Queue(maxsize=queue_runs)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_runs, name="pst-write", daemon=True)
        self._thread.start()

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        pending = self._pending
        if offset != self._pending_at + len(pending):
            self._ship()
            self._pending_at = offset
            pending = self._pending
        pending += data
        end = self._pending_at + len(pending)
        if end > self.eof:
            self.eof = end
        if len(pending) >= self._flush_bytes:
            self._ship()

    def _ship(self) -> None:
        """Queue the pending run for the writing thread."""
        if self._error is not None:
            raise self._error
        if self._pending:
            self._runs.put((self._pending_at, self._pending))
            self._pending_at += len(self._pending)
            self._pending = bytearray()

    def flush(self) -> None:
        """Return once every write so far is in the file (readers of the path then see it)."""
        self._ship()
        self._runs.join()
        if self._error is not None:
            raise self._error

    def _write_runs(self) -> None:
        while True:
            item = self._runs.get()
            try:
                if item is _STOP:
                    return
                if self._error is None:
                    at, data = item
                    done = 0
                    with memoryview(data) as view:
                        while done < len(view):
                            done += os.pwrite(self._fd, view[done:], at + done)
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                self._error = exc
            finally:
                self._runs.task_done()

    def truncate(self, size: int) -> None:
        self.flush()
        self._file.truncate(size)

    def sync(self) -> None:
        self.flush()
        os.fsync(self._fd)

    def close(self, *, quiet: bool = False) -> None:
        """Write what is pending, stop the thread and close the file. A write error is raised
        unless ``quiet`` (giving up after another failure, which is the one to report)."""
        try:
            self.flush()
        except Exception:
            if not quiet:
                raise
        finally:
            self._runs.put(_STOP)
            self._thread.join()
            self._file.close()

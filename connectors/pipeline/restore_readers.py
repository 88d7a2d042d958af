"""How a restore opens its archive, per format: the one place the pipeline meets the readers.

    with open_archive("zip", client, bucket, keys, tmp_dir=...) as reader: ...

- ZIP is read where it lies (``ZipArchiveReader``: ranged GETs, the central directory first),
  over exactly the files given (every volume of every run of a series, in order).
- PST needs random access all over the file, so each volume is staged on local disk first
  (``stage_object``: streamed, never in memory) and read there; the staged files are deleted
  when the reader is closed, whatever the ending.

``keys`` are the archive's files in order (``restore_keys.resolve_archive``).

Every reader is read ahead (``ReadAhead``): a background thread produces its messages at most
``READ_AHEAD_BYTES`` in front of the restore, so the archive's GETs (or the PST's parsing) go on
while the restore waits for the target's APPENDs instead of one after the other. Order, errors
and exactly-once are the reader's own: only the producer thread uses the reader while messages
are being read, and closing the iteration stops and joins it before the reader is closed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from connectors.archives import ArchivedMessage, ArchiveFailure, ArchiveReader, Selection
from connectors.pipeline.prefetch import prefetched

READ_AHEAD_BYTES = 8 * 1024 * 1024  # messages read but not yet taken by the restore (one more if larger)


class ReadAhead(ArchiveReader):
    """``reader`` with ``messages`` read ahead in a thread (see the module docstring); any other
    attribute (``folders``...) is the reader's own."""

    def __init__(self, reader: ArchiveReader, max_bytes: int = READ_AHEAD_BYTES) -> None:
        self.reader, self.max_bytes = reader, max_bytes

    def messages(self, selection: Selection | None = None) -> Iterator[ArchivedMessage | ArchiveFailure]:
        return prefetched(self.reader.messages(selection), max_bytes=self.max_bytes,
                          size=lambda item: len(getattr(item, "raw", b"")), name="restore-read-ahead")

    def close(self) -> None:
        self.reader.close()

    def __getattr__(self, name: str):
        return getattr(self.reader, name)


@contextlib.contextmanager
def _zip(client, bucket: str, keys: Sequence[str], tmp_dir: str | None) -> Iterator[ArchiveReader]:
    from connectors.archives.zip.reader import ZipArchiveReader

    with ZipArchiveReader(client, bucket, keys[0], keys=list(keys)) as reader:
        yield ReadAhead(reader)


@contextlib.contextmanager
def _pst(client, bucket: str, keys: Sequence[str], tmp_dir: str | None) -> Iterator[ArchiveReader]:
    from connectors.archives.pst.restore import PstArchiveReader
    from connectors.storage.s3.ranged import stage_object

    staged: list[tuple[str, Path]] = []
    try:
        for key in keys:
            staged.append((key, stage_object(client, bucket, key, directory=tmp_dir)))
        with PstArchiveReader([(key, str(path)) for key, path in staged]) as reader:
            yield ReadAhead(reader)
    finally:
        for _key, path in staged:
            path.unlink(missing_ok=True)


READERS: dict[str, Callable] = {"zip": _zip, "pst": _pst}


def open_archive(format: str, client, bucket: str, keys: Sequence[str], *, tmp_dir: str | None = None):
    """A context manager giving the reader of ``format`` over ``keys``; ValueError for an unknown format."""
    try:
        opener = READERS[format]
    except KeyError:
        raise ValueError(f"no archive reader for the format {format!r}") from None
    return opener(client, bucket, keys, tmp_dir)


def opener_for(format: str, client, bucket: str, *, tmp_dir: str | None = None) -> Callable:
    """``open_reader(keys)`` as ``connectors.pipeline.restore.Restore`` takes it."""
    return lambda keys: open_archive(format, client, bucket, keys, tmp_dir=tmp_dir)

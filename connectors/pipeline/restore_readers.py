"""How a restore opens its archive, per format: the one place the pipeline meets the readers.

    with open_archive("zip", client, bucket, keys, tmp_dir=...) as reader: ...

- ZIP is read where it lies (``ZipArchiveReader``: ranged GETs, the central directory first),
  over exactly the files given (every volume of every run of a series, in order).
- PST needs random access all over the file, so each volume is staged on local disk first
  (``stage_object``: streamed, never in memory) and read there; the staged files are deleted
  when the reader is closed, whatever the ending.

``keys`` are the archive's files in order (``restore_keys.resolve_archive``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from connectors.archives import ArchiveReader


@contextlib.contextmanager
def _zip(client, bucket: str, keys: Sequence[str], tmp_dir: str | None) -> Iterator[ArchiveReader]:
    from connectors.archives.zip.reader import ZipArchiveReader

    with ZipArchiveReader(client, bucket, keys[0], keys=list(keys)) as reader:
        yield reader


@contextlib.contextmanager
def _pst(client, bucket: str, keys: Sequence[str], tmp_dir: str | None) -> Iterator[ArchiveReader]:
    from connectors.archives.pst.restore import PstArchiveReader
    from connectors.storage.s3.ranged import stage_object

    staged: list[tuple[str, Path]] = []
    try:
        for key in keys:
            staged.append((key, stage_object(client, bucket, key, directory=tmp_dir)))
        with PstArchiveReader([(key, str(path)) for key, path in staged]) as reader:
            yield reader
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

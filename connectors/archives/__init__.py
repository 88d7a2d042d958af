"""Archive formats: what a backup writes into the bucket and a restore reads back.

``zip/`` (the writer's pure pieces: headers and central directory, bytes in and bytes out;
volume budgets) and ``pst/`` (a streaming writer of Outlook PST files, its reader and checker).
Neither touches threads, S3 or the ledger: the pipelines (``connectors.pipeline``) join them.

``FORMATS`` is the registry a request type's format (``ExportSpec.format``) is looked up in.
What a format needs from the pipeline that writes it is ``ArchiveFormat.streams``:

- True (ZIP): every byte is final as soon as it is written, so the archive goes out part by
  part in order, each part holding whole entries, and a killed run resumes from the parts
  and records it committed (the central directory is rebuilt from the records);
- False (PST): the file's beginning (header, B-tree roots) is final only when the file is, so
  it is written to a local file, sent as it grows, and a killed run starts afresh.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class ArchiveFormat:
    """One archive format as the pipelines see it."""

    name: str  # "zip" | "pst": a request type's format
    extension: str  # of every file of the archive (FILE.zip, FILE.part002.zip)
    content_type: str
    streams: bool  # see the module docstring


ZIP = ArchiveFormat("zip", "zip", "application/zip", streams=True)
PST = ArchiveFormat("pst", "pst", "application/vnd.ms-outlook", streams=False)
FORMATS: dict[str, ArchiveFormat] = {f.name: f for f in (ZIP, PST)}


def archive_format(name: str) -> ArchiveFormat:
    """The registered format ``name``; ValueError for any other."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown archive format {name!r}") from None


@dataclass(frozen=True)
class ArchivedMessage:
    """A message read back from an archive, with what the archive recorded about it."""

    folder: str  # the folder path as the archive holds it ('/' between levels)
    raw: bytes  # exactly the bytes the source served
    source_id: str = ""
    internal_date: datetime | None = None
    flags: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    sha256: str = ""
    extra: dict = field(default_factory=dict)


class ArchiveReader(ABC):
    """Reads an archive in the bucket back, message by message (restore, issue 13: not built yet).

    Contract: ``messages()`` yields every message of the archive once, as (folder path, message
    bytes, metadata) in an ``ArchivedMessage``, in archive order; a split archive is read volume
    by volume. It reads with ranged GETs (a ZIP's end records and central directory first, then
    each entry's bytes; a PST's header, B-trees and blocks) and never downloads the whole file,
    so memory stays bounded by one message whatever the archive's size.
    """

    @abstractmethod
    def messages(self) -> Iterator[ArchivedMessage]:
        """Every message, once."""

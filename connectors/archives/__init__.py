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
from datetime import UTC, date, datetime


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
    """A message read back from an archive, with what the archive recorded about it.

    ``entry`` names the message within the archive, stably across reads (ZIP: ``volume key!entry
    name``; PST: the message's node id): what a restore's ledger keys on, so a rerun can tell
    which archived messages it has already put back. ``sha256`` is the digest the archive
    recorded (empty when it recorded none); a reader yields a message only when its bytes match
    it — a mismatch is an ``ArchiveFailure`` instead.
    """

    folder: str  # the folder path as the archive holds it ('/' between levels)
    raw: bytes  # exactly the bytes the source served
    source_id: str = ""
    internal_date: datetime | None = None
    flags: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    sha256: str = ""
    extra: dict = field(default_factory=dict)
    entry: str = ""  # see the class docstring
    message_id: str = ""  # the Message-ID header value as recorded (or parsed), "" when none


@dataclass(frozen=True)
class ArchiveFailure:
    """An archived message that cannot be restored (damaged entry, bytes not matching the
    recorded SHA-256, unreadable PST node): reported as failed with ``error``, never dropped.

    ``status`` is "failed", or "skipped" for an entry that is not a message at all (a foreign
    ZIP's ``.txt`` or ``.jpg``): reported with the reason so the counts reconcile.
    """

    folder: str
    entry: str
    error: str
    status: str = "failed"


@dataclass(frozen=True)
class Selection:
    """What a restore selects: the request's ``folders`` / ``exclude_folders`` (matched as
    ``connectors.folderfilter`` does) and ``since`` / ``before`` on the internal date
    (``since`` inclusive, ``before`` exclusive, as IMAP SEARCH SINCE / BEFORE)."""

    folders: tuple[str, ...] = ()
    exclude_folders: tuple[str, ...] = ()
    since: date | None = None
    before: date | None = None

    def folder_filter(self):
        from connectors.folderfilter import FolderFilter

        return FolderFilter(self.folders, self.exclude_folders)

    def accepts_date(self, when: datetime | None) -> bool:
        """A message without any date is never excluded by a date window."""
        if when is None or (self.since is None and self.before is None):
            return True
        day = (when.astimezone(UTC) if when.tzinfo else when).date()
        return (self.since is None or day >= self.since) and (self.before is None or day < self.before)


class ArchiveReader(ABC):
    """Reads an archive in the bucket back, message by message (restore, issue 13).

    Contract: ``messages(selection)`` yields every selected message of the archive once, as
    (folder path, message bytes, metadata) in an ``ArchivedMessage``, in archive order, and an
    ``ArchiveFailure`` for each selected entry that cannot be restored (so counts reconcile); a
    split archive is read volume by volume. It reads with ranged GETs (a ZIP's end records and
    central directory first, then each entry's bytes; a PST's header, B-trees and blocks) or from
    a staged local file (PST), and never holds the whole file, so memory stays bounded by one
    message whatever the archive's size. ``selection`` None selects everything.
    """

    @abstractmethod
    def messages(self, selection: Selection | None = None) -> Iterator[ArchivedMessage | ArchiveFailure]:
        """Every selected message, once (failures included)."""

    def close(self) -> None:  # noqa: B027 - optional hook (a staged PST's temp file)
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

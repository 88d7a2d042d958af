"""Destinations: mailboxes a restore writes into (issue 13). ``imap`` is the first.

A restore pipeline reads an archive (``connectors.archives.ArchiveReader``) and writes each
message into a ``Destination``; Gmail and Graph destinations may follow behind the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime

from connectors.model import SourceError


class MessageRejected(SourceError):
    """This one message cannot be stored (over the target's size limit, refused by the server
    for its content): report it as failed with ``str(exc)`` and go on with the next one.
    ``str(exc)`` is shown to the user and never holds a secret."""


class Destination(ABC):
    """A mailbox to write into. Implementations retry transient faults themselves.

    Contract:
    - ``ensure_folder(path)`` takes a folder path with '/' between levels (as archives hold
      them) and creates it, with its parents, under the destination's own separator and
      personal namespace prefix (Mithi: ``INBOX.`` and '.') — and under the destination's base
      folder when it was given one (a request's ``target_folder``); it returns the
      destination's name for it, and creating an existing folder is not an error. A level the
      target cannot hold as is (a '.' inside a name on a '.'-separated server) is mapped;
      ``mapped_folders()`` lists every such mapping for the report. A folder the target refuses
      to create raises ``connectors.model.FolderUnavailable`` (that folder's messages fail, the
      others go on).
    - ``append(folder, raw, flags, internal_date)`` stores ``raw`` byte for byte in ``folder``
      (a name ``ensure_folder`` returned) with those flags (IMAP flags and keywords; ones the
      target cannot store are dropped) and that internal (received) date, and returns the new
      message's id (an IMAP UID) or None when the destination does not report one. It raises
      ``MessageRejected`` for a message over ``size_limit()`` *before* sending anything (and
      for one the server refuses), ``FolderUnavailable`` when the folder cannot be opened, and
      never stores a message twice when it retries after a fault (it checks first).
    - ``find_existing(folder, candidates)`` names which of ``candidates`` (Message-ID, size,
      SHA-256 of the bytes) ``folder`` already holds, counting multiplicity (a candidate listed
      twice and held once is returned once), so that a retried or repeated restore appends
      nothing twice. A candidate without Message-ID is matched on its bytes (size, then SHA-256).
      A folder that does not exist yet holds nothing (no error).
    """

    @abstractmethod
    def ensure_folder(self, path: str) -> str:
        """Create ``path`` (and its parents) if needed; the destination's name for it."""

    @abstractmethod
    def append(self, folder: str, raw: bytes, flags: Iterable[str], internal_date: datetime | None) -> str | None:
        """Store one message; its id in the destination, or None."""

    @abstractmethod
    def find_existing(self, folder: str, candidates: Iterable[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
        """The (Message-ID, size, sha256) of ``candidates`` already in ``folder``, each as often as it is there."""

    def size_limit(self) -> int | None:
        """The largest message (bytes) the destination takes, when known; None otherwise."""
        return None

    def mapped_folders(self) -> dict[str, str]:
        """{archive folder path: destination name} for every folder whose name had to change."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

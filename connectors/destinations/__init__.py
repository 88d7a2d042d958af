"""Destinations: mailboxes a restore writes into (issue 13). Only the interface exists yet.

A restore pipeline reads an archive (``connectors.archives.ArchiveReader``) and writes each
message into a ``Destination``; an IMAP destination comes first, Gmail and Graph later.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime


class Destination(ABC):
    """A mailbox to write into. Implementations retry transient faults themselves.

    Contract:
    - ``ensure_folder(path)`` takes a folder path with '/' between levels (as archives hold
      them) and creates it, with its parents, under the destination's own separator and
      personal namespace prefix (Mithi: ``INBOX.`` and '.'); it returns the destination's name
      for it, and creating an existing folder is not an error.
    - ``append(folder, raw, flags, internal_date)`` stores ``raw`` byte for byte in ``folder``
      (a name ``ensure_folder`` returned) with those flags (IMAP flags and keywords) and that
      internal (received) date, and returns the new message's id (an IMAP UID) or None when the
      destination does not report one.
    - ``find_existing(folder, candidates)`` names which of ``candidates`` (Message-ID, size,
      SHA-256 of the bytes) ``folder`` already holds, counting multiplicity, so that a retried
      or repeated restore appends nothing twice.
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

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

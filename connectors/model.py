"""The contracts between sources, archive writers and the export engine.

Plain Python, no Django. A Source lists folders and serves messages as the exact bytes the
provider returned; an ArchiveWriter turns (folder, message) into ZIP or PST. The engine
(`connectors.pipeline.zip_backup`) drives them and reports every message to a Ledger, which the portal
backs with its database so that a killed job resumes with every message exactly once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime


class SourceError(Exception):
    """A source failed in a way the user can act on (bad password, unreachable host...).

    ``str(exc)`` is shown to the user, so it must be clear and must never contain a secret.
    """


class AuthenticationFailed(SourceError):
    pass


class ConnectionFailed(SourceError):
    pass


class TransientError(SourceError):
    """Worth retrying: dropped connection, server BYE, throttling, 5xx."""


class FolderUnavailable(SourceError):
    """One folder cannot be read (deleted meanwhile, no rights...); the others can.

    The export reports the folder as failed and goes on with the next one.
    """


@dataclass(frozen=True)
class Folder:
    """A folder of the source.

    ``path`` is the decoded Unicode name with ``/`` separators (``INBOX/Projekte/日本語``) and is
    what the archive and the report show. ``ref`` is the source's own handle (the raw IMAP
    name, a Graph folder id, a Gmail label id).
    """

    path: str
    ref: str
    message_count: int | None = None
    selectable: bool = True


@dataclass
class Message:
    """One message exactly as the source served it (IMAP ``BODY.PEEK[]``, Gmail ``raw``, Graph ``$value``)."""

    folder: str
    source_id: str
    raw: bytes
    internal_date: datetime | None = None
    flags: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()

    @property
    def seen(self) -> bool:
        return "\\Seen" in self.flags


@dataclass
class MessageFailure:
    """A message the source listed but could not serve after retries; it goes in the report.

    ``status`` is ``"failed"`` (the source could not serve it) or ``"skipped"`` (it was deleted
    from the source between listing and fetching): both are reported, neither silently lost.
    """

    folder: str
    source_id: str
    error: str
    extra: dict = field(default_factory=dict)
    status: str = "failed"


class Source(ABC):
    """A mailbox to read from. Implementations retry transient faults themselves."""

    @abstractmethod
    def list_folders(self) -> list[Folder]:
        """Every folder, selectable or not, parents before children."""

    @abstractmethod
    def list_message_ids(
        self, folder: Folder, *, since: date | None = None, before: date | None = None
    ) -> list[str]:
        """The ids of the folder's messages in the date window, in the order they will be fetched.

        This is the "source count at start" of the report: every id listed here ends up either
        in the archive or in the report as failed or skipped.
        """

    @abstractmethod
    def fetch_messages(self, folder: Folder, ids: Iterable[str]) -> Iterator[Message | MessageFailure]:
        """Yield one Message or MessageFailure per id, in the given order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

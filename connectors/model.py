"""What every part of the engine speaks: folders, messages, and the errors a source raises.

Plain Python, no Django. A message is the exact bytes the provider served; sources
(``connectors.sources``) produce them, archive formats (``connectors.archives``) hold them, the
pipelines (``connectors.pipeline``) carry them from one to the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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

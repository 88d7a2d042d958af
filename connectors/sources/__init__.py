"""Sources: mailboxes the engine reads from, each behind the one ``Source`` interface.

``imap/`` (any IMAP server and its provider flavours), ``gmail_api``, ``graph``; ``ratelimit``
is the quota they share across workers, ``tokens`` how they obtain OAuth access tokens.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from datetime import date

from connectors.model import Folder, Message, MessageFailure


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

    def test_connection(self, *, timeout: float | None = None) -> list[Folder]:
        """The form's "Test connection": log in once and list every folder with its message count
        where the source knows it (IMAP STATUS; the API's totals). ``timeout`` bounds each network
        wait and turns retries off, so a wrong setting is answered quickly."""
        return self.list_folders()

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

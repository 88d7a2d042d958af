"""The IMAP flavours a request type names (``RequestType.flavour``): their defaults and quirks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderPreset:
    """Connection defaults and quirks of one IMAP flavour.

    Folder names are never preset: every flavour splits them with the delimiter the server's
    LIST reports and removes the personal namespace prefix its NAMESPACE reports (Mithi's
    ``INBOX.`` and ``.`` included), so the archive shows the server's own folder tree.
    """

    label: str
    host: str
    port: int
    security: str  # "ssl" | "starttls" | "none"
    window: int = 5000  # max messages per UID SEARCH / size FETCH / body FETCH
    all_mail_only: bool = False  # Gmail: back up \All once (+ Trash, Spam), labels in a manifest
    max_message_bytes: int | None = None  # the largest message the provider accepts (restore checks first)


_35_MIB = 35 * 1024 * 1024  # Gmail's and Exchange Online's message size limit

PRESETS: dict[str, ProviderPreset] = {
    "imap": ProviderPreset("Any IMAP server", "", 993, "ssl"),
    "gmail": ProviderPreset("Gmail", "imap.gmail.com", 993, "ssl", all_mail_only=True,
                            max_message_bytes=_35_MIB),
    "o365": ProviderPreset("Microsoft 365 / Exchange Online", "outlook.office365.com", 993, "ssl",
                           max_message_bytes=_35_MIB),
    "yahoo": ProviderPreset("Yahoo Mail", "imap.mail.yahoo.com", 993, "ssl", window=1000),
    "mithi": ProviderPreset("Mithi SkyConnect / Vaultastic", "", 993, "ssl"),
}
SECURITY_CHOICES = ("ssl", "starttls", "none")

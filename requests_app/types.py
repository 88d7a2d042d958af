"""The request types registry: what each SOURCE-DESTINATION-FORMAT needs and how it runs.

One table drives the forms, the CSV columns and samples, `manage.py request_types`, and the
runner's choice of source and archive writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMMON_COLUMNS = ["request_type", "title", "folders", "exclude_folders", "since", "before", "bucket", "s3_prefix", "file_name"]
IMAP_COLUMNS = ["source_server", "source_port", "source_security", "source_user", "source_password"]


@dataclass(frozen=True)
class RequestType:
    code: str
    label: str
    source: str          # imap | gmail_api | graph
    flavour: str         # imap source flavour: imap | gmail | o365 | yahoo | mithi
    format: str          # zip | pst
    auth: tuple[str, ...] = ("password",)  # password | google_dwd | google_user | microsoft
    server: str = ""
    port: int = 993
    security: str = "ssl"
    help: str = ""
    extra_columns: tuple[str, ...] = field(default_factory=tuple)

    @property
    def columns(self) -> list[str]:
        source_cols = list(IMAP_COLUMNS) if self.source == "imap" else []
        if self.source != "imap":
            source_cols = ["source_user"]
        cols = COMMON_COLUMNS[:2] + source_cols + COMMON_COLUMNS[2:] + list(self.extra_columns)
        return cols

    @property
    def uses_password(self) -> bool:
        return "password" in self.auth

    @property
    def server_editable(self) -> bool:
        return self.flavour in ("imap", "mithi") or self.source == "imap"


_IMAP_HELP = "Any IMAP server: host, port, SSL / STARTTLS / plain, user and password."
_GMAIL_HELP = ("Gmail over IMAP with an app password. With Gmail's extensions, [Gmail]/All Mail is backed "
               "up once and every message's labels are recorded in labels.csv inside the archive.")
_O365_HELP = "Exchange Online over IMAP with the mailbox password."
_YAHOO_HELP = "Yahoo Mail with an app password (plain passwords are refused by Yahoo)."
_MITHI_HELP = "Mithi SkyConnect / Vaultastic over IMAP (INBOX. prefix, '.' separator)."

REQUEST_TYPES: dict[str, RequestType] = {t.code: t for t in [
    RequestType("IMAP-S3-ZIP", "Any IMAP server → ZIP of EML", "imap", "imap", "zip", server="", help=_IMAP_HELP),
    RequestType("IMAP-S3-PST", "Any IMAP server → Outlook PST", "imap", "imap", "pst", server="", help=_IMAP_HELP),
    RequestType("GMAIL-S3-ZIP", "Gmail (IMAP, app password) → ZIP", "imap", "gmail", "zip",
                server="imap.gmail.com", help=_GMAIL_HELP),
    RequestType("O365-S3-ZIP", "Microsoft 365 (IMAP) → ZIP", "imap", "o365", "zip",
                server="outlook.office365.com", help=_O365_HELP),
    RequestType("O365-S3-PST", "Microsoft 365 (IMAP) → PST", "imap", "o365", "pst",
                server="outlook.office365.com", help=_O365_HELP),
    RequestType("YAHOO-S3-ZIP", "Yahoo Mail (IMAP, app password) → ZIP", "imap", "yahoo", "zip",
                server="imap.mail.yahoo.com", help=_YAHOO_HELP),
    RequestType("MITHI-S3-ZIP", "Mithi SkyConnect / Vaultastic → ZIP", "imap", "mithi", "zip", server="", help=_MITHI_HELP),
]}


def available_types() -> list[RequestType]:
    """Types whose source and writer are installed in this build."""
    return [t for t in REQUEST_TYPES.values() if is_available(t)]


def is_available(rtype: RequestType) -> bool:
    if rtype.format == "pst":
        import importlib.util

        return importlib.util.find_spec("connectors.pstexport") is not None
    return True


def get_type(code: str) -> RequestType | None:
    rtype = REQUEST_TYPES.get((code or "").strip().upper())
    return rtype if rtype and is_available(rtype) else None


def sample_row(rtype: RequestType, n: int = 1) -> dict[str, str]:
    row = {
        "request_type": rtype.code, "title": f"Mailbox {n}",
        "source_server": rtype.server or "imap.example.com", "source_port": str(rtype.port),
        "source_security": rtype.security, "source_user": f"user{n}@example.com", "source_password": "app-password",
        "folders": "", "exclude_folders": "Trash;Junk", "since": "", "before": "",
        "bucket": "my-backup-bucket", "s3_prefix": "mail/2026", "file_name": f"user{n}-example-com",
    }
    return {c: row.get(c, "") for c in rtype.columns}

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
    provider: str = ""   # google | microsoft: the provider connection (providers app) this type uses

    @property
    def columns(self) -> list[str]:
        # IMAP server columns only where the operator may choose the server: OAuth tokens are only
        # ever sent to the provider's own endpoints (settings GMAIL_IMAP_HOST, MICROSOFT_IMAP_HOST).
        source_cols = list(IMAP_COLUMNS) if self.source == "imap" and self.uses_password else ["source_user"]
        if self.uses_connection:
            source_cols.append("connection")
        cols = COMMON_COLUMNS[:2] + source_cols + COMMON_COLUMNS[2:] + list(self.extra_columns)
        return cols

    @property
    def uses_connection(self) -> bool:
        return bool(self.provider)

    @property
    def uses_password(self) -> bool:
        return "password" in self.auth

    @property
    def server_editable(self) -> bool:
        return self.flavour in ("imap", "mithi") or self.source == "imap"


_IMAP_HELP = "Any IMAP server: host, port, SSL / STARTTLS / plain, user and password."
_GMAIL_HELP = ("Gmail over IMAP with an app password. With Gmail's extensions, [Gmail]/All Mail is backed "
               "up once and every message's labels are recorded in labels.csv inside the archive.")
_O365_HELP = ("Exchange Online over IMAP with the mailbox password, or with OAuth (XOAUTH2) through a Microsoft "
              "connection: the mailbox's own consent (IMAP) or app-only access after admin consent.")
_GMAILOAUTH_HELP = ("Gmail over IMAP with XOAUTH2 tokens from a Google service account's domain-wide delegation "
                    "(scope https://mail.google.com/). [Gmail]/All Mail is backed up once; labels go to labels.csv.")
_GMAILAPI_HELP = ("Gmail API (raw messages, every label in labels.csv) with the mailbox user's consent, or a service "
                  "account's domain-wide delegation (scope gmail.readonly). Quota shared by all workers.")
_M365API_HELP = ("Microsoft Graph (each message's MIME $value, the whole folder tree) with the mailbox user's "
                 "consent, or app-only access after admin consent. At most 4 requests at once per mailbox.")
_YAHOO_HELP = "Yahoo Mail with an app password (plain passwords are refused by Yahoo)."
_MITHI_HELP = ("Mithi SkyConnect / Vaultastic over IMAP. Folders are named as the server lists them (its "
               "INBOX. prefix removed, its separator, usually '.', shown as '/').")

REQUEST_TYPES: dict[str, RequestType] = {t.code: t for t in [
    RequestType("IMAP-S3-ZIP", "Any IMAP server → ZIP of EML", "imap", "imap", "zip", server="", help=_IMAP_HELP),
    RequestType("IMAP-S3-PST", "Any IMAP server → Outlook PST", "imap", "imap", "pst", server="", help=_IMAP_HELP),
    RequestType("GMAIL-S3-ZIP", "Gmail (IMAP, app password) → ZIP", "imap", "gmail", "zip",
                server="imap.gmail.com", help=_GMAIL_HELP),
    RequestType("O365-S3-ZIP", "Microsoft 365 (IMAP) → ZIP", "imap", "o365", "zip", auth=("password", "microsoft"),
                server="outlook.office365.com", help=_O365_HELP, provider="microsoft", extra_columns=("auth_method",)),
    RequestType("O365-S3-PST", "Microsoft 365 (IMAP) → PST", "imap", "o365", "pst", auth=("password", "microsoft"),
                server="outlook.office365.com", help=_O365_HELP, provider="microsoft", extra_columns=("auth_method",)),
    RequestType("GMAILOAUTH-S3-ZIP", "Gmail (IMAP, service account XOAUTH2) → ZIP", "imap", "gmail", "zip",
                auth=("google_dwd",), server="imap.gmail.com", help=_GMAILOAUTH_HELP, provider="google"),
    RequestType("GMAILOAUTH-S3-PST", "Gmail (IMAP, service account XOAUTH2) → PST", "imap", "gmail", "pst",
                auth=("google_dwd",), server="imap.gmail.com", help=_GMAILOAUTH_HELP, provider="google"),
    RequestType("GMAILAPI-S3-ZIP", "Gmail API → ZIP", "gmail_api", "gmail", "zip", auth=("google_user", "google_dwd"),
                help=_GMAILAPI_HELP, provider="google", extra_columns=("include_spam_trash",)),
    RequestType("GMAILAPI-S3-PST", "Gmail API → PST", "gmail_api", "gmail", "pst", auth=("google_user", "google_dwd"),
                help=_GMAILAPI_HELP, provider="google", extra_columns=("include_spam_trash",)),
    RequestType("M365API-S3-ZIP", "Microsoft 365 (Graph API) → ZIP", "graph", "o365", "zip", auth=("microsoft",),
                help=_M365API_HELP, provider="microsoft"),
    RequestType("M365API-S3-PST", "Microsoft 365 (Graph API) → PST", "graph", "o365", "pst", auth=("microsoft",),
                help=_M365API_HELP, provider="microsoft"),
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
        # The sample names a connection called like its provider (create it under Connections);
        # O365's sample keeps the password method, which needs none.
        "connection": "" if rtype.uses_password else rtype.provider, "auth_method": "password",
        "include_spam_trash": "no",
    }
    return {c: row.get(c, "") for c in rtype.columns}

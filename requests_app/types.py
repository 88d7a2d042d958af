"""The request types registry: what each SOURCE-DESTINATION-FORMAT needs and how it runs.

One table drives the forms, the CSV columns and samples, `manage.py request_types`, and the
runner's choice of source (its kinds, ``requests_app.kinds``) and archive format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from requests_app.kinds import KINDS, columns_of

COMMON_COLUMNS = ["request_type", "title", "folders", "exclude_folders", "since", "before", "bucket", "s3_prefix", "file_name"]
# A restore row (DESIGN.md, "Restore rows"): the archive in a source bucket, then the mailbox written
# into. The ``target_*`` columns are stored in the request's ``source_*`` fields ("the mailbox side").
RESTORE_COLUMNS = ["request_type", "title", "bucket", "archive_key", "target_server", "target_port",
                   "target_security", "target_user", "target_password", "target_folder", "folders",
                   "exclude_folders", "since", "before"]
TARGET_TO_SOURCE = {"target_server": "source_server", "target_port": "source_port",
                    "target_security": "source_security", "target_user": "source_user",
                    "target_password": "source_password"}
BACKUP, RESTORE = "backup", "restore"
# Optional on every row, after the type's own columns.
NOTIFY_COLUMNS = ["notify"]


@dataclass(frozen=True)
class RequestType:
    code: str
    label: str
    source: str          # imap | gmail_api | graph
    flavour: str         # imap source flavour: imap | gmail | o365 | yahoo | mithi
    format: str          # zip | pst
    kinds: tuple[str, ...] = ("imap_password",)  # its source kinds (requests_app.kinds), the default first
    server: str = ""
    port: int = 993
    security: str = "ssl"
    help: str = ""
    extra_columns: tuple[str, ...] = field(default_factory=tuple)
    direction: str = BACKUP  # backup: mailbox → archive; restore: archive → mailbox

    @property
    def is_restore(self) -> bool:
        return self.direction == RESTORE

    @property
    def columns(self) -> list[str]:
        if self.is_restore:
            return list(RESTORE_COLUMNS) + NOTIFY_COLUMNS
        # IMAP server columns only where the operator may choose the server: OAuth tokens are only
        # ever sent to the provider's own endpoints (settings GMAIL_IMAP_HOST, MICROSOFT_IMAP_HOST).
        return (COMMON_COLUMNS[:2] + columns_of(self.kinds) + COMMON_COLUMNS[2:] + list(self.extra_columns)
                + (["incremental"] if self.is_backup else []) + NOTIFY_COLUMNS)

    @property
    def is_backup(self) -> bool:
        """A mailbox backed up into the bucket (these may run as an incremental series)."""
        return self.source in ("imap", "gmail_api", "graph")

    @property
    def provider(self) -> str:
        """google | microsoft: the provider connection (providers app) this type can use, or ""."""
        return next((KINDS[k].provider for k in self.kinds if KINDS[k].provider), "")

    @property
    def uses_connection(self) -> bool:
        return bool(self.provider)

    @property
    def uses_password(self) -> bool:
        return "imap_password" in self.kinds


_IMAP_HELP = "Any IMAP server: host, port, SSL / STARTTLS / plain, user and password."
_GMAIL_HELP = ("Gmail over IMAP with an app password. With Gmail's extensions, [Gmail]/All Mail is backed "
               "up once and every message's labels are recorded in labels.csv inside the archive.")
_O365_HELP = ("Exchange Online over IMAP with the mailbox password, or with OAuth (XOAUTH2) through a Microsoft "
              "connection: the mailbox's own consent (IMAP) or app-only access after admin consent.")
_GMAILOAUTH_HELP = ("Gmail over IMAP with XOAUTH2 tokens from a Google service account's domain-wide delegation "
                    "(scope https://mail.google.com/). [Gmail]/All Mail is backed up once; labels go to labels.csv "
                    "and index.csv (ZIP) or become Outlook categories (PST).")
_GMAILAPI_HELP = ("Gmail API (raw messages; every label in labels.csv and index.csv, or as Outlook categories in "
                  "a PST) with the mailbox user's consent, or a service account's domain-wide delegation "
                  "(scope gmail.readonly). Quota shared by all workers.")
_M365API_HELP = ("Microsoft Graph (each message's MIME $value, the whole folder tree) with the mailbox user's "
                 "consent, or app-only access after admin consent. At most 4 requests at once per mailbox.")
_YAHOO_HELP = "Yahoo Mail with an app password (plain passwords are refused by Yahoo)."
_MITHI_HELP = ("Mithi SkyConnect / Vaultastic over IMAP. Folders are named as the server lists them (its "
               "INBOX. prefix removed, its separator, usually '.', shown as '/').")

_RESTORE_HELP = ("Puts an archive of a bucket registered as source (or both) back into any IMAP mailbox: folders "
                 "created with the server's separator and prefix, each message appended with its flags and "
                 "date, exactly once (a retry or a second restore adds nothing twice).")
_RESTORE_PST_HELP = ("Puts an Outlook PST of a bucket registered as source (or both) back into any IMAP mailbox: "
                     "each message rebuilt as MIME, with its read and flag state, exactly once.")
_RESTORE_MITHI_HELP = ("Puts an archive back into Mithi SkyConnect / Vaultastic (folders under INBOX., '.' "
                       "between levels), exactly once: the way users retrieve their data.")

REQUEST_TYPES: dict[str, RequestType] = {t.code: t for t in [
    RequestType("IMAP-S3-ZIP", "Any IMAP server → ZIP of EML", "imap", "imap", "zip", server="", help=_IMAP_HELP),
    RequestType("IMAP-S3-PST", "Any IMAP server → Outlook PST", "imap", "imap", "pst", server="", help=_IMAP_HELP),
    RequestType("GMAIL-S3-ZIP", "Gmail (IMAP, app password) → ZIP", "imap", "gmail", "zip",
                server="imap.gmail.com", help=_GMAIL_HELP),
    RequestType("O365-S3-ZIP", "Microsoft 365 (IMAP) → ZIP", "imap", "o365", "zip", kinds=("imap_password", "imap_microsoft_oauth"),
                server="outlook.office365.com", help=_O365_HELP, extra_columns=("auth_method",)),
    RequestType("O365-S3-PST", "Microsoft 365 (IMAP) → PST", "imap", "o365", "pst", kinds=("imap_password", "imap_microsoft_oauth"),
                server="outlook.office365.com", help=_O365_HELP, extra_columns=("auth_method",)),
    RequestType("GMAILOAUTH-S3-ZIP", "Gmail (IMAP, service account XOAUTH2) → ZIP", "imap", "gmail", "zip",
                kinds=("imap_google_oauth",), server="imap.gmail.com", help=_GMAILOAUTH_HELP),
    RequestType("GMAILOAUTH-S3-PST", "Gmail (IMAP, service account XOAUTH2) → PST", "imap", "gmail", "pst",
                kinds=("imap_google_oauth",), server="imap.gmail.com", help=_GMAILOAUTH_HELP),
    RequestType("GMAILAPI-S3-ZIP", "Gmail API → ZIP", "gmail_api", "gmail", "zip", kinds=("gmail_api",),
                help=_GMAILAPI_HELP, extra_columns=("include_spam_trash",)),
    RequestType("GMAILAPI-S3-PST", "Gmail API → PST", "gmail_api", "gmail", "pst", kinds=("gmail_api",),
                help=_GMAILAPI_HELP, extra_columns=("include_spam_trash",)),
    RequestType("M365API-S3-ZIP", "Microsoft 365 (Graph API) → ZIP", "graph", "o365", "zip", kinds=("graph",),
                help=_M365API_HELP),
    RequestType("M365API-S3-PST", "Microsoft 365 (Graph API) → PST", "graph", "o365", "pst", kinds=("graph",),
                help=_M365API_HELP),
    RequestType("YAHOO-S3-ZIP", "Yahoo Mail (IMAP, app password) → ZIP", "imap", "yahoo", "zip",
                server="imap.mail.yahoo.com", help=_YAHOO_HELP),
    RequestType("MITHI-S3-ZIP", "Mithi SkyConnect / Vaultastic → ZIP", "imap", "mithi", "zip", server="", help=_MITHI_HELP),
    RequestType("S3-IMAP-ZIP", "ZIP archive → any IMAP mailbox", "imap", "imap", "zip", server="",
                help=_RESTORE_HELP, direction=RESTORE),
    RequestType("S3-IMAP-PST", "Outlook PST → any IMAP mailbox", "imap", "imap", "pst", server="",
                help=_RESTORE_PST_HELP, direction=RESTORE),
    RequestType("S3-MITHI-ZIP", "ZIP archive → Mithi SkyConnect / Vaultastic", "imap", "mithi", "zip", server="",
                help=_RESTORE_MITHI_HELP, direction=RESTORE),
]}


def restore_type_for(backup: RequestType | None) -> RequestType | None:
    """The restore type that reads what ``backup`` wrote back into an IMAP mailbox (the "Restore…"
    action of a completed backup): a PST archive → S3-IMAP-PST; Mithi's own ZIP → S3-MITHI-ZIP."""
    if backup is None or backup.is_restore:
        return None
    if backup.format == "pst":
        return REQUEST_TYPES["S3-IMAP-PST"]
    return REQUEST_TYPES["S3-MITHI-ZIP" if backup.flavour == "mithi" else "S3-IMAP-ZIP"]


def available_types() -> list[RequestType]:
    return list(REQUEST_TYPES.values())


def get_type(code: str) -> RequestType | None:
    return REQUEST_TYPES.get((code or "").strip().upper())


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
        "include_spam_trash": "no", "incremental": "no",
        # restore rows
        "archive_key": f"mail/2026/user{n}-example-com.{rtype.format}", "target_server": "imap.example.com",
        "target_port": "993", "target_security": "ssl", "target_user": f"user{n}@example.com",
        "target_password": "mailbox-password", "target_folder": "",
    }
    if rtype.is_restore:
        row.update(bucket="my-source-bucket", exclude_folders="")
    return {c: row.get(c, "") for c in rtype.columns}

"""Clone a request ("Run again"): the form filled in with its settings, never its password.

The stored password is reused only for the same mailbox on the same endpoint: when the server,
port, security and user the form submits are those of the original request (after the form's own
cleaning). Any change there means another account or server, so the password must be typed
again — otherwise a clone could carry one mailbox's password to a server of the user's choosing.
"""

from __future__ import annotations

from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from requests_app.models import MigrationRequest

ENDPOINT_FIELDS = ("source_server", "source_port", "source_security", "source_user")


def clone_initial(req: MigrationRequest) -> dict:
    """The form's initial values: the original's settings, a new file name (the original's
    destination stays held by it), no password."""
    options = req.options or {}
    initial = {
        "title": req.title, "source_server": req.source_server, "source_port": req.source_port,
        "source_security": req.source_security, "source_user": req.source_user,
        "folders": "; ".join(req.folders or []), "exclude_folders": "; ".join(req.exclude_folders or []),
        "since": req.since, "before": req.before, "bucket": str(req.bucket.uuid), "s3_prefix": req.s3_prefix,
        "file_name": f"{req.file_name}-{timezone.localtime():%Y%m%d-%H%M}",
    }
    if options.get("connection"):
        initial["connection"] = options["connection"]
    if "include_spam_trash" in options:
        initial["include_spam_trash"] = "yes" if options["include_spam_trash"] else "no"
    if options.get("auth_method"):
        initial["auth_method"] = options["auth_method"]
    return initial


def same_endpoint(cleaned: dict, original: MigrationRequest) -> bool:
    """Whether the submitted mailbox is the original's: same server, port, security and user."""
    return all(str(cleaned.get(f) or "").strip().lower() == str(getattr(original, f) or "").strip().lower()
               for f in ENDPOINT_FIELDS)


@sensitive_variables()
def with_stored_password(data, original: MigrationRequest | None):
    """``data`` (a POST) with the original's password when the form left it empty; the caller
    must then check ``same_endpoint`` on the cleaned data before using it."""
    if original is None or data.get("source_password") or not original.source_password:
        return data
    data = data.copy()
    data["source_password"] = original.source_password
    return data

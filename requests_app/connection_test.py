"""The form's "Test connection": log in to the source once and list its folders with message counts.

One attempt with short timeouts (``TIMEOUT`` per network wait): the button is a question the
user waits on, so a wrong port or security setting must be answered in seconds, not after the
worker's reconnect rounds. Folders to include that the source does not have are named here, with
the folders it does have, before anything is submitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.views.decorators.debug import sensitive_variables

from connectors.folderfilter import FolderNotFound, check_includes
from connectors.model import Folder, SourceError
from requests_app.types import RequestType

TIMEOUT = 8.0  # seconds per network wait; with the TLS/plain probe the answer comes within 15 s


@dataclass
class ConnectionResult:
    ok: bool
    error: str = ""
    folders: list[Folder] = field(default_factory=list)


@sensitive_variables()
def test_connection(rtype: RequestType, data: dict, *, tenant) -> ConnectionResult:
    from requests_app.kinds import source_from_form

    try:
        with source_from_form(rtype, data, tenant=tenant) as source:
            folders = source.test_connection(timeout=TIMEOUT)
    except SourceError as exc:
        return ConnectionResult(ok=False, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - shown to the user; never includes credentials
        return ConnectionResult(ok=False, error=f"The connection failed unexpectedly ({exc.__class__.__name__}).")
    try:
        check_includes(data.get("folders") or [], [f.path for f in folders])
    except FolderNotFound as exc:
        return ConnectionResult(ok=False, error=str(exc), folders=folders)
    return ConnectionResult(ok=True, folders=folders)


test_connection.__test__ = False  # not a pytest test despite the name

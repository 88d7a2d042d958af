"""The form's "Test connection": log in to the source and list its folders with message counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.views.decorators.debug import sensitive_variables

from connectors.model import Folder, SourceError
from requests_app.types import RequestType


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
            return ConnectionResult(ok=True, folders=source.list_folders())
    except SourceError as exc:
        return ConnectionResult(ok=False, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - shown to the user; never includes credentials
        return ConnectionResult(ok=False, error=f"The connection failed unexpectedly ({exc.__class__.__name__}).")


test_connection.__test__ = False  # not a pytest test despite the name

"""Build the connector Source for a request type from a request row or form data."""

from __future__ import annotations

from django.conf import settings

from connectors.base import Source
from requests_app.types import RequestType


def imap_source(rtype: RequestType, *, server: str, port: int | None, security: str, user: str,
                password: str, allow_private: bool, oauth2_token=None) -> Source:
    from connectors.imap import ImapSource

    return ImapSource(
        host=server or rtype.server, port=port or rtype.port, security=security or rtype.security,
        username=user, password=password, oauth2_token=oauth2_token, flavour=rtype.flavour,
        allow_private=allow_private, ca_file=settings.LEGACYFLO_IMAP_CA_FILE or None,
    )


def build_source(rtype: RequestType, data: dict, *, tenant, allow_private: bool) -> Source:
    """From form data (the "Test connection" button)."""
    if rtype.source == "imap":
        return imap_source(rtype, server=data.get("source_server", ""), port=data.get("source_port"),
                           security=data.get("source_security", ""), user=data.get("source_user", ""),
                           password=data.get("source_password", ""), allow_private=allow_private)
    raise NotImplementedError(f"{rtype.code} has no source builder")


def source_for_request(req, rtype: RequestType) -> Source:
    """From a stored request (the worker)."""
    allow_private = settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS
    if rtype.source == "imap":
        return imap_source(rtype, server=req.source_server, port=req.source_port, security=req.source_security,
                           user=req.source_user, password=req.source_password, allow_private=allow_private)
    raise NotImplementedError(f"{rtype.code} has no source builder")

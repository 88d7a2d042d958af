"""The registry of source kinds: how a request chooses its credential and builds its Source.

A request type (``types.RequestType``) lists the kinds it accepts, the first being its default;
a request whose authentication method is ``oauth`` uses the first kind that goes through a
provider connection. The kind then answers every question about authenticating, for each of
its users: the form (which columns and credential a mailbox needs, where an OAuth token may
go), the CSV import (the same form and columns), Test connection and the worker (the Source).

Invariants: a token is only ever sent to the provider's own endpoint (settings
``GMAIL_IMAP_HOST``, ``MICROSOFT_IMAP_HOST``, the API URLs), never to a server the user typed;
the credential a request uses (``options["credential"]``) is decided once, by the form through
``SourceKind.credential``, and only read by ``SourceKind.build``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from connectors.model import AuthenticationFailed, Folder, SourceError
from connectors.sources import Source


class RequestType(Protocol):
    """What a kind reads of a request type (``types.RequestType``, which is built from the kinds)."""

    kinds: tuple[str, ...]
    server: str
    port: int
    security: str
    flavour: str  # the IMAP flavour (connectors.sources.imap.presets)

IMAP_COLUMNS = ("source_server", "source_port", "source_security", "source_user", "source_password")
CONNECTION_COLUMNS = ("source_user", "connection")


@dataclass(frozen=True)
class SourceParams:
    """What a kind needs to build a Source: from a stored request (the worker) or from form data
    (Test connection). Error reports hide the password (``repr`` leaves it out)."""

    tenant: object
    user: str
    server: str = ""
    port: int | None = None
    security: str = ""
    password: str = field(default="", repr=False)
    options: Mapping = field(default_factory=dict)
    folders: Sequence[str] = ()
    exclude: Sequence[str] = ()

    @classmethod
    def of_request(cls, req) -> SourceParams:
        return cls(tenant=req.tenant, user=req.source_user, server=req.source_server, port=req.source_port,
                   security=req.source_security, password=req.source_password, options=req.options or {},
                   folders=req.folders, exclude=req.exclude_folders)

    @classmethod
    def of_form(cls, data: Mapping, *, tenant) -> SourceParams:
        return cls(tenant=tenant, user=data.get("source_user", ""), server=data.get("source_server", ""),
                   port=data.get("source_port"), security=data.get("source_security", ""),
                   password=data.get("source_password", ""), options=data.get("options") or {},
                   folders=data.get("folders") or [], exclude=data.get("exclude_folders") or [])


class NoCredential(Exception):
    """The mailbox has no usable credential of this kind; ``message`` belongs to form field ``field``."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field_name, message


class UnavailableSource(Source):
    """Stands in when the credentials cannot be assembled (connection removed, consent revoked...):
    the engine gets the reason as a SourceError and reports it like any login failure."""

    def __init__(self, error: SourceError):
        self.error = error

    def list_folders(self) -> list[Folder]:
        raise self.error

    def list_message_ids(self, folder, *, since=None, before=None) -> list[str]:
        raise self.error

    def fetch_messages(self, folder, ids):
        raise self.error


Consent = Callable[..., object]  # consent(scope=None) -> the mailbox's usable authorization, or None


class SourceKind:
    """One way of reaching a mailbox. Subclasses set the class attributes and ``build``."""

    name: str = ""
    columns: tuple[str, ...] = ()  # the CSV columns (form fields) of the source
    provider: str = ""  # the provider connection it goes through ("" = none)

    @property
    def uses_connection(self) -> bool:
        return bool(self.provider)

    def endpoint(self) -> tuple[str, int, str] | None:
        """The provider's own IMAP host, port and security, where the form points the request."""
        return None

    def server_problem(self, rtype: RequestType, server: str) -> str:
        """Why a server the user typed cannot be used with this kind, or ""."""
        return ""

    def credential(self, connection, user: str, consent: Consent) -> str:
        """The credential the worker will use for ``user`` (stored in ``options["credential"]``);
        raises NoCredential when there is none."""
        raise NotImplementedError

    def build(self, rtype: RequestType, params: SourceParams) -> Source:
        raise NotImplementedError


# Error reports hide every local of these (and of what they call): they handle credentials.
@sensitive_variables()
def imap_source(rtype: RequestType, *, server: str, port: int | None, security: str, user: str,
                password: str, oauth2_token=None) -> Source:
    from connectors.sources.imap.client import ImapSource

    return ImapSource(
        host=server or rtype.server, port=port or rtype.port, security=security or rtype.security,
        username=user, password=password, oauth2_token=oauth2_token, flavour=rtype.flavour,
        allow_private=settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS, ca_file=settings.LEGACYFLO_IMAP_CA_FILE or None,
    )


class ImapPassword(SourceKind):
    """Any IMAP server the user names, with the mailbox's password."""

    name, columns = "imap_password", IMAP_COLUMNS

    @sensitive_variables()
    def build(self, rtype: RequestType, params: SourceParams) -> Source:
        return imap_source(rtype, server=params.server, port=params.port, security=params.security,
                           user=params.user, password=params.password)


class ConnectionKind(SourceKind):
    """A kind that authenticates through the tenant's provider connection (the ``providers`` app).

    The connection is looked up within the request's tenant. Microsoft rotates refresh tokens:
    every new one is stored on the mailbox's authorization as soon as it arrives.
    """

    columns = CONNECTION_COLUMNS

    @sensitive_variables()
    def build(self, rtype: RequestType, params: SourceParams) -> Source:
        from providers.selectors import authorization_for, connection_by_ref

        connection = connection_by_ref(params.tenant, params.options.get("connection", ""), self.provider)
        if connection is None:
            return UnavailableSource(AuthenticationFailed(
                "The provider connection of this request was removed; register it again under Connections."))
        user = params.user

        def consent(scope: str | None = None):
            found = authorization_for(connection, user, scope=scope)
            if found is None:
                raise AuthenticationFailed(f"{user} no longer has a valid consent through {connection.name} "
                                           "(revoked?): connect the mailbox again on the connection's page, then retry.")
            return found

        try:
            return self.source(rtype, params, connection, consent)
        except SourceError as exc:
            return UnavailableSource(exc)

    def source(self, rtype: RequestType, params: SourceParams, connection, consent) -> Source:
        raise NotImplementedError


def _store_rotated(authorization_id: int):
    from providers import services

    return lambda token: services.authorization_store_refresh_token(authorization_id=authorization_id,
                                                                     refresh_token=token)


def _microsoft_credential(connection, user: str, consent: Consent, scope: str, what: str) -> str:
    if consent(scope=scope):
        return "delegated"
    if connection.supports_app_only:
        return "app_only"
    raise NoCredential("source_user", f"{user} has not consented ({what}) through {connection.name}, and the "
                                      "connection has no directory or admin consent for app-only access.")


class GmailApi(ConnectionKind):
    """The Gmail API with the user's consent, else the service account's domain-wide delegation."""

    name, provider = "gmail_api", "google"

    def credential(self, connection, user: str, consent: Consent) -> str:
        if consent():
            return "user"
        if connection.has_service_account:
            return "service_account"
        raise NoCredential("source_user", f"{user} has not consented through {connection.name}, which has no "
                                          "service account: connect the mailbox on the connection's page.")

    @sensitive_variables()
    def source(self, rtype, params, connection, consent) -> Source:
        from connectors.sources import tokens
        from connectors.sources.gmail_api import GmailApiSource
        from connectors.sources.ratelimit import RedisQuota, gmail_quota_key
        from providers import credentials

        if params.options.get("credential", "") == "user":
            google_credentials = credentials.google_user(connection, consent())
        else:
            google_credentials = credentials.google_service_account(
                connection, subject=params.user, scopes=[tokens.GMAIL_READONLY_SCOPE])
        return GmailApiSource(google_credentials, api_url=settings.GMAIL_API_URL,
                              include_spam_trash=bool(params.options.get("include_spam_trash")),
                              quota=RedisQuota(settings.REDIS_URL, gmail_quota_key(params.user)))


class Graph(ConnectionKind):
    """Microsoft Graph with the user's delegated consent, else app-only access."""

    name, provider = "graph", "microsoft"

    def credential(self, connection, user: str, consent: Consent) -> str:
        from providers import credentials

        return _microsoft_credential(connection, user, consent, credentials.GRAPH_READ_SCOPE, "Graph")

    @sensitive_variables()
    def source(self, rtype, params, connection, consent) -> Source:
        from connectors.sources import tokens
        from connectors.sources.graph import GraphSource
        from connectors.sources.ratelimit import RedisQuota, graph_quota_key
        from providers import credentials

        if params.options.get("credential", "") == "delegated":
            authorization = consent(credentials.GRAPH_READ_SCOPE)
            provider = credentials.microsoft_delegated(connection, authorization, scopes=tokens.GRAPH_MAIL_SCOPES,
                                                       on_refresh_token=_store_rotated(authorization.pk))
            mailbox = None  # /me: the signed-in mailbox
        else:
            provider = credentials.microsoft_app_only(connection, scopes=[tokens.GRAPH_DEFAULT_SCOPE])
            mailbox = params.user
        return GraphSource(provider, mailbox=mailbox, graph_url=settings.MICROSOFT_GRAPH_URL,
                           ca_bundle=credentials.ca_bundle(), include=params.folders, exclude=params.exclude,
                           quota=RedisQuota(settings.REDIS_URL, graph_quota_key(connection.client_id, params.user),
                                            limit=10_000, window=600, burst=50))


class GoogleImap(ConnectionKind):
    """Gmail over IMAP with XOAUTH2 tokens of the service account's domain-wide delegation (GMAILOAUTH)."""

    name, provider = "imap_google_oauth", "google"

    def endpoint(self) -> tuple[str, int, str]:
        return settings.GMAIL_IMAP_HOST, settings.GMAIL_IMAP_PORT, "ssl"

    def credential(self, connection, user: str, consent: Consent) -> str:
        if not connection.has_service_account:
            raise NoCredential("connection", f"{connection.name} has no service account (GMAILOAUTH needs "
                                             "domain-wide delegation).")
        return "service_account"

    @sensitive_variables()
    def source(self, rtype, params, connection, consent) -> Source:
        from connectors.sources import tokens
        from providers import credentials

        service_account = credentials.google_service_account(connection, subject=params.user,
                                                             scopes=[tokens.GMAIL_IMAP_SCOPE])
        session = credentials.http_session()
        host, port, security = self.endpoint()
        return imap_source(rtype, server=host, port=port, security=security, user=params.user, password="",
                           oauth2_token=lambda: tokens.google_access_token(service_account, session=session))


class MicrosoftImap(ConnectionKind):
    """Exchange Online over IMAP with XOAUTH2: the user's delegated consent, else app-only access."""

    name, provider = "imap_microsoft_oauth", "microsoft"

    def endpoint(self) -> tuple[str, int, str]:
        return settings.MICROSOFT_IMAP_HOST, settings.MICROSOFT_IMAP_PORT, "ssl"

    def server_problem(self, rtype: RequestType, server: str) -> str:
        if server and server not in (rtype.server, settings.MICROSOFT_IMAP_HOST.lower()):
            return ("With OAuth the server is always Exchange Online "
                    f"({settings.MICROSOFT_IMAP_HOST}): tokens go nowhere else.")
        return ""

    def credential(self, connection, user: str, consent: Consent) -> str:
        from providers import credentials

        return _microsoft_credential(connection, user, consent, credentials.OUTLOOK_IMAP_SCOPE, "IMAP")

    @sensitive_variables()
    def source(self, rtype, params, connection, consent) -> Source:
        from connectors.sources import tokens
        from providers import credentials

        if params.options.get("credential", "") == "delegated":
            authorization = consent(credentials.OUTLOOK_IMAP_SCOPE)
            provider = credentials.microsoft_delegated(connection, authorization,
                                                       scopes=[tokens.OUTLOOK_IMAP_DELEGATED_SCOPE],
                                                       on_refresh_token=_store_rotated(authorization.pk))
        else:
            provider = credentials.microsoft_app_only(connection, scopes=[tokens.OUTLOOK_IMAP_APP_SCOPE])
        host, port, security = self.endpoint()
        return imap_source(rtype, server=host, port=port, security=security, user=params.user, password="",
                           oauth2_token=provider)


KINDS: dict[str, SourceKind] = {k.name: k for k in (ImapPassword(), GmailApi(), Graph(), GoogleImap(), MicrosoftImap())}


def kind_for(rtype: RequestType, auth_method: str = "") -> SourceKind:
    """The kind a request of ``rtype`` uses: the type's first, or with ``auth_method`` "oauth" the
    first that goes through a provider connection."""
    kinds = [KINDS[name] for name in rtype.kinds]
    if auth_method == "oauth":
        return next((k for k in kinds if k.uses_connection), kinds[0])
    return kinds[0]


def columns_of(kind_names: Sequence[str]) -> list[str]:
    """The source columns of a type accepting ``kind_names``: each kind's, in order, once."""
    return list(dict.fromkeys(c for name in kind_names for c in KINDS[name].columns))


@sensitive_variables()
def source_for_request(req, rtype: RequestType) -> Source:
    """From a stored request (the worker)."""
    return kind_for(rtype, (req.options or {}).get("auth_method", "")).build(rtype, SourceParams.of_request(req))


# ---- the mailbox side of a restore (restore types have the one kind "imap_password") ------------
@sensitive_variables()
def destination_for_request(req, rtype: RequestType):
    """The mailbox a restore writes into, from the request's mailbox-side fields, with the same
    private-address rule and CA file as a backup's source."""
    from connectors.destinations.imap import ImapDestination

    return ImapDestination(
        host=req.source_server or rtype.server, port=req.source_port or rtype.port,
        security=req.source_security or rtype.security, username=req.source_user, password=req.source_password,
        flavour=rtype.flavour, base_folder=req.target_folder,
        allow_private=settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS, ca_file=settings.LEGACYFLO_IMAP_CA_FILE or None,
    )


@sensitive_variables()
def source_from_form(rtype: RequestType, data: Mapping, *, tenant) -> Source:
    """From the form's cleaned data (the "Test connection" button)."""
    options = data.get("options") or {}
    kind = kind_for(rtype, data.get("auth_method") or options.get("auth_method", ""))
    if kind.uses_connection and not options.get("connection"):
        return UnavailableSource(AuthenticationFailed(
            "Choose a connection for this mailbox first (see the form's errors)."))
    return kind.build(rtype, SourceParams.of_form(data, tenant=tenant))

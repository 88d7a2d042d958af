"""Build the connector Source for a request type from a request row or form data."""

from __future__ import annotations

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from connectors.base import AuthenticationFailed, Folder, Source, SourceError
from requests_app.types import RequestType


# Error reports hide every local of these (and of what they call): they handle credentials.
@sensitive_variables()
def imap_source(rtype: RequestType, *, server: str, port: int | None, security: str, user: str,
                password: str, allow_private: bool, oauth2_token=None) -> Source:
    from connectors.imap import ImapSource

    return ImapSource(
        host=server or rtype.server, port=port or rtype.port, security=security or rtype.security,
        username=user, password=password, oauth2_token=oauth2_token, flavour=rtype.flavour,
        allow_private=allow_private, ca_file=settings.LEGACYFLO_IMAP_CA_FILE or None,
    )


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


def _is_oauth(rtype: RequestType, options: dict) -> bool:
    return rtype.uses_connection and (not rtype.uses_password or options.get("auth_method") == "oauth")


@sensitive_variables()
def build_source(rtype: RequestType, data: dict, *, tenant, allow_private: bool) -> Source:
    """From form data (the "Test connection" button)."""
    options = data.get("options") or {}
    if rtype.uses_connection and _is_oauth(rtype, {"auth_method": data.get("auth_method") or options.get("auth_method")}):
        if not options.get("connection"):
            return UnavailableSource(AuthenticationFailed(
                "Choose a connection for this mailbox first (see the form's errors)."))
        return provider_source(rtype, tenant=tenant, user=data.get("source_user", ""), options=options,
                               folders=data.get("folders") or [], exclude=data.get("exclude_folders") or [],
                               allow_private=allow_private)
    if rtype.source == "imap":
        return imap_source(rtype, server=data.get("source_server", ""), port=data.get("source_port"),
                           security=data.get("source_security", ""), user=data.get("source_user", ""),
                           password=data.get("source_password", ""), allow_private=allow_private)
    raise NotImplementedError(f"{rtype.code} has no source builder")


@sensitive_variables()
def source_for_request(req, rtype: RequestType) -> Source:
    """From a stored request (the worker)."""
    allow_private = settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS
    if _is_oauth(rtype, req.options or {}):
        return provider_source(rtype, tenant=req.tenant, user=req.source_user, options=req.options,
                               folders=req.folders, exclude=req.exclude_folders, allow_private=allow_private)
    if rtype.source == "imap":
        return imap_source(rtype, server=req.source_server, port=req.source_port, security=req.source_security,
                           user=req.source_user, password=req.source_password, allow_private=allow_private)
    raise NotImplementedError(f"{rtype.code} has no source builder")


@sensitive_variables()
def provider_source(rtype: RequestType, *, tenant, user: str, options: dict, folders, exclude,
                    allow_private: bool) -> Source:
    """GMAILOAUTH, GMAILAPI, M365API and O365 with OAuth, through the tenant's provider connection.

    The connection is looked up within the request's tenant. Microsoft rotates refresh tokens:
    every new one is stored on the mailbox's authorization as soon as it arrives (hook below).
    """
    from connectors import oauth
    from connectors.ratelimit import RedisQuota, gmail_quota_key, graph_quota_key
    from providers import credentials, services
    from providers.selectors import authorization_for, connection_by_ref

    connection = connection_by_ref(tenant, options.get("connection", ""), rtype.provider)
    if connection is None:
        return UnavailableSource(AuthenticationFailed(
            "The provider connection of this request was removed; register it again under Connections."))
    kind = options.get("credential", "")

    def consent(scope: str | None = None):
        found = authorization_for(connection, user, scope=scope)
        if found is None:
            raise AuthenticationFailed(f"{user} no longer has a valid consent through {connection.name} (revoked?): "
                                       "connect the mailbox again on the connection's page, then retry.")
        return found

    def store_rotated(authorization_id: int):
        return lambda token: services.authorization_store_refresh_token(authorization_id=authorization_id,
                                                                         refresh_token=token)

    try:
        if rtype.source == "gmail_api":
            from connectors.gmail_api import GmailApiSource

            if kind == "user":
                google_credentials = credentials.google_user(connection, consent())
            else:
                google_credentials = credentials.google_service_account(
                    connection, subject=user, scopes=[oauth.GMAIL_READONLY_SCOPE])
            return GmailApiSource(google_credentials, api_url=settings.GMAIL_API_URL,
                                  include_spam_trash=bool(options.get("include_spam_trash")),
                                  quota=RedisQuota(settings.REDIS_URL, gmail_quota_key(user)))
        if rtype.source == "graph":
            from connectors.graph import GraphSource

            if kind == "delegated":
                authorization = consent(credentials.GRAPH_READ_SCOPE)
                provider = credentials.microsoft_delegated(connection, authorization, scopes=oauth.GRAPH_MAIL_SCOPES,
                                                           on_refresh_token=store_rotated(authorization.pk))
                mailbox = None  # /me: the signed-in mailbox
            else:
                provider = credentials.microsoft_app_only(connection, scopes=[oauth.GRAPH_DEFAULT_SCOPE])
                mailbox = user
            return GraphSource(provider, mailbox=mailbox, graph_url=settings.MICROSOFT_GRAPH_URL,
                               ca_bundle=credentials.ca_bundle(), include=folders, exclude=exclude,
                               quota=RedisQuota(settings.REDIS_URL, graph_quota_key(connection.client_id, user),
                                                limit=10_000, window=600, burst=50))
        if rtype.flavour == "gmail":  # GMAILOAUTH: IMAP with the service account's delegated token
            service_account = credentials.google_service_account(connection, subject=user,
                                                                 scopes=[oauth.GMAIL_IMAP_SCOPE])
            session = credentials.http_session()
            return imap_source(rtype, server=settings.GMAIL_IMAP_HOST, port=settings.GMAIL_IMAP_PORT,
                               security="ssl", user=user, password="", allow_private=allow_private,
                               oauth2_token=lambda: oauth.google_access_token(service_account, session=session))
        # O365 over IMAP with XOAUTH2
        if kind == "delegated":
            authorization = consent(credentials.OUTLOOK_IMAP_SCOPE)
            provider = credentials.microsoft_delegated(connection, authorization,
                                                       scopes=[oauth.OUTLOOK_IMAP_DELEGATED_SCOPE],
                                                       on_refresh_token=store_rotated(authorization.pk))
        else:
            provider = credentials.microsoft_app_only(connection, scopes=[oauth.OUTLOOK_IMAP_APP_SCOPE])
        return imap_source(rtype, server=settings.MICROSOFT_IMAP_HOST, port=settings.MICROSOFT_IMAP_PORT,
                           security="ssl", user=user, password="", allow_private=allow_private,
                           oauth2_token=provider)
    except SourceError as exc:
        return UnavailableSource(exc)

"""Connection pages (under /t/<tenant>/connections/) and the two OAuth callbacks (under /oauth/).

Tenant pages go through ``tenant_view``: viewers see connections and token health, admins
manage them. The callbacks are outside the tenant URLs (one redirect URI per provider is
registered with Google / Microsoft), so they find the tenant through the consent remembered in
the session under the returned ``state`` and check membership and role again.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_POST

from accounts.access import TenantAccess, get_owned_or_404, membership_for, tenant_view
from accounts.models import Role
from connectors.model import TransientError
from connectors.sources import tokens
from providers import consent, credentials, selectors, services
from providers.forms import (
    ConnectionTestForm,
    ConsentForm,
    GoogleConnectionForm,
    MicrosoftConnectionForm,
)
from providers.models import MailboxAuthorization, Provider, ProviderConnection

log = logging.getLogger(__name__)
FORMS = {Provider.GOOGLE: GoogleConnectionForm, Provider.MICROSOFT: MicrosoftConnectionForm}
PROVIDER_ERRORS = (tokens.OAuthError, TransientError, ValidationError)


def _error_text(exc: Exception) -> str:
    return " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)


def _detail(request, connection):
    return redirect("providers:detail", tenant_slug=request.access.tenant.slug, connection_uuid=connection.uuid)


@tenant_view(read=Role.VIEWER)
def connection_list(request):
    return render(request, "providers/list.html", {"connections": selectors.connections_of(request.access.tenant)})


@sensitive_post_parameters("client_secret", "service_account_key")
@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@sensitive_variables()
def connection_create(request, provider: str):
    if provider not in FORMS:
        raise Http404("Unknown provider")
    form = FORMS[provider](request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            connection = services.connection_create(tenant=request.access.tenant, actor=request.user, provider=provider,
                                                    request=request, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"The connection {connection.name} is saved.")
            return _detail(request, connection)
    return render(request, "providers/form.html", {"form": form, "provider": Provider(provider), "editing": False})


@sensitive_post_parameters("client_secret", "service_account_key")
@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@sensitive_variables()
def connection_edit(request, connection_uuid):
    connection = get_owned_or_404(request.access, ProviderConnection, uuid=connection_uuid)
    initial = {"name": connection.name, "client_id": connection.client_id, "directory_tenant": connection.directory_tenant}
    form = FORMS[connection.provider](request.POST or None, initial=initial, editing=True)
    if request.method == "POST" and form.is_valid():
        try:
            services.connection_update(connection=connection, actor=request.user, request=request, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "The connection is updated.")
            return _detail(request, connection)
    return render(request, "providers/form.html", {"form": form, "provider": Provider(connection.provider),
                                                   "editing": True, "connection": connection})


@tenant_view(read=Role.VIEWER)
def connection_detail(request, connection_uuid):
    connection = get_owned_or_404(request.access, ProviderConnection, uuid=connection_uuid)
    callback = "oauth:google_callback" if connection.is_google else "oauth:microsoft_callback"
    return render(request, "providers/detail.html", {
        "connection": connection,
        "authorizations": selectors.authorizations_of(connection),
        "redirect_uri": credentials.redirect_uri(request, callback),
        "delegation_scopes": ",".join(credentials.GOOGLE_DELEGATION_SCOPES),
        "consent_form": ConsentForm(), "test_form": ConnectionTestForm(),
        "in_use": selectors.requests_using(connection).count(),
    })


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
def connection_remove(request, connection_uuid):
    connection = get_owned_or_404(request.access, ProviderConnection, uuid=connection_uuid)
    try:
        services.connection_remove(connection=connection, actor=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
        return _detail(request, connection)
    messages.success(request, f"The connection {connection.name} was removed.")
    return redirect("providers:list", tenant_slug=request.access.tenant.slug)


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
@sensitive_variables()
def connection_test(request, connection_uuid):
    connection = get_owned_or_404(request.access, ProviderConnection, uuid=connection_uuid)
    form = ConnectionTestForm(request.POST)
    mailbox = form.cleaned_data.get("mailbox", "") if form.is_valid() else ""
    try:
        connection = services.connection_check(connection=connection, actor=request.user, mailbox=mailbox, request=request)
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
    else:
        (messages.success if connection.check_state == "valid" else messages.error)(request, connection.check_detail)
    return _detail(request, connection)


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
@sensitive_variables()
def consent_start(request, connection_uuid):
    """Send the browser to the provider's consent page; state and PKCE stay in this session."""
    connection = get_owned_or_404(request.access, ProviderConnection, uuid=connection_uuid)
    if not connection.has_web_client:
        messages.error(request, "Per-user consent needs the connection's OAuth client id and secret.")
        return _detail(request, connection)
    form = ConsentForm(request.POST)
    data = form.cleaned_data if form.is_valid() else {"login_hint": "", "purpose": "graph"}
    common = {"tenant_slug": request.access.tenant.slug, "user_id": request.user.pk}
    try:
        if connection.is_google:
            url, pending = consent.start_google(connection, redirect_uri=credentials.redirect_uri(request, "oauth:google_callback"),
                                                login_hint=data["login_hint"], **common)
        else:
            url, pending = consent.start_microsoft(connection, redirect_uri=credentials.redirect_uri(request, "oauth:microsoft_callback"),
                                                   login_hint=data["login_hint"], purpose=data["purpose"], **common)
    except PROVIDER_ERRORS as exc:
        messages.error(request, _error_text(exc))
        return _detail(request, connection)
    consent.remember(request.session, pending)
    return redirect(url)


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
@sensitive_variables()
def admin_consent_start(request, connection_uuid):
    connection = get_owned_or_404(request.access, ProviderConnection.objects.filter(provider=Provider.MICROSOFT),
                                  uuid=connection_uuid)
    url, pending = consent.start_microsoft_admin(
        connection, redirect_uri=credentials.redirect_uri(request, "oauth:microsoft_callback"),
        tenant_slug=request.access.tenant.slug, user_id=request.user.pk)
    consent.remember(request.session, pending)
    return redirect(url)


def _authorization(request, connection_uuid, authorization_uuid) -> MailboxAuthorization:
    return get_owned_or_404(request.access, MailboxAuthorization.objects.select_related("connection"),
                            uuid=authorization_uuid, connection__uuid=connection_uuid)


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
@sensitive_variables()
def authorization_test(request, connection_uuid, authorization_uuid):
    authorization = _authorization(request, connection_uuid, authorization_uuid)
    try:
        authorization = services.authorization_check(authorization=authorization, actor=request.user, request=request)
    except PROVIDER_ERRORS as exc:
        messages.error(request, _error_text(exc))
    else:
        (messages.success if authorization.status == "valid" else messages.error)(
            request, f"{authorization.email}: {authorization.get_status_display()}. {authorization.status_detail}")
    return _detail(request, authorization.connection)


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
@sensitive_variables()
def authorization_revoke(request, connection_uuid, authorization_uuid):
    authorization = _authorization(request, connection_uuid, authorization_uuid)
    try:
        services.authorization_revoke(authorization=authorization, actor=request.user, request=request)
    except PROVIDER_ERRORS as exc:
        messages.error(request, f"Nothing was revoked: {_error_text(exc)}")
    else:
        messages.success(request, f"The consent of {authorization.email} is revoked.")
    return _detail(request, authorization.connection)


# --- callbacks (outside /t/<tenant>/) ------------------------------------------------------------
STATE_MISMATCH = ("This sign-in does not belong to a consent started in this browser session (state mismatch, "
                  "already used or expired). Nothing was connected; start the connection again.")


def _callback_target(request, kinds: tuple[str, ...]):
    """The pending consent for the returned state, its tenant access (re-checked) and connection."""
    pending = consent.take(request.session, request.GET.get("state"), kinds=kinds, user_id=request.user.pk)
    if pending is None:
        return None, None, None
    membership = membership_for(request.user, pending.tenant_slug)
    if membership is None:
        raise Http404("No such tenant")
    access = TenantAccess(tenant=membership.tenant, membership=membership)
    access.require(Role.ADMIN)
    request.access = access
    connection = get_owned_or_404(access, ProviderConnection, uuid=pending.connection_uuid)
    return pending, access, connection


def _no_state(request):
    messages.error(request, STATE_MISMATCH)
    return redirect("home")


@login_required
@require_GET
@sensitive_variables()
def google_callback(request):
    pending, access, connection = _callback_target(request, (consent.GOOGLE,))
    if pending is None:
        return _no_state(request)
    try:
        # The registered redirect URI + the returned query: right behind a proxy too (LEGACYFLO_PUBLIC_URL).
        response_url = pending.redirect_uri + "?" + request.META.get("QUERY_STRING", "")
        authorization = services.consent_google_finish(connection=connection, actor=request.user, pending=pending,
                                                       authorization_response=response_url, request=request)
    except PROVIDER_ERRORS as exc:
        messages.error(request, _error_text(exc))
    else:
        messages.success(request, f"{authorization.email} is connected through {connection.name}.")
    return _detail(request, connection)


@login_required
@require_GET
@sensitive_variables()
def microsoft_callback(request):
    """Delegated sign-in and admin consent come back here; the remembered kind tells them apart."""
    pending, access, connection = _callback_target(request, (consent.MICROSOFT, consent.MICROSOFT_ADMIN))
    if pending is None:
        return _no_state(request)
    query = request.GET.dict()
    try:
        if pending.kind == consent.MICROSOFT_ADMIN:
            connection = services.admin_consent_finish(connection=connection, actor=request.user, pending=pending,
                                                       query=query, request=request)
            text = f"Admin consent granted by the tenant {connection.consented_tenant_id}: app-only access can be used."
        else:
            authorization = services.consent_microsoft_finish(connection=connection, actor=request.user,
                                                              pending=pending, query=query, request=request)
            text = f"{authorization.email} is connected through {connection.name}."
    except PROVIDER_ERRORS as exc:
        messages.error(request, _error_text(exc))
    else:
        messages.success(request, text)
    return _detail(request, connection)

"""Thin views: access check → form → one service call → redirect."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.shortcuts import redirect, render
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from accounts import selectors, services
from accounts.access import get_owned_or_404, tenant_view
from accounts.audit import audit_account
from accounts.forms import (
    AcceptInvitationForm,
    InviteForm,
    RoleForm,
    ThrottledAuthenticationForm,
    ThrottledPasswordChangeForm,
)
from accounts.models import Invitation, Membership, Role, User


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc)


# Credentials pass through these views: error reports hide every local of their call trees
# (legacyflo.errorreports), with DEBUG on too.
@method_decorator(sensitive_variables(), name="dispatch")
class LoginView(auth_views.LoginView):
    """Django's login with brute-force protection; a locked-out attempt answers 429 Too Many Requests."""

    template_name = "accounts/login.html"
    redirect_authenticated_user = True
    authentication_form = ThrottledAuthenticationForm

    def form_invalid(self, form):
        locked = form.has_error(NON_FIELD_ERRORS, code="locked")
        response = self.render_to_response(self.get_context_data(form=form, locked=locked))
        if locked:
            response.status_code = 429
        return response


@method_decorator(sensitive_variables(), name="dispatch")
class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change, the old password throttled like a login; locked out, it answers 429."""

    template_name = "accounts/form_page.html"
    success_url = "/"
    extra_context = {"title": "Change password"}
    form_class = ThrottledPasswordChangeForm

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "request": self.request}

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.has_error("old_password", code="locked"):
            response.status_code = 429
        return response

    def form_valid(self, form):
        """Audited like the failed attempts; the change and its record commit together."""
        with transaction.atomic():
            response = super().form_valid(form)
            _audit_password_changed(form.user, self.request, via="password_change")
        messages.success(self.request, "Your password was changed.")
        return response


@method_decorator(sensitive_variables(), name="dispatch")
class PasswordResetView(auth_views.PasswordResetView):
    """Django's password reset request; the mail it sends carries a reset token."""


@method_decorator(sensitive_variables(), name="dispatch")
class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Django's password reset confirmation, with the new password audited like a change."""

    template_name = "accounts/form_page.html"
    success_url = "/accounts/login/"
    extra_context = {"title": "Choose a new password"}

    def form_valid(self, form):
        with transaction.atomic():
            response = super().form_valid(form)
            _audit_password_changed(form.user, self.request, via="password_reset")
        messages.success(self.request, "Your new password is set: log in with it.")
        return response


def _audit_password_changed(user, request, *, via: str) -> None:
    """A new password in every tenant log of the account: the fact and the way, never the password."""
    audit_account(email=user.email, actor=user, action="auth.password_changed", request=request,
                  detail={"via": via})


@login_required
def home(request):
    """Send people to their last tenant, or let them choose."""
    memberships = list(selectors.memberships_of_user(request.user))
    slugs = {m.tenant.slug for m in memberships}
    last = request.session.get("last_tenant")
    if last in slugs:
        return redirect("dashboard", tenant_slug=last)
    if len(memberships) == 1:
        return redirect("dashboard", tenant_slug=memberships[0].tenant.slug)
    return render(request, "accounts/choose_tenant.html", {"memberships": memberships})


@tenant_view(read=Role.VIEWER)
def members(request):
    access = request.access
    return render(request, "accounts/members.html", {
        "members": selectors.members_of(access.tenant),
        "invitations": selectors.pending_invitations(access.tenant) if access.can(Role.ADMIN) else [],
        "invite_form": InviteForm(),
        "roles": Role.choices,
    })


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
@sensitive_variables()  # the invitation's token
def member_invite(request):
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            services.invitation_create(
                access=request.access, email=form.cleaned_data["email"], role=form.cleaned_data["role"],
                base_url=request.build_absolute_uri("/"), request=request,
            )
            messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
        except (ValidationError, PermissionDenied) as exc:
            messages.error(request, _error_text(exc))
    else:
        messages.error(request, "Enter a valid email address and role.")
    return redirect("accounts:members", tenant_slug=request.access.tenant.slug)


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
def member_role(request, membership_uuid):
    membership = get_owned_or_404(request.access, Membership.objects.select_related("user"), uuid=membership_uuid)
    form = RoleForm(request.POST)
    if form.is_valid():
        try:
            services.membership_change_role(access=request.access, membership=membership,
                                            role=form.cleaned_data["role"], request=request)
            messages.success(request, f"{membership.user.email} is now {membership.get_role_display()}.")
        except (ValidationError, PermissionDenied) as exc:
            messages.error(request, _error_text(exc))
    return redirect("accounts:members", tenant_slug=request.access.tenant.slug)


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
def member_remove(request, membership_uuid):
    membership = get_owned_or_404(request.access, Membership.objects.select_related("user"), uuid=membership_uuid)
    try:
        services.membership_remove(access=request.access, membership=membership, request=request)
        messages.success(request, f"{membership.user.email} was removed.")
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, _error_text(exc))
    if membership.user_id == request.user.id:
        return redirect("home")
    return redirect("accounts:members", tenant_slug=request.access.tenant.slug)


@tenant_view(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
def invitation_revoke(request, invitation_uuid):
    invitation = get_owned_or_404(request.access, Invitation, uuid=invitation_uuid)
    try:
        services.invitation_revoke(access=request.access, invitation=invitation, request=request)
        messages.success(request, f"The invitation to {invitation.email} was withdrawn.")
    except PermissionDenied as exc:
        messages.error(request, _error_text(exc))
    return redirect("accounts:members", tenant_slug=request.access.tenant.slug)


@tenant_view(read=Role.ADMIN)
def audit_log(request):
    events = selectors.audit_events(request.access.tenant, action_prefix=request.GET.get("action", ""))
    page = Paginator(events.select_related("actor"), 50).get_page(request.GET.get("page"))
    return render(request, "accounts/audit.html", {"page": page, "action": request.GET.get("action", "")})


@sensitive_post_parameters("password1", "password2")
@sensitive_variables()
def invitation_accept(request, token: str):
    """Accept an invitation: log in as the invited address, or create that account here."""
    invitation = services.invitation_by_token(token)
    if invitation is None:
        return render(request, "accounts/invitation_invalid.html", status=404)
    existing = User.objects.filter(email__iexact=invitation.email).first()
    if request.user.is_authenticated:
        if request.method == "POST":
            try:
                services.invitation_accept(invitation=invitation, user=request.user, request=request)
            except (ValidationError, PermissionDenied) as exc:
                messages.error(request, _error_text(exc))
                return redirect("home")
            return redirect("dashboard", tenant_slug=invitation.tenant.slug)
        return render(request, "accounts/invitation_accept.html", {"invitation": invitation, "form": None})
    if existing is not None:
        messages.info(request, f"Log in as {invitation.email} to accept the invitation.")
        return redirect(f"/accounts/login/?next=/invite/{token}/")
    form = AcceptInvitationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.invitation_accept_new_account(
                invitation=invitation, password=form.cleaned_data["password1"], request=request)
        except ValidationError as exc:  # used, expired or withdrawn meanwhile, or the account exists now
            messages.error(request, _error_text(exc))
            return redirect(f"/accounts/login/?next=/invite/{token}/" if exc.code == "account_exists" else "login")
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("dashboard", tenant_slug=invitation.tenant.slug)
    return render(request, "accounts/invitation_accept.html", {"invitation": invitation, "form": form})

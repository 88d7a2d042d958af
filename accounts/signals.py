"""Audit logins, logouts and failed logins in every tenant the person belongs to."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from accounts.audit import audit
from accounts.models import Membership, User


def _audit_all_tenants(user, action: str, request) -> None:
    for membership in Membership.objects.filter(user=user).select_related("tenant"):
        audit(tenant=membership.tenant, actor=user, action=action, target=user.email, request=request)


@receiver(user_logged_in)
def on_login(sender, request, user, **kwargs):
    _audit_all_tenants(user, "auth.login", request)


@receiver(user_logged_out)
def on_logout(sender, request, user, **kwargs):
    if user is not None:
        _audit_all_tenants(user, "auth.logout", request)


@receiver(user_login_failed)
def on_login_failed(sender, credentials, request=None, **kwargs):
    email = (credentials or {}).get("username") or (credentials or {}).get("email") or ""
    user = User.objects.filter(email__iexact=email).first() if email else None
    if user is not None:
        for membership in Membership.objects.filter(user=user).select_related("tenant"):
            audit(tenant=membership.tenant, actor=None, action="auth.login_failed", target=user.email, request=request)

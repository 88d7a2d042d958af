"""Audit logins, logouts and failed logins in every tenant the person belongs to."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from accounts.audit import audit_account


@receiver(user_logged_in)
def on_login(sender, request, user, **kwargs):
    audit_account(email=user.email, actor=user, action="auth.login", request=request)


@receiver(user_logged_out)
def on_logout(sender, request, user, **kwargs):
    if user is not None:
        audit_account(email=user.email, actor=user, action="auth.logout", request=request)


@receiver(user_login_failed)
def on_login_failed(sender, credentials, request=None, **kwargs):
    email = (credentials or {}).get("username") or (credentials or {}).get("email") or ""
    if email:
        audit_account(email=email, action="auth.login_failed", request=request)

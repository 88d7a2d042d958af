"""Recording sensitive actions. Callers pass facts, never secrets."""

from __future__ import annotations

from django.http import HttpRequest

from accounts.models import AuditEvent, Tenant


def client_ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit(
    *,
    tenant: Tenant,
    actor,
    action: str,
    target: str = "",
    detail: dict | None = None,
    request: HttpRequest | None = None,
) -> AuditEvent:
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        tenant=tenant,
        actor=user,
        actor_email=user.email if user else (str(actor) if actor else "system"),
        action=action,
        target=target[:300],
        detail=detail or {},
        ip_address=client_ip(request),
    )

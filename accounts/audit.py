"""Recording sensitive actions. Callers pass facts, never secrets."""

from __future__ import annotations

from django.http import HttpRequest

from accounts.clientip import client_ip
from accounts.models import AuditEvent, Membership, Tenant


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


def audit_account(*, email: str, action: str, request: HttpRequest | None = None, actor=None,
                  detail: dict | None = None) -> None:
    """Record ``action`` about the account ``email`` in every tenant it belongs to.

    People belong to tenants, not the other way round, so an event about a person goes to each of
    their tenants' logs; an address without an account is recorded nowhere (and says nothing).
    """
    for membership in Membership.objects.filter(user__email__iexact=email.strip()).select_related("tenant", "user"):
        audit(tenant=membership.tenant, actor=actor, action=action, target=membership.user.email,
              detail=detail, request=request)

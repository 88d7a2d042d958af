"""Reads for accounts: always scoped to a tenant or to the person asking."""

from accounts.models import AuditEvent, Invitation, Membership, Tenant


def memberships_of_user(user):
    return Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name")


def members_of(tenant: Tenant):
    return Membership.objects.filter(tenant=tenant).select_related("user").order_by("user__email")


def pending_invitations(tenant: Tenant) -> list[Invitation]:
    """Invitations that can still be accepted: not used, not expired, their sender still
    entitled to grant the role (``services.sender_may_still_grant``)."""
    from django.utils import timezone

    from accounts.services import sender_may_still_grant

    pending = (Invitation.objects.filter(tenant=tenant, accepted_at__isnull=True, expires_at__gt=timezone.now())
               .select_related("invited_by"))
    return [invitation for invitation in pending if sender_may_still_grant(invitation)]


def audit_events(tenant: Tenant, *, action_prefix: str = ""):
    qs = AuditEvent.objects.filter(tenant=tenant)
    if action_prefix:
        qs = qs.filter(action__startswith=action_prefix)
    return qs

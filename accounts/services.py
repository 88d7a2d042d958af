"""Writes for tenants, members and invitations. Each is atomic and audited."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from accounts.access import TenantAccess
from accounts.audit import audit
from accounts.models import Invitation, Membership, Role, Tenant, User

INVITATION_DAYS = 7


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@sensitive_variables()
@transaction.atomic
def tenant_create(*, slug: str, name: str, owner_email: str, owner_password: str | None) -> Tenant:
    """Create a tenant and its first owner (an existing user keeps their password)."""
    if Tenant.objects.filter(slug=slug).exists():
        raise ValidationError(f"A tenant with the slug {slug!r} already exists.")
    tenant = Tenant(slug=slug, name=name)
    tenant.full_clean()
    tenant.save()
    user = User.objects.filter(email__iexact=owner_email).first()
    if user is None:
        if not owner_password:
            raise ValidationError("A password is required for a new owner.")
        user = User.objects.create_user(owner_email, owner_password)
    Membership.objects.create(tenant=tenant, user=user, role=Role.OWNER)
    audit(tenant=tenant, actor=None, action="tenant.create", target=slug, detail={"owner": user.email})
    return tenant


def granting_role(role: str) -> Role:
    """The role needed to give ``role`` to someone (by invitation or role change)."""
    return Role.OWNER if role == Role.OWNER else Role.ADMIN


def _check_can_grant(access: TenantAccess, role: str) -> None:
    access.require(Role.ADMIN)
    if not access.can(granting_role(role)):
        raise PermissionDenied("Only an owner can make someone an owner.")


def sender_may_still_grant(invitation: Invitation) -> bool:
    """An invitation is worth what its sender's rights are worth now: its sender's account is
    active and still holds, in the tenant, the role needed to grant the invited role. Removing,
    demoting or deactivating the sender thus voids their pending invitations, whenever it
    happened: this is checked when the invitation is shown and when it is accepted."""
    sender = invitation.invited_by
    if sender is None or not sender.is_active:
        return False
    membership = Membership.objects.filter(tenant_id=invitation.tenant_id, user=sender).first()
    return membership is not None and membership.has_role(granting_role(invitation.role))


@sensitive_variables()
def invitation_create(*, access: TenantAccess, email: str, role: str, base_url: str, request=None) -> Invitation:
    """Invite ``email`` with ``role``; the link goes by email and is valid for a week.

    The email is sent after the invitation is committed; if sending fails the invitation is
    withdrawn again and the error reaches the caller.
    """
    _check_can_grant(access, role)
    email = email.strip().lower()
    if Membership.objects.filter(tenant=access.tenant, user__email__iexact=email).exists():
        raise ValidationError(f"{email} is already a member of {access.tenant.name}.")
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        invitation = Invitation.objects.create(
            tenant=access.tenant, email=email, role=role, token_hash=_hash_token(token),
            invited_by=access.user, expires_at=timezone.now() + timedelta(days=INVITATION_DAYS),
        )
        audit(tenant=access.tenant, actor=access.user, action="member.invite", target=email,
              detail={"role": role}, request=request)
    link = f"{base_url.rstrip('/')}/invite/{token}/"
    try:
        send_mail(
            subject=f"You are invited to {access.tenant.name} on LegacyFlo",
            message=(
                f"{access.user.email} invited you to join {access.tenant.name} on LegacyFlo as "
                f"{Role(role).label}.\n\nAccept within {INVITATION_DAYS} days: {link}\n"
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[email],
        )
    except Exception as exc:
        invitation.delete()
        raise ValidationError(f"The invitation email could not be sent ({exc.__class__.__name__}).") from exc
    return invitation


@sensitive_variables()
def invitation_by_token(token: str) -> Invitation | None:
    """The pending invitation the link's token names, if its sender may still grant its role."""
    invitation = (Invitation.objects.select_related("tenant", "invited_by")
                  .filter(token_hash=_hash_token(token)).first())
    return invitation if invitation and invitation.is_pending and sender_may_still_grant(invitation) else None


def _lock_pending(invitation: Invitation) -> Invitation:
    """Lock the invitation row and check it again: since it was read, another request may have
    used it, or it may have expired or been withdrawn. Call inside a transaction."""
    locked = Invitation.objects.select_for_update().filter(pk=invitation.pk).first()
    if locked is not None and locked.accepted_at is not None:
        raise ValidationError("This invitation has already been used.", code="used")
    if locked is None or not locked.is_pending:
        raise ValidationError("This invitation has expired or was withdrawn. Ask for a new one.", code="invalid")
    if not sender_may_still_grant(locked):
        raise ValidationError("This invitation is no longer valid: the person who sent it can no longer grant "
                              "that role. Ask for a new one.", code="invalid")
    return locked


def _join(invitation: Invitation, user: User, request) -> Membership:
    membership, _ = Membership.objects.get_or_create(
        tenant=invitation.tenant, user=user, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    audit(tenant=invitation.tenant, actor=user, action="member.join", target=user.email,
          detail={"role": membership.role}, request=request)
    return membership


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: User, request=None) -> Membership:
    """Join the tenant. The accepting account must own the invited email address."""
    if user.email.lower() != invitation.email.lower():
        raise PermissionDenied("This invitation was sent to another email address.")
    return _join(_lock_pending(invitation), user, request)


@sensitive_variables()
def invitation_accept_new_account(*, invitation: Invitation, password: str, request=None) -> User:
    """Create the invited account and join, all or nothing, so no account is left without a tenant.

    A used, expired or withdrawn invitation, or an address that got an account meanwhile, raises
    ValidationError (codes "used", "invalid", "account_exists") and creates nothing. The password
    is hashed before the lock is taken, so the lock is held for the writes only.
    """
    user = User(email=invitation.email.lower())
    user.set_password(password)
    with transaction.atomic():
        invitation = _lock_pending(invitation)
        try:
            with transaction.atomic():
                user.save()
        except IntegrityError:
            raise ValidationError(f"An account for {user.email} already exists. Log in to accept the invitation.",
                                  code="account_exists") from None
        _join(invitation, user, request)
    return user


def _other_owners(membership: Membership) -> bool:
    return Membership.objects.filter(tenant=membership.tenant, role=Role.OWNER).exclude(pk=membership.pk).exists()


@transaction.atomic
def membership_change_role(*, access: TenantAccess, membership: Membership, role: str, request=None) -> Membership:
    _check_can_grant(access, role)
    if membership.role == Role.OWNER and not access.can(Role.OWNER):
        raise PermissionDenied("Only an owner can change an owner's role.")
    if membership.role == Role.OWNER and role != Role.OWNER and not _other_owners(membership):
        raise ValidationError("A tenant needs at least one owner.")
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit(tenant=access.tenant, actor=access.user, action="member.role", target=membership.user.email,
          detail={"from": old, "to": role}, request=request)
    return membership


@transaction.atomic
def membership_remove(*, access: TenantAccess, membership: Membership, request=None) -> None:
    access.require(Role.ADMIN)
    if membership.role == Role.OWNER and not access.can(Role.OWNER):
        raise PermissionDenied("Only an owner can remove an owner.")
    if membership.role == Role.OWNER and not _other_owners(membership):
        raise ValidationError("A tenant needs at least one owner.")
    email = membership.user.email
    membership.delete()
    audit(tenant=access.tenant, actor=access.user, action="member.remove", target=email, request=request)


@transaction.atomic
def invitation_revoke(*, access: TenantAccess, invitation: Invitation, request=None) -> None:
    """Withdraw an invitation; an owner invitation only by an owner (as only an owner grants it)."""
    access.require(Role.ADMIN)
    if not access.can(granting_role(invitation.role)):
        raise PermissionDenied("Only an owner can withdraw an invitation to become an owner.")
    email = invitation.email
    invitation.delete()
    audit(tenant=access.tenant, actor=access.user, action="member.invite_revoke", target=email, request=request)

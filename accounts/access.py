"""The one access checkpoint every tenant view and query goes through.

Tenant pages live under ``/t/<tenant_slug>/``. ``tenant_view`` resolves the slug *through the
user's memberships*: a person who is not a member gets 404 (the tenant's existence is not
revealed), a member whose role is too low gets 403. Objects are then loaded with
``get_owned_or_404`` which filters by the tenant first, so an id from another tenant is a 404
too. No view ever calls ``Model.objects.get(pk=...)`` on user input.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.http import Http404, HttpRequest, HttpResponseNotAllowed

from accounts.models import Membership, Role, Tenant

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


@dataclass(frozen=True)
class TenantAccess:
    """Who is acting, in which tenant, with which role."""

    tenant: Tenant
    membership: Membership

    @property
    def user(self):
        return self.membership.user

    @property
    def role(self) -> str:
        return self.membership.role

    @property
    def is_owner(self) -> bool:
        return self.can(Role.OWNER)

    @property
    def is_admin(self) -> bool:
        return self.can(Role.ADMIN)

    @property
    def is_operator(self) -> bool:
        return self.can(Role.OPERATOR)

    def can(self, role: str) -> bool:
        return self.membership.has_role(role)

    def require(self, role: str) -> None:
        if not self.can(role):
            raise PermissionDenied(f"This needs the {Role(role).label} role or higher.")


def membership_for(user, tenant_slug: str) -> Membership | None:
    if not user.is_authenticated or not user.is_active:
        return None
    return (
        Membership.objects.select_related("tenant", "user")
        .filter(user=user, tenant__slug=tenant_slug)
        .first()
    )


def tenant_view(read: str = Role.VIEWER, write: str | None = None):
    """Decorate a view taking ``tenant_slug``: sets ``request.access``.

    ``read`` is the least role for safe methods (GET, HEAD), ``write`` the least role for the
    others; a view without ``write`` answers 405 to them.
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request: HttpRequest, tenant_slug: str, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = membership_for(request.user, tenant_slug)
            if membership is None:
                raise Http404("No such tenant")
            access = TenantAccess(tenant=membership.tenant, membership=membership)
            request.access = access  # a 403 page below still shows the member their tenant's menu
            if request.method in SAFE_METHODS:
                access.require(read)
            elif write is None:
                return HttpResponseNotAllowed(sorted(SAFE_METHODS))
            else:
                access.require(write)
            request.session["last_tenant"] = tenant_slug
            return view(request, *args, **kwargs)

        wrapper.tenant_view = True  # the URL matrix test checks every tenant URL is guarded
        return wrapper

    return decorator


class TenantQuerySet(models.QuerySet):
    """Queryset of a tenant-owned model; ``for_tenant`` is the only way views read these."""

    def for_tenant(self, tenant: Tenant):
        return self.filter(tenant=tenant)


def get_owned_or_404(access: TenantAccess, model_or_qs, **lookup):
    """Load one object of ``access.tenant`` or raise 404 (also for another tenant's object)."""
    qs = model_or_qs if isinstance(model_or_qs, models.QuerySet) else model_or_qs.objects.all()
    try:
        return qs.filter(tenant=access.tenant).get(**lookup)
    except (qs.model.DoesNotExist, ValueError, ValidationError) as exc:  # bad UUIDs are 404s too
        raise Http404("Not found") from exc

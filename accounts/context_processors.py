from accounts.models import Role


def tenant(request):
    """Expose the current tenant access and the person's tenants (for the switcher) to templates."""
    access = getattr(request, "access", None)
    context = {"access": access, "Role": Role}
    if getattr(request, "user", None) is not None and request.user.is_authenticated:
        from accounts.selectors import memberships_of_user

        context["my_memberships"] = memberships_of_user(request.user)
    return context

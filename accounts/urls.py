from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from accounts import views
from accounts.forms import ThrottledPasswordResetForm

# Tenant-scoped pages (mounted under /t/<tenant_slug>/).
tenant_urlpatterns = [
    path("members/", views.members, name="members"),
    path("members/invite/", views.member_invite, name="member_invite"),
    path("members/<uuid:membership_uuid>/role/", views.member_role, name="member_role"),
    path("members/<uuid:membership_uuid>/remove/", views.member_remove, name="member_remove"),
    path("invitations/<uuid:invitation_uuid>/revoke/", views.invitation_revoke, name="invitation_revoke"),
    path("audit/", views.audit_log, name="audit"),
]

# Sign-in pages (mounted under /accounts/, no namespace: Django's auth views expect these names).
auth_urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/change/", views.PasswordChangeView.as_view(), name="password_change"),
    path("password/reset/", views.PasswordResetView.as_view(
        form_class=ThrottledPasswordResetForm, template_name="accounts/form_page.html", email_template_name="accounts/password_reset_email.txt",
        success_url=reverse_lazy("password_reset_done"), extra_context={"title": "Reset your password"}),
        name="password_reset"),
    path("password/reset/sent/", auth_views.PasswordResetDoneView.as_view(
        template_name="accounts/message_page.html",
        extra_context={"title": "Check your email", "text": "If an account uses that address, a reset link is on its way."}),
        name="password_reset_done"),
    path("password/reset/<uidb64>/<token>/", views.PasswordResetConfirmView.as_view(), name="password_reset_confirm"),
]

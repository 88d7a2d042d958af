from django.urls import path

from providers import views

app_name = "providers"

# Mounted under /t/<tenant_slug>/connections/.
urlpatterns = [
    path("", views.connection_list, name="list"),
    path("new/<str:provider>/", views.connection_create, name="create"),
    path("<uuid:connection_uuid>/", views.connection_detail, name="detail"),
    path("<uuid:connection_uuid>/edit/", views.connection_edit, name="edit"),
    path("<uuid:connection_uuid>/remove/", views.connection_remove, name="remove"),
    path("<uuid:connection_uuid>/test/", views.connection_test, name="test"),
    path("<uuid:connection_uuid>/consent/", views.consent_start, name="consent"),
    path("<uuid:connection_uuid>/admin-consent/", views.admin_consent_start, name="admin_consent"),
    path("<uuid:connection_uuid>/mailboxes/<uuid:authorization_uuid>/test/", views.authorization_test,
         name="authorization_test"),
    path("<uuid:connection_uuid>/mailboxes/<uuid:authorization_uuid>/revoke/", views.authorization_revoke,
         name="authorization_revoke"),
]

# Mounted under /oauth/ (namespace "oauth"): the redirect URIs registered with the providers.
oauth_urlpatterns = [
    path("google/callback/", views.google_callback, name="google_callback"),
    path("microsoft/callback/", views.microsoft_callback, name="microsoft_callback"),
]

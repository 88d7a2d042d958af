from django.urls import include, path

from accounts import urls as accounts_urls
from accounts import views as accounts_views
from legacyflo import views
from providers import urls as providers_urls

tenant_patterns = [
    path("", views.dashboard, name="dashboard"),
    path("", include((accounts_urls.tenant_urlpatterns, "accounts"))),
    path("buckets/", include("buckets.urls")),
    path("requests/", include("requests_app.urls")),
    path("plans/", include("requests_app.plan_urls")),
    path("connections/", include("providers.urls")),
]

urlpatterns = [
    path("", accounts_views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("accounts/", include(accounts_urls.auth_urlpatterns)),
    path("invite/<str:token>/", accounts_views.invitation_accept, name="invitation_accept"),
    path("oauth/", include((providers_urls.oauth_urlpatterns, "oauth"))),
    path("t/<slug:tenant_slug>/", include(tenant_patterns)),
]

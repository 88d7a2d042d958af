from django.urls import path

from requests_app import plan_views as views

app_name = "plans"

urlpatterns = [
    path("", views.plan_list, name="list"),
    path("new/", views.plan_new, name="new"),
    path("new/<str:type_code>/", views.plan_create, name="create"),
    path("from/<uuid:request_uuid>/", views.plan_from_request, name="from_request"),
    path("notifications/", views.notification_settings, name="notifications"),
    path("<uuid:plan_uuid>/", views.plan_detail, name="detail"),
    path("<uuid:plan_uuid>/edit/", views.plan_edit, name="edit"),
    path("<uuid:plan_uuid>/pause/", views.plan_pause, name="pause"),
    path("<uuid:plan_uuid>/resume/", views.plan_resume, name="resume"),
    path("<uuid:plan_uuid>/delete/", views.plan_delete, name="delete"),
]

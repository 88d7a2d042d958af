from django.urls import path

from buckets import views

app_name = "buckets"

urlpatterns = [
    path("", views.bucket_list, name="list"),
    path("register/", views.bucket_register, name="register"),
    path("<uuid:bucket_uuid>/", views.bucket_detail, name="detail"),
    path("<uuid:bucket_uuid>/verify/", views.bucket_verify, name="verify"),
    path("<uuid:bucket_uuid>/credentials/", views.bucket_credentials, name="credentials"),
    path("<uuid:bucket_uuid>/role/", views.bucket_role, name="role"),
    path("<uuid:bucket_uuid>/remove/", views.bucket_remove, name="remove"),
]

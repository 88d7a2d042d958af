from django.urls import path

from requests_app import views

app_name = "requests_app"

urlpatterns = [
    path("", views.request_list, name="list"),
    path("rows/", views.request_list_rows, name="rows"),
    path("bulk/", views.request_bulk, name="bulk"),
    path("batches/<uuid:batch_uuid>/", views.request_batch, name="batch"),
    path("new/", views.request_new, name="new"),
    path("new/<str:type_code>/", views.request_create, name="create"),
    path("new/<str:type_code>/test/", views.request_test_connection, name="test_connection"),
    path("upload/", views.request_upload, name="upload"),
    path("sample/<str:type_code>.csv", views.request_sample, name="sample"),
    path("<uuid:request_uuid>/", views.request_detail, name="detail"),
    path("<uuid:request_uuid>/progress/", views.request_progress, name="progress"),
    path("<uuid:request_uuid>/cancel/", views.request_cancel, name="cancel"),
    path("<uuid:request_uuid>/retry/", views.request_retry, name="retry"),
    path("<uuid:request_uuid>/clone/", views.request_clone, name="clone"),
    path("<uuid:request_uuid>/report/", views.request_report, name="report"),
    path("<uuid:request_uuid>/report/folders/", views.request_report_folders, name="report_folders"),
    path("<uuid:request_uuid>/report.<str:kind>", views.request_report_download, name="report_download"),
    path("<uuid:request_uuid>/files/<int:number>/", views.request_file_download, name="file_download"),
    path("<uuid:request_uuid>/browse/", views.request_browse, name="browse"),
    path("<uuid:request_uuid>/browse/message.eml", views.request_browse_message, name="browse_message"),
]

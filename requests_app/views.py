from django.shortcuts import render

from accounts.access import tenant_view
from accounts.models import Role
from requests_app.models import MigrationRequest


@tenant_view(read=Role.VIEWER)
def request_list(request):
    requests = MigrationRequest.objects.for_tenant(request.access.tenant).select_related("bucket")
    return render(request, "requests_app/list.html", {"requests": requests})

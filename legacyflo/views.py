from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static

from accounts.access import tenant_view
from accounts.models import Role
from buckets.models import Bucket
from requests_app.models import MigrationRequest, State
from requests_app.selectors import tenant_totals


@tenant_view(read=Role.VIEWER)
def dashboard(request):
    tenant = request.access.tenant
    requests = MigrationRequest.objects.for_tenant(tenant)
    counts = {state: requests.filter(state=state).count() for state in State.values}
    return render(request, "dashboard.html", {
        "counts": counts,
        "totals": tenant_totals(tenant),
        "states": State.choices,
        "recent": requests.select_related("bucket")[:10],
        "buckets": Bucket.objects.for_tenant(tenant),
    })


def healthz(request):
    """Liveness for load balancers: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})


def favicon(request):
    """Browsers and tools ask for /favicon.ico whatever the page links: send them to the icon."""
    return redirect(static("favicon.svg"), permanent=True)

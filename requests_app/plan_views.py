"""Plan pages: list, new (per backup type, or "Schedule this" from a request), page with runs and
events, edit, pause / resume, delete; and the tenant's default mail recipients."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from accounts.access import get_owned_or_404, tenant_view
from accounts.audit import audit
from accounts.models import Role
from requests_app import plans, schedule
from requests_app.forms import NotifyDefaultsForm, PlanForm, destination_buckets
from requests_app.models import MigrationRequest, Plan, TenantNotifications
from requests_app.types import available_types, get_type


def _backup_types():
    return [t for t in available_types() if t.source in ("imap", "gmail_api", "graph")]


def _plan_page(request, plan: Plan):
    return redirect("plans:detail", tenant_slug=request.access.tenant.slug, plan_uuid=plan.uuid)


@tenant_view(read=Role.VIEWER)
def plan_list(request):
    qs = Plan.objects.for_tenant(request.access.tenant).select_related("bucket")
    rows = [(p, schedule.parse(p.schedule).describe(), p.runs.order_by("-pk").first()) for p in qs]
    return render(request, "requests_app/plans/list.html", {"rows": rows})


@tenant_view(read=Role.OPERATOR)
def plan_new(request):
    return render(request, "requests_app/plans/new.html", {
        "types": _backup_types(), "has_bucket": destination_buckets(request.access.tenant).exists()})


@sensitive_post_parameters("source_password")
@tenant_view(read=Role.OPERATOR, write=Role.OPERATOR)
@sensitive_variables()
def plan_create(request, type_code: str):
    rtype = get_type(type_code)
    if rtype is None or rtype not in _backup_types():
        raise Http404("Unknown backup type")
    initial, source = {}, None
    if request.GET.get("from"):  # "Schedule this" from a request: its settings, its stored password
        source = get_owned_or_404(request.access, MigrationRequest.objects.select_related("bucket"),
                                  uuid=request.GET["from"])
        if source.request_type != rtype.code:
            raise Http404("Not a request of this type")
        initial = plans.form_initial(source)
    form = PlanForm(request.POST or None, initial=initial, rtype=rtype, tenant=request.access.tenant,
                    editing=source is not None and bool(source.source_password))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if source is not None and not data.get("source_password") and "source_password" in form.fields:
            data["source_password"] = source.source_password
        try:
            plan = plans.plan_create(tenant=request.access.tenant, actor=request.user, rtype=rtype, data=data,
                                     schedule_text=data["schedule"], notify=data["notify"], request=request)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"The plan is created; its first run is at {plan.next_run_at:%Y-%m-%d %H:%M} UTC.")
            return _plan_page(request, plan)
    return render(request, "requests_app/plans/form.html", {"form": form, "rtype": rtype, "plan": None,
                                                            "source": source})


@tenant_view(read=Role.OPERATOR)
def plan_from_request(request, request_uuid):
    """"Schedule this": the plan form of the request's type, filled in from the request."""
    req = get_owned_or_404(request.access, MigrationRequest, uuid=request_uuid)
    rtype = get_type(req.request_type)
    if rtype is None or rtype not in _backup_types():
        raise Http404("Only backups can be scheduled")
    from django.urls import reverse

    url = reverse("plans:create", kwargs={"tenant_slug": request.access.tenant.slug, "type_code": rtype.code})
    return redirect(f"{url}?from={req.uuid}")


@tenant_view(read=Role.VIEWER)
def plan_detail(request, plan_uuid):
    plan = get_owned_or_404(request.access, Plan.objects.select_related("bucket"), uuid=plan_uuid)
    return render(request, "requests_app/plans/detail.html", {
        "plan": plan, "describe": schedule.parse(plan.schedule).describe(),
        "runs": plan.runs.select_related("bucket").order_by("-pk")[:100],
        "events": plan.events.select_related("request")[:100]})


@sensitive_post_parameters("source_password")
@tenant_view(read=Role.OPERATOR, write=Role.OPERATOR)
@sensitive_variables()
def plan_edit(request, plan_uuid):
    plan = get_owned_or_404(request.access, Plan.objects.select_related("bucket"), uuid=plan_uuid)
    rtype = get_type(plan.request_type)
    if rtype is None:
        raise Http404("Unknown backup type")
    form = PlanForm(request.POST or None, initial=plans.form_initial(plan), rtype=rtype,
                    tenant=request.access.tenant, editing=True)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            plans.plan_update(plan=plan, actor=request.user, data=data, schedule_text=data["schedule"],
                              notify=data["notify"], request=request)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "The plan is saved.")
            return _plan_page(request, plan)
    return render(request, "requests_app/plans/form.html", {"form": form, "rtype": rtype, "plan": plan})


@tenant_view(read=Role.OPERATOR, write=Role.OPERATOR)
@require_POST
def plan_pause(request, plan_uuid):
    plan = get_owned_or_404(request.access, Plan, uuid=plan_uuid)
    plans.plan_set_paused(plan=plan, actor=request.user, paused=True, request=request)
    messages.success(request, "The plan is paused.")
    return _plan_page(request, plan)


@tenant_view(read=Role.OPERATOR, write=Role.OPERATOR)
@require_POST
def plan_resume(request, plan_uuid):
    plan = get_owned_or_404(request.access, Plan, uuid=plan_uuid)
    plan = plans.plan_set_paused(plan=plan, actor=request.user, paused=False, request=request)
    messages.success(request, f"The plan is resumed; its next run is at {plan.next_run_at:%Y-%m-%d %H:%M} UTC.")
    return _plan_page(request, plan)


@tenant_view(read=Role.OPERATOR, write=Role.OPERATOR)
@require_POST
def plan_delete(request, plan_uuid):
    plan = get_owned_or_404(request.access, Plan, uuid=plan_uuid)
    plans.plan_delete(plan=plan, actor=request.user, request=request)
    messages.success(request, "The plan is deleted; its runs are kept.")
    return redirect("plans:list", tenant_slug=request.access.tenant.slug)


@tenant_view(read=Role.VIEWER, write=Role.ADMIN)
def notification_settings(request):
    tenant = request.access.tenant
    current = TenantNotifications.objects.for_tenant(tenant).first()
    form = NotifyDefaultsForm(request.POST or None, initial={"notify": "; ".join(current.notify) if current else ""})
    if request.method == "POST" and form.is_valid():
        TenantNotifications.objects.update_or_create(tenant=tenant, defaults={"notify": form.cleaned_data["notify"]})
        audit(tenant=tenant, actor=request.user, action="tenant.notifications",
              detail={"recipients": len(form.cleaned_data["notify"])}, request=request)
        messages.success(request, "Saved.")
        return redirect("plans:notifications", tenant_slug=tenant.slug)
    return render(request, "requests_app/plans/notifications.html", {"form": form, "can_edit": request.access.is_admin})

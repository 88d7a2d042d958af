"""Request pages: list, new (form or CSV), detail with live progress, cancel, retry, reports."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.http import (
    FileResponse,
    Http404,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from accounts.access import get_owned_or_404, tenant_view
from accounts.audit import audit
from accounts.models import Role
from connectors.model import SourceError
from requests_app import clone, downloads, lifecycle, reports, selectors, services
from requests_app.connection_test import test_connection
from requests_app.csvimport import errors_csv, parse_csv, sample_csv
from requests_app.filters import RequestFilterForm, one_line_per_series
from requests_app.forms import destination_buckets, form_class
from requests_app.models import MigrationRequest, RequestBatch, State
from requests_app.series import run_file_name, series_base_key, series_run_rows
from requests_app.types import available_types, get_type, restore_type_for

PAGE_SIZE = 50
# A flash about a request's state ("queued", "cancellation requested"): the request page drops it
# as soon as its live progress shows another state (see static/legacyflo.js).
TRANSIENT = "transient"


def _requests_page(request, batch: RequestBatch | None = None):
    """The filtered, paginated list (``requests_app.filters``) and what the template needs."""
    data = request.GET.copy()
    if batch is not None:
        data["batch"] = str(batch.uuid)
    filters = RequestFilterForm(data, tenant=request.access.tenant, batch=batch)
    # The list never shows the password (decrypting 50 of them is most of a page's time) nor the
    # run's JSON documents.
    qs = filters.filter(MigrationRequest.objects.for_tenant(request.access.tenant).select_related("bucket")
                        .defer("source_password", "checkpoint", "result", "folder_progress", "options"))
    if not filters.active:  # filtered, every run that matches is listed on its own
        qs = one_line_per_series(qs)
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return {"page": page, "filters": filters, "query": query.urlencode(), "state": filters.data.get("state", ""),
            "states": State.choices, "any_active": any(r.is_active for r in page), "batch": batch}


@tenant_view(read=Role.VIEWER)
def request_list(request):
    return render(request, "requests_app/list.html", _requests_page(request))


@tenant_view(read=Role.VIEWER)
def request_list_rows(request):
    """The table body alone, polled by the list page for live progress."""
    return render(request, "requests_app/_rows.html", _requests_page(request))


@tenant_view(read=Role.VIEWER)
def request_batch(request, batch_uuid):
    """One CSV upload: its totals, and its requests with the list's search and filters."""
    batch = get_owned_or_404(request.access, RequestBatch, uuid=batch_uuid)
    return render(request, "requests_app/list.html", {**_requests_page(request, batch),
                                                      "totals": selectors.batch_totals(batch)})


@tenant_view(read=Role.OPERATOR, write=Role.OPERATOR)
@require_POST
def request_bulk(request):
    """Retry or cancel the selected requests, each through its service (which enforces its rules)."""
    action = request.POST.get("action", "")
    if action not in services.BULK_ACTIONS:
        raise Http404("Unknown action")
    uuids = []
    for value in request.POST.getlist("selected"):
        try:
            uuids.append(uuid.UUID(value))
        except ValueError:
            continue
    done, refused = services.requests_bulk_action(tenant=request.access.tenant, actor=request.user, uuids=uuids,
                                                  action=action, request=request)
    verb = {"cancel": "cancellation requested", "retry": "queued again"}[action]
    if done or not refused:
        messages.success(request, f"{done} request{'s' if done != 1 else ''} {verb}.")
    if refused:
        shown = refused[:20] + ([f"and {len(refused) - 20} more"] if len(refused) > 20 else [])
        messages.error(request, f"{len(refused)} not {'cancelled' if action == 'cancel' else 'retried'}: "
                       + "; ".join(shown))
    back = request.POST.get("next", "")
    if not back.startswith(f"/t/{request.access.tenant.slug}/requests/") or "//" in back:
        back = reverse("requests_app:list", kwargs={"tenant_slug": request.access.tenant.slug})
    return redirect(back)


@tenant_view(read=Role.OPERATOR)
def request_new(request):
    return render(request, "requests_app/new.html", {
        "types": available_types(), "has_bucket": destination_buckets(request.access.tenant).exists()})


def _clone_of(request) -> MigrationRequest | None:
    """The request a cloned form came from (``clone_of`` in the POST), within the tenant."""
    value = request.POST.get("clone_of", "")
    if not value:
        return None
    try:
        return get_owned_or_404(request.access, MigrationRequest, uuid=uuid.UUID(value))
    except ValueError:
        raise Http404("No such request") from None


PASSWORD_AGAIN = ("Enter the password: the server, port, security or user differ from the request you cloned, "
                  "so its stored password is not used.")


@sensitive_post_parameters("source_password", "target_password")
@tenant_view(read=Role.OPERATOR, write=Role.OPERATOR)
@sensitive_variables()
def request_create(request, type_code: str):
    rtype = get_type(type_code)
    if rtype is None:
        raise Http404("Unknown request type")
    original = _clone_of(request) if request.method == "POST" else None
    data = clone.with_stored_password(request.POST, original) if request.method == "POST" else None
    initial = _restore_initial(request, rtype) if request.method != "POST" else None
    form = form_class(rtype)(data, rtype=rtype, tenant=request.access.tenant, initial=initial)
    if initial and initial.get("series_base"):
        form.fields["archive_key"].help_text = (
            f"This backup is one run of an incremental series: {initial['series_base']} restores every run "
            f"of the series in order (each message once); the key above restores this run alone.")
    if request.method == "POST" and form.is_valid():
        reused = original is not None and not request.POST.get("source_password")
        if reused and "source_password" in form.fields and not clone.same_endpoint(form.cleaned_data, original):
            form.add_error("source_password", PASSWORD_AGAIN)
        else:
            try:
                req = services.request_submit(tenant=request.access.tenant, actor=request.user, rtype=rtype,
                                              data=form.cleaned_data, request=request)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, "The request is queued.", extra_tags=TRANSIENT)
                return redirect("requests_app:detail", tenant_slug=request.access.tenant.slug, request_uuid=req.uuid)
    if original is not None:
        _password_optional(form)
    return render(request, "requests_app/create.html", {"form": form, "rtype": rtype, "clone_of": original})


def _password_optional(form) -> None:
    """A cloned form may leave the password empty (the stored one is used): no browser ``required``."""
    if "source_password" in form.fields:
        form.fields["source_password"].required = False


@tenant_view(read=Role.OPERATOR)
def request_clone(request, request_uuid):
    """"Run again": the new-request form with this request's settings (its password not shown;
    kept for the same server, port, security and user)."""
    original = get_owned_or_404(request.access, MigrationRequest.objects.select_related("bucket"), uuid=request_uuid)
    rtype = get_type(original.request_type)
    if rtype is None:
        raise Http404("Unknown request type")
    if rtype.is_restore:
        raise Http404("A restore is not run again from here")
    form = form_class(rtype)(initial=clone.clone_initial(original), rtype=rtype, tenant=request.access.tenant)
    _password_optional(form)
    return render(request, "requests_app/create.html", {"form": form, "rtype": rtype, "clone_of": original})


@sensitive_post_parameters("source_password", "target_password")
@tenant_view(read=Role.OPERATOR, write=Role.OPERATOR)
@require_POST
@sensitive_variables()
def request_test_connection(request, type_code: str):
    """Check the credentials and list the folders with their message counts (an HTML fragment);
    for a restore, of the mailbox it writes into."""
    rtype = get_type(type_code)
    if rtype is None:
        raise Http404("Unknown request type")
    original = _clone_of(request)
    extra = {"check_archive": False} if rtype.is_restore else {}
    form = form_class(rtype)(clone.with_stored_password(request.POST, original), rtype=rtype,
                             tenant=request.access.tenant, **extra)
    form.is_valid()  # the connection fields are checked even if e.g. no bucket is chosen yet
    if (original is not None and not request.POST.get("source_password") and "source_password" in form.fields
            and not clone.same_endpoint(form.cleaned_data, original)):
        return render(request, "requests_app/_test_result.html", {"ok": False, "error": PASSWORD_AGAIN})
    side = "target_" if rtype.is_restore else "source_"
    source_errors = {k: v for k, v in form.errors.items() if k.startswith(side)}
    if source_errors:
        return render(request, "requests_app/_test_result.html", {"ok": False, "error": "Correct the mailbox fields first: " +
                      "; ".join(f"{k}: {' '.join(v)}" for k, v in source_errors.items())})
    result = test_connection(rtype, form.cleaned_data, tenant=request.access.tenant)
    audit(tenant=request.access.tenant, actor=request.user, action="request.test_connection",
          target=form.cleaned_data.get("source_user", ""), detail={"type": rtype.code, "ok": result.ok}, request=request)
    return render(request, "requests_app/_test_result.html", {"ok": result.ok, "error": result.error,
                                                              "folders": result.folders})


class _CheckOnly(Exception):
    """Raised inside the upload's transaction to roll a "check only" submission back."""


@tenant_view(read=Role.OPERATOR, write=Role.OPERATOR)
@sensitive_variables()  # the rows hold mailbox passwords
def request_upload(request):
    """Check and submit a CSV, or with "Check only" run every check (the submission's too: its
    destination conflicts) inside a transaction that is rolled back, so nothing is queued."""
    errors, rows, checked = [], 0, False
    if request.method == "POST":
        check_only = bool(request.POST.get("check_only"))
        upload = request.FILES.get("file")
        if upload is None:
            errors = ["Choose a CSV file."]
        elif upload.size > 20 * 1024 * 1024:
            errors = ["The file is larger than 20 MB; split it."]
        else:
            parsed = parse_csv(upload.read(), tenant=request.access.tenant)
            errors, rows = parsed.errors, len(parsed.rows)
            if parsed.ok:
                try:
                    with transaction.atomic():
                        created = services.requests_submit_many(
                            tenant=request.access.tenant, actor=request.user, rows=parsed.rows, request=request,
                            name=upload.name)
                        if check_only:
                            raise _CheckOnly
                except ValidationError as exc:
                    errors = exc.messages
                except _CheckOnly:
                    checked = True
                else:
                    messages.success(request, f"{len(created)} requests are queued.")
                    if not created:
                        return redirect("requests_app:list", tenant_slug=request.access.tenant.slug)
                    return redirect("requests_app:batch", tenant_slug=request.access.tenant.slug,
                                    batch_uuid=created[0].batch.uuid)
    return render(request, "requests_app/upload.html", {
        "errors": errors, "rows": rows, "checked": checked, "types": available_types(),
        "errors_csv": errors_csv(errors) if errors else ""})


@tenant_view(read=Role.VIEWER)
def request_sample(request, type_code: str):
    rtype = get_type(type_code)
    if rtype is None:
        raise Http404("Unknown request type")
    own = destination_buckets(request.access.tenant).values_list("name", flat=True).first()
    response = HttpResponse(sample_csv(rtype, bucket=own or ""), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(True, f"{rtype.code.lower()}-sample.csv")
    return response


@tenant_view(read=Role.VIEWER)
def request_detail(request, request_uuid):
    req = get_owned_or_404(request.access, MigrationRequest.objects.select_related("bucket"), uuid=request_uuid)
    return render(request, "requests_app/detail.html", {**_progress_context(req), "rtype": get_type(req.request_type),
                                                        "run_file_name": run_file_name(req),
                                                        "series_runs": series_run_rows(req)})


@tenant_view(read=Role.VIEWER)
def request_progress(request, request_uuid):
    req = get_owned_or_404(request.access, MigrationRequest.objects.select_related("bucket"), uuid=request_uuid)
    if request.GET.get("format") == "json":
        return JsonResponse(reports.progress_dict(req))
    # The fragment carries the action buttons too (``oob``): the page swaps them in, so a Cancel
    # button never outlives the run and Retry appears when the request ends.
    return render(request, "requests_app/_progress.html", {**_progress_context(req), "oob": True})


def _progress_context(req: MigrationRequest) -> dict:
    rtype = get_type(req.request_type)
    restorable = bool(rtype and not rtype.is_restore and req.state in (State.COMPLETED, State.COMPLETED_WITH_ERRORS)
                      and req.result.get("archives"))
    browsable = bool(rtype and (req.archive_key if rtype.is_restore else restorable))
    return {"req": req, "archives": reports.archive_files(req), "retryable": lifecycle.is_retryable(req),
            "restore_type": restore_type_for(rtype) if restorable else None, "browsable": browsable,
            "downloads": downloads.downloadable_files(req), "pace": reports.throughput(req),
            "clonable": bool(rtype and not rtype.is_restore)}


def _restore_initial(request, rtype) -> dict | None:
    """The restore form pre-filled from a completed backup (``?from=<uuid>``), looked up
    through the user's tenant: its bucket, its archive's key and, for the mailbox side, its
    server and user (never its password); for a run of an incremental series, also the series'
    base name (``series_base``, named in the key's help text)."""
    if not rtype.is_restore or not request.GET.get("from"):
        return None
    backup = get_owned_or_404(request.access, MigrationRequest.objects.select_related("bucket"), uuid=request.GET["from"])
    archives = backup.result.get("archives") or []
    if not archives:
        return None
    return {"bucket": str(backup.bucket.uuid), "archive_key": archives[0]["key"],
            "series_base": series_base_key(backup),
            "title": f"Restore of {backup.title or backup.source_user}",
            "target_server": backup.source_server, "target_port": backup.source_port,
            "target_security": backup.source_security, "target_user": backup.source_user}


@tenant_view(read=Role.OPERATOR, write=Role.OPERATOR)
@require_POST
def request_cancel(request, request_uuid):
    req = get_owned_or_404(request.access, MigrationRequest, uuid=request_uuid)
    try:
        services.request_cancel(req=req, actor=request.user, request=request)
        messages.success(request, "Cancellation requested.", extra_tags=TRANSIENT)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("requests_app:detail", tenant_slug=request.access.tenant.slug, request_uuid=req.uuid)


@tenant_view(read=Role.OPERATOR, write=Role.OPERATOR)
@require_POST
def request_retry(request, request_uuid):
    req = get_owned_or_404(request.access, MigrationRequest, uuid=request_uuid)
    try:
        services.request_retry(req=req, actor=request.user, request=request)
        messages.success(request, "The request is queued again; it resumes from its last checkpoint.",
                         extra_tags=TRANSIENT)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("requests_app:detail", tenant_slug=request.access.tenant.slug, request_uuid=req.uuid)


@tenant_view(read=Role.VIEWER)
def request_report(request, request_uuid):
    req = get_owned_or_404(request.access, MigrationRequest.objects.select_related("bucket"), uuid=request_uuid)
    return render(request, "requests_app/report.html", {"req": req, "report": reports.folder_table(req),
                                                        "failures": reports.failures(req)[:200],
                                                        "archives": reports.archive_files(req),
                                                        "downloads": downloads.downloadable_files(req)})


@tenant_view(read=Role.VIEWER)
def request_report_folders(request, request_uuid):
    """The per-folder table alone, polled by the report page while the request runs;
    ``?format=json`` gives the same figures to scripts (live while it runs, final after)."""
    req = get_owned_or_404(request.access, MigrationRequest.objects.select_related("bucket"), uuid=request_uuid)
    table = reports.folder_table(req)
    if request.GET.get("format") == "json":
        return JsonResponse({"id": str(req.uuid), "state": req.state, **table},
                            json_dumps_params={"ensure_ascii": False})
    # With the page's state badge and archive files (``oob``): they follow the run too.
    return render(request, "requests_app/_folder_report.html", {"req": req, "report": table, "oob": True,
                                                                 "archives": reports.archive_files(req),
                                                                 "downloads": downloads.downloadable_files(req)})


@tenant_view(read=Role.VIEWER)
def request_report_download(request, request_uuid, kind: str):
    if kind not in ("csv", "json"):
        raise Http404("Unknown report format")
    req = get_owned_or_404(request.access, MigrationRequest.objects.select_related("bucket"), uuid=request_uuid)
    audit(tenant=req.tenant, actor=request.user, action="request.report_download", target=str(req.uuid),
          detail={"kind": kind}, request=request)
    if kind == "csv" and req.records_pruned_at:
        return HttpResponse(f"The per-message records of this request were pruned (record retention); its report is "
                            f"kept in the bucket: {req.bucket.name}/{req.result.get('report_key', '')}",
                            status=410, content_type="text/plain; charset=utf-8")
    if kind == "csv":
        return FileResponse(reports.report_csv_file(req), as_attachment=True,
                            filename=f"{run_file_name(req)}.report.csv", content_type="text/csv; charset=utf-8")
    response = JsonResponse(reports.summary(req), json_dumps_params={"indent": 2, "ensure_ascii": False})
    # RFC 6266 (filename*= for a non-ASCII name), as FileResponse writes it for report.csv.
    response["Content-Disposition"] = content_disposition_header(True, f"{run_file_name(req)}.summary.json")
    return response


@tenant_view(read=Role.VIEWER)
def request_browse(request, request_uuid):
    """The archive's folders (with counts) and, for ``?folder=``, its messages: from the archive's
    directory through ranged GETs, never the archive itself."""
    from requests_app import browse

    req = get_owned_or_404(request.access, MigrationRequest.objects.select_related("bucket"), uuid=request_uuid)
    folder = request.GET.get("folder")
    try:
        page = int(request.GET.get("page") or 1)
    except ValueError:
        page = 1
    context = {"req": req, "folder": folder, "page": page, "archive_key": browse.archive_key(req)}
    try:
        with browse.reader_for(req) as reader:
            context["folders"] = browse.folders(reader)
            if folder is not None:
                context["messages"], context["more"] = browse.messages(reader, folder, page)
    except browse.NotBrowsable as exc:
        context["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - the bucket's or the reader's words, shown on the page
        context["error"] = f"The archive could not be read: {exc}"
    return render(request, "requests_app/browse.html", context)


@tenant_view(read=Role.OPERATOR)
def request_browse_message(request, request_uuid):
    """One message of the archive as ``.eml`` (``?id=VOLUME_KEY!ENTRY_NAME``), streamed; audited."""
    from requests_app import browse

    req = get_owned_or_404(request.access, MigrationRequest.objects.select_related("bucket"), uuid=request_uuid)
    entry_id = request.GET.get("id", "")
    try:
        reader = browse.reader_for(req)
        chunks = browse.message_bytes(reader, entry_id)
    except (browse.NotBrowsable, KeyError):
        raise Http404("No such message in this archive") from None
    except Exception as exc:  # noqa: BLE001 - a damaged entry or an unreachable bucket: say so, as a 404
        raise Http404(f"The message could not be read: {exc}") from None
    audit(tenant=req.tenant, actor=request.user, action="request.browse_download", target=str(req.uuid),
          detail={"entry": entry_id[:500]}, request=request)
    name = entry_id.rsplit("/", 1)[-1].rsplit("!", 1)[-1] or "message.eml"
    response = StreamingHttpResponse(chunks, content_type="message/rfc822")
    response["Content-Disposition"] = content_disposition_header(True, name if name.endswith(".eml") else name + ".eml")
    return response


@tenant_view(read=Role.OPERATOR)
def request_file_download(request, request_uuid, number: int):
    """Redirect to a short-lived presigned URL of one file the request wrote (``downloads``):
    the archive never passes through the portal. Operators and above: an archive is the mail."""
    req = get_owned_or_404(request.access, MigrationRequest.objects.select_related("bucket", "bucket__tenant"),
                           uuid=request_uuid)
    item = downloads.file_number(req, number)
    if item is None:
        raise Http404("No such file")
    try:
        url = downloads.presigned_url(req, item)
    except SourceError as exc:  # the bucket has no usable credentials (role refused, keys removed)
        messages.error(request, f"The download link could not be made: {exc}")
        return redirect("requests_app:detail", tenant_slug=request.access.tenant.slug, request_uuid=req.uuid)
    audit(tenant=req.tenant, actor=request.user, action="request.download", target=str(req.uuid),
          detail={"bucket": req.bucket.name, "key": item.key}, request=request)
    return HttpResponseRedirect(url)

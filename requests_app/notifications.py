"""Mail about runs: when a request starts, when it ends, and when a plan's slot went wrong.

Registered once on ``lifecycle.ON_TRANSITION`` (``requests_app.apps``), so it hears every
transition after its transaction committed; plans call ``plan_alert`` themselves.

Recipients: the request's (or plan's) ``notify`` list together with the tenant's default list
(``TenantNotifications``), each address once.

Invariants:
- One start mail per run: ``notified`` on the row records which mail of the current run went
  out; a run re-queued after its worker died and resumed mails nothing new, a Retry (a new run
  the user asked for) starts again from "".
- One end mail per run, on entering a final state: automatic attempts (RQ re-running a killed
  job, recovery re-queuing a stale run) never pass through a final state, so a failure is
  mailed after the last of them, not per retry.
- A mail failure never fails the run or the caller: it is logged (its class and message, never
  the SMTP password) and dropped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string
from django.urls import reverse

from requests_app.models import FINAL_STATES, MigrationRequest, Plan, State, TenantNotifications

log = logging.getLogger(__name__)

MAX_FAILURES_LISTED = 10


def public_url(path: str) -> str:
    """``path`` as an absolute URL on ``LEGACYFLO_PUBLIC_URL`` (the path alone when unset)."""
    return f"{settings.LEGACYFLO_PUBLIC_URL}{path}" if settings.LEGACYFLO_PUBLIC_URL else path


def recipients(tenant, own) -> list[str]:
    default = TenantNotifications.objects.filter(tenant=tenant).values_list("notify", flat=True).first() or []
    out: list[str] = []
    for address in [*(own or []), *default]:
        if address and address.lower() not in out:
            out.append(address.lower())
    return out


def _scrubbed(exc: Exception) -> str:
    text = f"{exc.__class__.__name__}: {exc}"
    for secret in (settings.EMAIL_HOST_PASSWORD,):
        if secret:
            text = text.replace(secret, "***")
    return text


def send(to: list[str], subject: str, template: str, context: dict) -> bool:
    """Send ``template``.txt and .html to ``to``; False (logged) when the mail could not go."""
    if not to:
        return False
    try:
        text = render_to_string(f"requests_app/mail/{template}.txt", context)
        html = render_to_string(f"requests_app/mail/{template}.html", context)
        message = EmailMultiAlternatives(subject=subject, body=text, to=to,
                                         connection=get_connection(timeout=settings.EMAIL_TIMEOUT))
        message.attach_alternative(html, "text/html")
        message.send()
        return True
    except Exception as exc:  # noqa: BLE001 - a mail never fails a run
        log.warning("mail %r to %d recipient(s) was not sent: %s", subject, len(to), _scrubbed(exc))
        return False


# ---- runs -----------------------------------------------------------------------------------------
def _iso(value: str | None):
    try:
        return datetime.fromisoformat(value).astimezone(UTC) if value else None
    except ValueError:
        return None


def run_context(req: MigrationRequest) -> dict:
    """What a run's mail says: state, counts per folder, totals, archives, first failures, link."""
    from requests_app import reports
    from requests_app.templatetags.lf import duration

    report = reports.folder_table(req)
    failures = list(reports.failures(req).values("folder", "subject", "message_id", "status", "error")
                    [:MAX_FAILURES_LISTED]) if req.is_final else []
    archives = reports.archive_files(req) if req.is_final else []
    summary = req.result.get("summary") or {}
    from requests_app.types import get_type

    slug = req.tenant.slug
    rtype = get_type(req.request_type)
    return {
        "kind": "restore" if rtype is not None and rtype.is_restore else "backup",
        "req": req, "tenant": req.tenant, "state": req.get_state_display(), "report": report,
        "totals": report["totals"], "failures": failures, "archives": archives,
        "archive_bytes": sum(int(a.get("size") or 0) for a in archives),
        "new": summary.get("new", report["totals"]["exported"]),
        "duration": duration(req.started_at, req.finished_at),
        "error": req.error, "plan": req.plan,
        "report_url": public_url(reverse("requests_app:report", kwargs={"tenant_slug": slug,
                                                                        "request_uuid": req.uuid})),
        "request_url": public_url(reverse("requests_app:detail", kwargs={"tenant_slug": slug,
                                                                         "request_uuid": req.uuid})),
    }


def _mark(pk: int, expected: tuple[str, ...], value: str) -> bool:
    """Set ``notified`` to ``value`` if it is one of ``expected`` (compare-and-set: one mail per
    run even if two processes hear the same transition)."""
    return bool(MigrationRequest.objects.filter(pk=pk, notified__in=expected).update(notified=value))


def on_transition(transition) -> None:
    try:
        _on_transition(transition)
    except Exception:  # noqa: BLE001 - see the module docstring
        log.exception("notification for request %s failed", transition.request_id)


def _on_transition(transition) -> None:
    before, after = transition.before, transition.after
    if before in FINAL_STATES and after == State.QUEUED:  # a Retry: a new run, new mails
        MigrationRequest.objects.filter(pk=transition.request_id).update(notified="")
        return
    if before == after:
        return
    if after == State.RUNNING:
        if not _mark(transition.request_id, ("",), "started"):
            return
        req = _load(transition.request_id)
        to = recipients(req.tenant, req.notify) if req is not None else []
        if to:  # nobody to tell: the mail's report (a query over the records) is not built
            send(to, f"[LegacyFlo] Started: {req}", "run_started", run_context(req))
    elif after in FINAL_STATES:
        if not _mark(transition.request_id, ("", "started"), "ended"):
            return
        req = _load(transition.request_id)
        to = recipients(req.tenant, req.notify) if req is not None else []
        if to:
            send(to, f"[LegacyFlo] {req.get_state_display()}: {req}", "run_ended", run_context(req))


def _load(pk: int) -> MigrationRequest | None:
    return MigrationRequest.objects.select_related("tenant", "bucket", "plan").filter(pk=pk).first()


# ---- plans ----------------------------------------------------------------------------------------
def plan_alert(plan: Plan, *, what: str, slot_at, detail: str = "", req: MigrationRequest | None = None) -> bool:
    """Mail the plan's recipients that its slot ``slot_at`` went wrong (``what``: a sentence)."""
    slug = plan.tenant.slug
    context = {
        "plan": plan, "tenant": plan.tenant, "what": what, "slot_at": slot_at, "detail": detail, "req": req,
        "plan_url": public_url(reverse("plans:detail", kwargs={"tenant_slug": slug,
                                                                           "plan_uuid": plan.uuid})),
        "request_url": public_url(reverse("requests_app:detail", kwargs={"tenant_slug": slug,
                                                                         "request_uuid": req.uuid})) if req else "",
    }
    return send(recipients(plan.tenant, plan.notify), f"[LegacyFlo] Plan {plan}: {what}", "plan_alert", context)

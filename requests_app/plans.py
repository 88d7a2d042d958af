"""Plans: a backup series on a schedule. Create, edit, pause, resume, delete, and run what is due.

    plans_run_due(at) ─► for each plan with next_run_at <= at, not paused:
        lock the row (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: its one writer at a time)
        ─► move next_run_at past ``at`` (compare-and-set on the old value)
        ─► missed slots collapsed? recorded ─► previous run still going? slot skipped, recorded
        ─► else submit one incremental request of the plan's series (``services.request_submit``)
           ─► refused (bucket no longer verified, destination held...)? failed to start,
              recorded and mailed

Invariants:
- Each slot is submitted at most once, however many schedulers call ``plans_run_due`` at once:
  the slot is taken by the UPDATE that moves ``next_run_at`` only if it still holds the value
  read, in the transaction that submits the run (a second scheduler's UPDATE matches no row).
- A plan that missed several slots (the scheduler was down) runs once, for the latest slot.
- A plan never has two runs going: a slot whose previous run is queued or running is skipped.
- A run not started ``LEGACYFLO_PLAN_LATE_SECONDS`` after its slot mails the plan's recipients
  once (``check_late``, a LATE event per request, unique in the database).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.audit import audit
from requests_app import notifications, schedule
from requests_app.models import (
    ACTIVE_STATES,
    MigrationRequest,
    Plan,
    PlanEvent,
    PlanEventKind,
    State,
)
from requests_app.types import RequestType, get_type

log = logging.getLogger(__name__)

SCHEDULER_ACTOR = "scheduler"
_NOT_IN_TEMPLATE = ("bucket", "source_password", "notify", "schedule", "connection", "auth_method",
                    "include_spam_trash")


# ---- the template: a form's cleaned data, kept on the plan ------------------------------------
def template_of(data: dict) -> dict:
    """What a plan keeps of a form's cleaned ``data`` (JSON: dates as ISO text; no bucket, no
    password: those have their own columns)."""
    out = {}
    for name, value in data.items():
        if name in _NOT_IN_TEMPLATE:
            continue
        out[name] = value.isoformat() if isinstance(value, dt.date) else value
    return out


def request_data(plan: Plan) -> dict:
    """The cleaned data of the plan's next run, as the form gave it."""
    data = dict(plan.template)
    for name in ("since", "before"):
        if data.get(name):
            data[name] = dt.date.fromisoformat(data[name])
    data.update(bucket=plan.bucket, source_password=plan.source_password, notify=list(plan.notify))
    return data


def form_initial(plan_or_request) -> dict:
    """The plan form's initial values for an existing plan, or for "Schedule this" from a request
    (never the password: a blank password keeps the stored one)."""
    from requests_app.models import MigrationRequest

    obj = plan_or_request
    if isinstance(obj, MigrationRequest):
        fields = {k: getattr(obj, k) for k in ("title", "source_server", "source_port", "source_security",
                                               "source_user", "s3_prefix", "file_name")}
        fields.update(folders=";".join(obj.folders), exclude_folders=";".join(obj.exclude_folders),
                      since=obj.since, before=obj.before, bucket=str(obj.bucket.uuid), notify="; ".join(obj.notify))
        options = obj.options
    else:
        t = obj.template
        fields = {k: t.get(k, "") for k in ("title", "source_server", "source_port", "source_security",
                                            "source_user", "s3_prefix", "file_name", "since", "before")}
        fields.update(folders=";".join(t.get("folders") or []), exclude_folders=";".join(t.get("exclude_folders") or []),
                      bucket=str(obj.bucket.uuid), notify="; ".join(obj.notify), schedule=obj.schedule)
        options = t.get("options") or {}
    if options.get("connection"):
        fields["connection"] = options["connection"]
    if "include_spam_trash" in options:
        fields["include_spam_trash"] = "yes" if options["include_spam_trash"] else ""
    if options.get("auth_method"):
        fields["auth_method"] = options["auth_method"]
    return {k: v for k, v in fields.items() if v not in (None, "")}


# ---- writes ---------------------------------------------------------------------------------------
def _same_destination(plan_qs, data: dict):
    prefix, name = (data.get("s3_prefix") or "").casefold(), data["file_name"].casefold()
    for other in plan_qs.filter(bucket=data["bucket"]):
        if (other.template.get("s3_prefix") or "").casefold() == prefix and \
                (other.template.get("file_name") or "").casefold() == name:
            return other
    return None


def _check(tenant, rtype: RequestType, data: dict, *, exclude_pk=None) -> None:
    if rtype.source not in ("imap", "gmail_api", "graph"):
        raise ValidationError(f"{rtype.code} is not a backup type: only backups can be scheduled.")
    others = Plan.objects.for_tenant(tenant)
    if exclude_pk:
        others = others.exclude(pk=exclude_pk)
    other = _same_destination(others, data)
    if other is not None:
        raise ValidationError(f"The plan “{other}” already backs up into {data['bucket'].name}/"
                              f"{data.get('s3_prefix') + '/' if data.get('s3_prefix') else ''}{data['file_name']}: "
                              "choose another file name or prefix.")


@transaction.atomic
def plan_create(*, tenant, actor, rtype: RequestType, data: dict, schedule_text: str, notify=(),
                now: dt.datetime | None = None, request=None) -> Plan:
    """A plan from a form's cleaned ``data``; its first slot is the schedule's next after now."""
    parsed = schedule.parse(schedule_text)
    _check(tenant, rtype, data)
    plan = Plan.objects.create(
        tenant=tenant, request_type=rtype.code, title=data.get("title") or data["source_user"],
        template=template_of(data), source_password=data.get("source_password", ""), bucket=data["bucket"],
        schedule=str(parsed), next_run_at=schedule.next_slot_after(parsed, now or timezone.now()),
        notify=list(notify), created_by=actor if getattr(actor, "is_authenticated", False) else None)
    audit(tenant=tenant, actor=actor, action="plan.create", target=str(plan.uuid),
          detail={"type": rtype.code, "mailbox": data["source_user"], "schedule": plan.schedule}, request=request)
    return plan


@transaction.atomic
def plans_create_many(*, tenant, actor, rows) -> list[Plan]:
    """All or nothing: ``rows`` are (ParsedRow, schedule text); one bad row creates nothing."""
    errors, plans, seen = [], [], {}
    for row, schedule_text in rows:
        try:
            with transaction.atomic():
                key = (row.data["bucket"].pk, (row.data.get("s3_prefix") or "").casefold(),
                       row.data["file_name"].casefold())
                if key in seen:
                    raise ValidationError(f"same bucket, prefix and file name as line {seen[key]}.")
                seen[key] = row.line
                plans.append(plan_create(tenant=tenant, actor=actor, rtype=row.rtype, data=row.data,
                                         schedule_text=schedule_text, notify=row.data.get("notify") or []))
        except schedule.ScheduleError as exc:
            errors.append(f"Line {row.line}: schedule: {exc}")
        except ValidationError as exc:
            errors.extend(f"Line {row.line}: {message}" for message in exc.messages)
    if errors:
        raise ValidationError(errors)
    return plans


@transaction.atomic
def plan_update(*, plan: Plan, actor, data: dict, schedule_text: str, notify=(), request=None) -> Plan:
    """New settings; a blank password keeps the stored one; a changed schedule starts from its
    next slot after now."""
    plan = Plan.objects.select_for_update().get(pk=plan.pk)
    parsed = schedule.parse(schedule_text)
    _check(plan.tenant, get_type(plan.request_type), data, exclude_pk=plan.pk)
    if str(parsed) != plan.schedule:
        plan.schedule, plan.next_run_at = str(parsed), schedule.next_slot_after(parsed, timezone.now())
    plan.title = data.get("title") or data["source_user"]
    plan.template, plan.bucket, plan.notify = template_of(data), data["bucket"], list(notify)
    if data.get("source_password"):
        plan.source_password = data["source_password"]
    plan.save()
    audit(tenant=plan.tenant, actor=actor, action="plan.update", target=str(plan.uuid),
          detail={"schedule": plan.schedule}, request=request)
    return plan


@transaction.atomic
def plan_set_paused(*, plan: Plan, actor, paused: bool, request=None) -> Plan:
    """Pause, or resume: a resumed plan runs at its next slot after now (not the ones it missed)."""
    plan = Plan.objects.select_for_update().get(pk=plan.pk)
    plan.paused = paused
    if not paused:
        plan.next_run_at = schedule.next_slot_after(schedule.parse(plan.schedule), timezone.now())
    plan.save(update_fields=["paused", "next_run_at", "updated_at"])
    audit(tenant=plan.tenant, actor=actor, action="plan.pause" if paused else "plan.resume",
          target=str(plan.uuid), request=request)
    return plan


@transaction.atomic
def plan_delete(*, plan: Plan, actor, request=None) -> None:
    """The plan goes; its runs stay (their ``plan`` becomes empty), a run going finishes."""
    audit(tenant=plan.tenant, actor=actor, action="plan.delete", target=str(plan.uuid),
          detail={"title": str(plan)}, request=request)
    plan.delete()


# ---- the scheduler --------------------------------------------------------------------------------
def plans_run_due(at: dt.datetime | None = None) -> list[MigrationRequest]:
    """Submit one request for each plan due at ``at`` (default now); the requests submitted."""
    at = at or timezone.now()
    submitted = []
    due = (Plan.objects.filter(paused=False, next_run_at__lte=at).order_by("next_run_at", "pk")
           .values_list("pk", flat=True))
    for pk in list(due):
        try:
            req = _run_slot(pk, at)
        except Exception:  # noqa: BLE001 - one plan's bug must not stop the others
            log.exception("plan %s: its slot could not be handled", pk)
            continue
        if req is not None:
            submitted.append(req)
    check_late(at)
    return submitted


def _lock_due(pk: int, at):
    qs = Plan.objects.filter(pk=pk, paused=False, next_run_at__lte=at)
    if connection.features.has_select_for_update_skip_locked:
        # Another scheduler has this plan: leave it. Only the plan's row (``of``): a lock on its
        # tenant or bucket, taken by anything else, must not make every scheduler skip it.
        qs = qs.select_for_update(skip_locked=True, of=("self",))
    return qs.select_related("tenant", "bucket").first()


def _run_slot(pk: int, at) -> MigrationRequest | None:
    with transaction.atomic():
        plan = _lock_due(pk, at)
        if plan is None:
            return None
        parsed = schedule.parse(plan.schedule)
        slot = schedule.last_slot_at_or_before(parsed, at)
        taken = Plan.objects.filter(pk=pk, next_run_at=plan.next_run_at).update(
            next_run_at=schedule.next_slot_after(parsed, at))
        if not taken:
            return None
        missed = schedule.slots_between(parsed, plan.next_run_at, at)
        if missed > 1:
            PlanEvent.objects.create(plan=plan, kind=PlanEventKind.COLLAPSED, slot_at=slot,
                                     detail=f"{missed} slots from {plan.next_run_at:%Y-%m-%d %H:%M} UTC were missed "
                                            "(the scheduler was not running); one run for them all.")
        previous = plan.runs.filter(state__in=ACTIVE_STATES).order_by("-pk").first()
        if previous is not None:
            PlanEvent.objects.create(plan=plan, kind=PlanEventKind.SKIPPED, slot_at=slot, request=previous,
                                     detail=f"The run of {previous.created_at:%Y-%m-%d %H:%M} UTC is still "
                                            f"{previous.get_state_display().lower()}.")
            return None
        rtype = get_type(plan.request_type)
        try:
            if rtype is None:
                raise ValidationError(f"The request type {plan.request_type} is not available on this portal.")
            if plan.bucket.status != "verified":
                raise ValidationError(f"The bucket {plan.bucket.name} is not verified: verify it again.")
            with transaction.atomic():
                req = _submit(plan, rtype)
        except ValidationError as exc:
            reason = " ".join(exc.messages)
            PlanEvent.objects.create(plan=plan, kind=PlanEventKind.FAILED_TO_START, slot_at=slot, detail=reason)
            transaction.on_commit(lambda: notifications.plan_alert(plan, what="its run could not start",
                                                                    slot_at=slot, detail=reason))
            return None
        PlanEvent.objects.create(plan=plan, kind=PlanEventKind.SUBMITTED, slot_at=slot, request=req)
        return req


def _submit(plan: Plan, rtype: RequestType) -> MigrationRequest:
    from requests_app.services import request_submit

    return request_submit(tenant=plan.tenant, actor=SCHEDULER_ACTOR, rtype=rtype, data=request_data(plan),
                          fields={"plan": plan, "incremental": True})


def check_late(at: dt.datetime, *, window: dt.timedelta = dt.timedelta(days=7)) -> int:
    """Mail the plans whose run has not started ``LEGACYFLO_PLAN_LATE_SECONDS`` after its slot
    (or started only later); once per run. How many were mailed."""
    from django.conf import settings

    late = dt.timedelta(seconds=settings.LEGACYFLO_PLAN_LATE_SECONDS)
    candidates = (PlanEvent.objects.filter(kind=PlanEventKind.SUBMITTED, slot_at__lt=at - late,
                                           slot_at__gte=at - window, request__isnull=False)
                  .select_related("plan__tenant", "request")
                  .exclude(request__in=PlanEvent.objects.filter(kind=PlanEventKind.LATE).values("request")))
    mailed = 0
    for event in candidates:
        req = event.request
        started = req.started_at
        if started is not None and started <= event.slot_at + late:
            continue
        if started is None and req.state != State.QUEUED:
            continue  # cancelled or refused before it ran: its end mail said so
        detail = (f"It started at {started:%Y-%m-%d %H:%M} UTC." if started else
                  "It is still queued" + (" (the tenant's limit of running requests is reached)."
                                          if req.deferred_at else "; check that the workers are running."))
        try:
            with transaction.atomic():
                PlanEvent.objects.create(plan=event.plan, kind=PlanEventKind.LATE, slot_at=event.slot_at,
                                         request=req, detail=detail)
        except IntegrityError:  # another scheduler recorded it first
            continue
        notifications.plan_alert(event.plan, what="its run did not start within an hour of its slot",
                                 slot_at=event.slot_at, detail=detail, req=req)
        mailed += 1
    return mailed

"""Writes for migration requests: submit (one or many), cancel, retry. Audited.

Cancel and retry are transitions of ``lifecycle``; this module audits them and enqueues.

A request is enqueued only after its row is committed (``transaction.on_commit``), so a worker
never looks for a row that does not exist yet.
"""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from accounts.audit import audit
from connectors.pipeline.archivekeys import file_name_problem
from requests_app import lifecycle
from requests_app.models import ACTIVE_STATES, MigrationRequest, RequestBatch
from requests_app.selectors import conflict_message, destination_holders_many
from requests_app.series import next_run_numbers, same_series, series_key_for
from requests_app.types import RequestType


def _destination_conflicts(tenant, pending: list[MigrationRequest]) -> list[MigrationRequest | None]:
    """For each new (unsaved) request, the newest request holding its destination, or None.

    An earlier run of the same incremental series is no holder unless it is still queued or
    running (``selectors.destination_conflict``): the next run of a series writes its own keys."""
    holders = destination_holders_many(tenant, [(r.bucket, r.s3_prefix, r.file_name) for r in pending])
    by_pk = MigrationRequest.objects.in_bulk({pk for pks in holders for pk in pks})
    out: list[MigrationRequest | None] = []
    for req, pks in zip(pending, holders, strict=True):
        rows = [by_pk[pk] for pk in pks if pk in by_pk]
        blocking = [o for o in rows if not same_series(req, o) or o.state in ACTIVE_STATES]
        out.append(blocking[-1] if blocking else None)
    return out


def _new_request(*, tenant, actor, rtype: RequestType, data: dict, options: dict | None = None,
                 job_id: str = "") -> MigrationRequest:
    """The row for one submission, not saved yet (its file name checked)."""
    problem = file_name_problem(data.get("file_name") or "")
    if problem:
        raise ValidationError(problem)
    req = MigrationRequest(
        job_id=job_id,
        tenant=tenant, request_type=rtype.code, title=data.get("title") or data["source_user"],
        source_server=data.get("source_server", ""), source_port=data.get("source_port"),
        source_security=data.get("source_security") or rtype.security, source_user=data["source_user"],
        source_password=data.get("source_password", ""),
        options={**data.get("options", {}), **(options or {})},
        folders=data.get("folders", []), exclude_folders=data.get("exclude_folders", []),
        since=data.get("since"), before=data.get("before"),
        bucket=data["bucket"], s3_prefix=data.get("s3_prefix", ""), file_name=data["file_name"],
        archive_key=data.get("archive_key", ""), target_folder=data.get("target_folder", ""),
        notify=list(data.get("notify") or []),
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        incremental=bool(data.get("incremental")),
    )
    if req.incremental:
        req.series_key = series_key_for(tenant=tenant, rtype=rtype, data=data)
    return req


def _number_runs(tenant, pending: list[MigrationRequest]) -> None:
    """Each incremental row's run number in its series (``requests_app.series``)."""
    numbers = next_run_numbers(tenant, [r.series_key for r in pending if r.incremental])
    for req in pending:
        if req.incremental:
            req.options = {**req.options, "series_run": numbers[req.series_key]}


@sensitive_variables()
def _build(*, tenant, actor, rtype: RequestType, data: dict, fields: dict | None = None) -> MigrationRequest:
    req = _new_request(tenant=tenant, actor=actor, rtype=rtype, data=data)
    for name, value in (fields or {}).items():  # set before the destination check (a plan's series)
        setattr(req, name, value)
    if req.incremental and not req.series_key:  # made incremental by ``fields`` (a plan's run)
        req.series_key = series_key_for(tenant=tenant, rtype=rtype, data=data)
    holder = _destination_conflicts(tenant, [req])[0]
    if holder is not None:
        raise ValidationError(conflict_message(req, holder))
    _number_runs(tenant, [req])
    req.save()
    return req


def _enqueue_on_commit(req: MigrationRequest) -> None:
    from requests_app.queue import enqueue_request

    transaction.on_commit(lambda: enqueue_request(req.pk))


@sensitive_variables()
@transaction.atomic
def request_submit(*, tenant, actor, rtype: RequestType, data: dict, request=None,
                   fields: dict | None = None) -> MigrationRequest:
    """One request from a form's cleaned ``data``; ``fields`` sets row fields the form does not
    have (a plan's run: ``plan``, ``incremental``)."""
    req = _build(tenant=tenant, actor=actor, rtype=rtype, data=data, fields=fields)
    audit(tenant=tenant, actor=actor, action="request.submit", target=str(req.uuid),
          detail={"type": rtype.code, "mailbox": req.source_user, "bucket": req.bucket.name}, request=request)
    _enqueue_on_commit(req)
    return req


@sensitive_variables()
@transaction.atomic
def requests_submit_many(*, tenant, actor, rows, request=None, source: str = "csv",
                         name: str = "") -> list[MigrationRequest]:
    """All or nothing: one failing row submits nothing. The requests form one RequestBatch
    (``name``: the file's), saved with them.

    The checks and the inserts are batched (one conflict query per 500 prefixes, bulk inserts,
    one enqueue pipeline after the commit), so the documented maximum of rows goes in one web
    request; every row gets the same checks as ``request_submit``.
    """
    from requests_app.queue import enqueue_jobs, new_job_id

    batch = uuid.uuid4().hex[:12]
    errors = []
    pending = []
    for row in rows:
        try:
            pending.append(_new_request(tenant=tenant, actor=actor, rtype=row.rtype, data=row.data,
                                        options={"batch": batch}, job_id=new_job_id()))
        except ValidationError as exc:
            errors.extend(f"Line {row.line}: {message}" for message in exc.messages)
    if errors:
        raise ValidationError(errors)
    conflicts = _destination_conflicts(tenant, pending)
    lines: dict[tuple, int] = {}
    for row, req, conflict in zip(rows, pending, conflicts, strict=True):
        key = (req.bucket.name, req.s3_prefix.casefold(), req.file_name.casefold())
        if conflict:
            errors.append(f"Line {row.line}: {conflict_message(req, conflict)}")
        elif key in lines:
            errors.append(f"Line {row.line}: same bucket, prefix and file name as line {lines[key]}.")
        lines.setdefault(key, row.line)
    if errors:
        raise ValidationError(errors)
    _number_runs(tenant, pending)
    batch_row = RequestBatch.objects.create(
        tenant=tenant, name=name[:255], source=source, count=len(pending),
        created_by=actor if getattr(actor, "is_authenticated", False) else None)
    for req in pending:
        req.batch = batch_row
    created = MigrationRequest.objects.bulk_create(pending, batch_size=500)
    audit(tenant=tenant, actor=actor, action="request.submit_bulk", target=batch,
          detail={"count": len(created), "source": source, "batch": str(batch_row.uuid)}, request=request)
    jobs = [(req.pk, req.job_id) for req in created]
    transaction.on_commit(lambda: enqueue_jobs(jobs))
    return created


@transaction.atomic
def request_cancel(*, req: MigrationRequest, actor, request=None) -> MigrationRequest:
    """A queued request ends at once; a running one stops at the next message and aborts its upload."""
    req = lifecycle.cancel(req.pk)
    audit(tenant=req.tenant, actor=actor, action="request.cancel", target=str(req.uuid), request=request)
    return req


@transaction.atomic
def request_retry(*, req: MigrationRequest, actor, request=None) -> MigrationRequest:
    """Re-queue a failed, cancelled or interrupted request; it resumes from its checkpoint."""
    req = lifecycle.retry(req.pk)
    audit(tenant=req.tenant, actor=actor, action="request.retry", target=str(req.uuid), request=request)
    _enqueue_on_commit(req)
    return req


BULK_ACTIONS = {"cancel": request_cancel, "retry": request_retry}
BULK_MAX = 500  # requests per bulk action (one page of the list holds at most 100)


def requests_bulk_action(*, tenant, actor, uuids, action: str, request=None) -> tuple[int, list[str]]:
    """Cancel or retry each request named by ``uuids`` (only the tenant's: another tenant's
    UUID matches nothing), each through its own service and rules. Returns how many were
    done and, for the others, why not ("title: reason")."""
    service = BULK_ACTIONS[action]
    done, refused = 0, []
    for req in MigrationRequest.objects.for_tenant(tenant).filter(uuid__in=list(uuids)[:BULK_MAX]):
        try:
            service(req=req, actor=actor, request=request)
            done += 1
        except ValidationError as exc:
            refused.append(f"{req.title or req.source_user}: {' '.join(exc.messages)}")
    return done, refused

"""Writes for migration requests: submit (one or many), cancel, retry. Audited.

A request is enqueued only after its row is committed (``transaction.on_commit``), so a worker
never looks for a row that does not exist yet.
"""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from accounts.audit import audit
from connectors.pipeline.archivekeys import file_name_problem
from requests_app.models import ACTIVE_STATES, MigrationRequest, State
from requests_app.selectors import destination_holders, destination_holders_many
from requests_app.types import RequestType

TERMINAL_RETRYABLE = (State.FAILED, State.CANCELLED, State.COMPLETED_WITH_ERRORS)


def is_retryable(req: MigrationRequest) -> bool:
    """Whether ``request_retry`` accepts ``req``: the Retry button is shown exactly then."""
    from requests_app.recovery import is_interrupted

    return req.state in TERMINAL_RETRYABLE or is_interrupted(req)


def archive_base_key(req: MigrationRequest) -> str:
    """``PREFIX/FILE`` without extension; the archive, report and summary sit side by side."""
    return f"{req.s3_prefix}/{req.file_name}" if req.s3_prefix else req.file_name


def destination_conflict(req: MigrationRequest, *, claiming: bool = False) -> MigrationRequest | None:
    """Another request holding ``req``'s PREFIX/FILE (``selectors.destination_holders``): ``req``
    must not run into it, or it would overwrite or delete that request's archive. When a worker
    claims ``req`` (``claiming``), a live request submitted after it does not count: that one is
    refused when it is claimed, so of two submitted at once exactly the first runs."""
    holders = destination_holders(req.tenant, bucket=req.bucket, s3_prefix=req.s3_prefix,
                                  file_name=req.file_name)
    for other in holders:
        if other.pk == req.pk:
            continue
        if claiming and other.state in ACTIVE_STATES and other.pk > req.pk and "archives" not in other.checkpoint:
            continue
        return other
    return None


def _destination_conflicts(tenant, pending: list[MigrationRequest]) -> list[MigrationRequest | None]:
    """For each new (unsaved) request, the newest request holding its destination, or None."""
    holders = destination_holders_many(tenant, [(r.bucket, r.s3_prefix, r.file_name) for r in pending])
    newest = [pks[-1] if pks else None for pks in holders]
    by_pk = MigrationRequest.objects.in_bulk({pk for pk in newest if pk})
    return [by_pk.get(pk) if pk else None for pk in newest]


def conflict_message(req: MigrationRequest, holder: MigrationRequest) -> str:
    return (f"{req.bucket.name}/{archive_base_key(holder)}.* is already written by request "
            f"“{holder.title or holder.source_user}”: choose another file name or prefix.")


def _new_request(*, tenant, actor, rtype: RequestType, data: dict, options: dict | None = None,
                 job_id: str = "") -> MigrationRequest:
    """The row for one submission, not saved yet (its file name checked)."""
    problem = file_name_problem(data.get("file_name") or "")
    if problem:
        raise ValidationError(problem)
    return MigrationRequest(
        job_id=job_id,
        tenant=tenant, request_type=rtype.code, title=data.get("title") or data["source_user"],
        source_server=data.get("source_server", ""), source_port=data.get("source_port"),
        source_security=data.get("source_security") or rtype.security, source_user=data["source_user"],
        source_password=data.get("source_password", ""),
        options={**data.get("options", {}), **(options or {})},
        folders=data.get("folders", []), exclude_folders=data.get("exclude_folders", []),
        since=data.get("since"), before=data.get("before"),
        bucket=data["bucket"], s3_prefix=data.get("s3_prefix", ""), file_name=data["file_name"],
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )


@sensitive_variables()
def _build(*, tenant, actor, rtype: RequestType, data: dict) -> MigrationRequest:
    req = _new_request(tenant=tenant, actor=actor, rtype=rtype, data=data)
    holder = _destination_conflicts(tenant, [req])[0]
    if holder is not None:
        raise ValidationError(conflict_message(req, holder))
    req.save()
    return req


def _enqueue_on_commit(req: MigrationRequest) -> None:
    from requests_app.queue import enqueue_request

    transaction.on_commit(lambda: enqueue_request(req.pk))


@sensitive_variables()
@transaction.atomic
def request_submit(*, tenant, actor, rtype: RequestType, data: dict, request=None) -> MigrationRequest:
    req = _build(tenant=tenant, actor=actor, rtype=rtype, data=data)
    audit(tenant=tenant, actor=actor, action="request.submit", target=str(req.uuid),
          detail={"type": rtype.code, "mailbox": req.source_user, "bucket": req.bucket.name}, request=request)
    _enqueue_on_commit(req)
    return req


@sensitive_variables()
@transaction.atomic
def requests_submit_many(*, tenant, actor, rows, request=None, source: str = "csv") -> list[MigrationRequest]:
    """All or nothing: one failing row submits nothing.

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
    created = MigrationRequest.objects.bulk_create(pending, batch_size=500)
    audit(tenant=tenant, actor=actor, action="request.submit_bulk", target=batch,
          detail={"count": len(created), "source": source}, request=request)
    jobs = [(req.pk, req.job_id) for req in created]
    transaction.on_commit(lambda: enqueue_jobs(jobs))
    return created


@transaction.atomic
def request_cancel(*, req: MigrationRequest, actor, request=None) -> MigrationRequest:
    """A queued request ends at once; a running one stops at the next message and aborts its upload."""
    req = MigrationRequest.objects.select_for_update().get(pk=req.pk)
    if req.state not in ACTIVE_STATES:
        raise ValidationError(f"The request is {req.get_state_display().lower()} and cannot be cancelled.")
    req.cancel_requested = True
    fields = ["cancel_requested"]
    if req.state == State.QUEUED and not req.checkpoint.get("upload"):  # else its run removes the upload
        req.state = State.CANCELLED
        req.finished_at = timezone.now()
        fields += ["state", "finished_at"]
    req.save(update_fields=fields)
    audit(tenant=req.tenant, actor=actor, action="request.cancel", target=str(req.uuid), request=request)
    return req


@transaction.atomic
def request_retry(*, req: MigrationRequest, actor, request=None) -> MigrationRequest:
    """Re-queue a failed, cancelled or interrupted request; it resumes from its checkpoint."""
    req = MigrationRequest.objects.select_for_update().get(pk=req.pk)
    if not is_retryable(req):
        raise ValidationError(f"The request is {req.get_state_display().lower()}; only failed, cancelled, "
                              "incomplete or interrupted requests can be retried.")
    holder = destination_conflict(req)
    if holder is not None:  # submitted while this one had failed: its archive must not be overwritten
        raise ValidationError(f"{conflict_message(req, holder)} This request cannot be retried into it; "
                              "submit it again under another file name or prefix.")
    if req.state == State.COMPLETED_WITH_ERRORS:
        # The archive is complete and cannot be appended to: export again from scratch. Its keys
        # stay (checkpoint["archives"]): the new run replaces them only when it commits.
        req.records.all().delete()
        req.parts.all().delete()
        req.checkpoint = {k: v for k, v in req.checkpoint.items() if k != "upload"}
    req.state = State.QUEUED
    req.cancel_requested = False
    req.error = ""
    req.finished_at = None
    req.save(update_fields=["state", "cancel_requested", "error", "finished_at", "checkpoint"])
    audit(tenant=req.tenant, actor=actor, action="request.retry", target=str(req.uuid), request=request)
    _enqueue_on_commit(req)
    return req

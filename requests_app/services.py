"""Writes for migration requests: submit (one or many), cancel, retry. Audited.

A request is enqueued only after its row is committed (``transaction.on_commit``), so a worker
never looks for a row that does not exist yet.
"""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.audit import audit
from requests_app.models import ACTIVE_STATES, MigrationRequest, State
from requests_app.types import RequestType

TERMINAL_RETRYABLE = (State.FAILED, State.CANCELLED, State.COMPLETED_WITH_ERRORS)


def is_retryable(req: MigrationRequest) -> bool:
    """Whether ``request_retry`` accepts ``req``: the Retry button is shown exactly then."""
    from requests_app.recovery import is_interrupted

    return req.state in TERMINAL_RETRYABLE or is_interrupted(req)


def archive_base_key(req: MigrationRequest) -> str:
    """``PREFIX/FILE`` without extension; the archive, report and summary sit side by side."""
    return f"{req.s3_prefix}/{req.file_name}" if req.s3_prefix else req.file_name


def _destination_conflict(tenant, bucket, s3_prefix: str, file_name: str):
    """Another live or finished request writing under the same PREFIX/FILE (its archive, report or
    summary would be overwritten: ZIP and PST share FILE.report.csv and FILE.summary.json)."""
    return (MigrationRequest.objects.for_tenant(tenant)
            .filter(bucket=bucket, s3_prefix=s3_prefix, file_name__iexact=file_name)
            .exclude(state__in=[State.FAILED, State.CANCELLED]).first())


def _build(*, tenant, actor, rtype: RequestType, data: dict) -> MigrationRequest:
    conflict = _destination_conflict(tenant, data["bucket"], data["s3_prefix"], data["file_name"])
    if conflict:
        raise ValidationError(
            f"{data['bucket'].name}/{archive_base_key(conflict)}.* is already written by request "
            f"“{conflict.title or conflict.source_user}”: choose another file name or prefix.")
    req = MigrationRequest(
        tenant=tenant, request_type=rtype.code, title=data.get("title") or data["source_user"],
        source_server=data.get("source_server", ""), source_port=data.get("source_port"),
        source_security=data.get("source_security") or rtype.security, source_user=data["source_user"],
        source_password=data.get("source_password", ""),
        options={k: v for k, v in data.get("options", {}).items()},
        folders=data.get("folders", []), exclude_folders=data.get("exclude_folders", []),
        since=data.get("since"), before=data.get("before"),
        bucket=data["bucket"], s3_prefix=data.get("s3_prefix", ""), file_name=data["file_name"],
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    req.save()
    return req


def _enqueue_on_commit(req: MigrationRequest) -> None:
    from requests_app.queue import enqueue_request

    transaction.on_commit(lambda: enqueue_request(req.pk))


@transaction.atomic
def request_submit(*, tenant, actor, rtype: RequestType, data: dict, request=None) -> MigrationRequest:
    req = _build(tenant=tenant, actor=actor, rtype=rtype, data=data)
    audit(tenant=tenant, actor=actor, action="request.submit", target=str(req.uuid),
          detail={"type": rtype.code, "mailbox": req.source_user, "bucket": req.bucket.name}, request=request)
    _enqueue_on_commit(req)
    return req


@transaction.atomic
def requests_submit_many(*, tenant, actor, rows, request=None, source: str = "csv") -> list[MigrationRequest]:
    """All or nothing: one failing row rolls the whole batch back."""
    batch = uuid.uuid4().hex[:12]
    created = []
    errors = []
    for row in rows:
        try:
            req = _build(tenant=tenant, actor=actor, rtype=row.rtype, data=row.data)
        except ValidationError as exc:
            errors.append(f"Line {row.line}: {' '.join(exc.messages)}")
            continue
        req.options = {**req.options, "batch": batch}
        req.save(update_fields=["options"])
        created.append(req)
    if errors:
        raise ValidationError(errors)
    audit(tenant=tenant, actor=actor, action="request.submit_bulk", target=batch,
          detail={"count": len(created), "source": source}, request=request)
    for req in created:
        _enqueue_on_commit(req)
    return created


@transaction.atomic
def request_cancel(*, req: MigrationRequest, actor, request=None) -> MigrationRequest:
    """A queued request ends at once; a running one stops at the next message and aborts its upload."""
    req = MigrationRequest.objects.select_for_update().get(pk=req.pk)
    if req.state not in ACTIVE_STATES:
        raise ValidationError(f"The request is {req.get_state_display().lower()} and cannot be cancelled.")
    req.cancel_requested = True
    fields = ["cancel_requested"]
    if req.state == State.QUEUED and not req.checkpoint.get("upload_id"):
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
    if req.state == State.COMPLETED_WITH_ERRORS:
        # The archive is complete and cannot be appended to: export again from scratch.
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

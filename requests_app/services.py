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
from connectors.archivekeys import file_name_problem
from requests_app.models import ACTIVE_STATES, MigrationRequest, State
from requests_app.selectors import destination_holders
from requests_app.types import RequestType

TERMINAL_RETRYABLE = (State.FAILED, State.CANCELLED, State.COMPLETED_WITH_ERRORS)


def archive_base_key(req: MigrationRequest) -> str:
    """``PREFIX/FILE`` without extension; the archive, report and summary sit side by side."""
    return f"{req.s3_prefix}/{req.file_name}" if req.s3_prefix else req.file_name


def destination_conflict(req: MigrationRequest, *, claiming: bool = False) -> MigrationRequest | None:
    """Another request holding ``req``'s PREFIX/FILE (``selectors.destination_holders``): ``req``
    must not run into it, or it would overwrite or delete that request's archive. When a worker
    claims ``req`` (``claiming``), a live request submitted after it does not count: that one is
    refused when it is claimed, so of two submitted at once exactly the first runs."""
    holders = destination_holders(req.tenant, bucket=req.bucket, s3_prefix=req.s3_prefix,
                                  file_name=req.file_name).exclude(pk=req.pk)
    for other in holders:
        if claiming and other.state in ACTIVE_STATES and other.pk > req.pk and "archives" not in other.checkpoint:
            continue
        return other
    return None


def conflict_message(req: MigrationRequest, holder: MigrationRequest) -> str:
    return (f"{req.bucket.name}/{archive_base_key(req)}.* is already written by request "
            f"“{holder.title or holder.source_user}”: choose another file name or prefix.")


def _build(*, tenant, actor, rtype: RequestType, data: dict) -> MigrationRequest:
    problem = file_name_problem(data.get("file_name") or "")
    if problem:
        raise ValidationError(problem)
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
    holder = destination_conflict(req)
    if holder is not None:
        raise ValidationError(conflict_message(req, holder))
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
    from requests_app.recovery import is_interrupted

    req = MigrationRequest.objects.select_for_update().get(pk=req.pk)
    if req.state not in TERMINAL_RETRYABLE and not is_interrupted(req):
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

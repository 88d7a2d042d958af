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
    return _destination_conflicts(tenant, [(bucket, s3_prefix, file_name)])[0]


def _destination_conflicts(tenant, destinations: list[tuple]) -> list[MigrationRequest | None]:
    """``_destination_conflict`` for each (bucket, prefix, file name), in one query per 500 prefixes.

    File names are compared case-insensitively in Python, so the rule is the same on every
    database (SQLite folds only ASCII letters).
    """
    written: dict[tuple, int] = {}
    scopes = sorted({(bucket.pk, prefix) for bucket, prefix, _ in destinations})
    for start in range(0, len(scopes), 500):
        chunk = set(scopes[start:start + 500])
        rows = (MigrationRequest.objects.for_tenant(tenant)
                .filter(bucket_id__in={b for b, _ in chunk}, s3_prefix__in={p for _, p in chunk})
                .exclude(state__in=[State.FAILED, State.CANCELLED])
                .order_by("created_at", "id").values_list("pk", "bucket_id", "s3_prefix", "file_name"))
        for pk, bucket_id, prefix, name in rows:
            if (bucket_id, prefix) in chunk:
                written[(bucket_id, prefix, name.lower())] = pk  # the newest one wins
    found = [written.get((bucket.pk, prefix, name.lower())) for bucket, prefix, name in destinations]
    by_pk = MigrationRequest.objects.in_bulk({pk for pk in found if pk})
    return [by_pk.get(pk) if pk else None for pk in found]


def _conflict_message(bucket, conflict: MigrationRequest) -> str:
    return (f"{bucket.name}/{archive_base_key(conflict)}.* is already written by request "
            f"“{conflict.title or conflict.source_user}”: choose another file name or prefix.")


def _new_request(*, tenant, actor, rtype: RequestType, data: dict, options: dict | None = None,
                 job_id: str = "") -> MigrationRequest:
    """The row for one submission, not saved yet."""
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
    conflict = _destination_conflict(tenant, data["bucket"], data["s3_prefix"], data["file_name"])
    if conflict:
        raise ValidationError(_conflict_message(data["bucket"], conflict))
    req = _new_request(tenant=tenant, actor=actor, rtype=rtype, data=data)
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
    pending = [_new_request(tenant=tenant, actor=actor, rtype=row.rtype, data=row.data, options={"batch": batch},
                            job_id=new_job_id()) for row in rows]
    conflicts = _destination_conflicts(tenant, [(r.bucket, r.s3_prefix, r.file_name) for r in pending])
    errors = []
    lines: dict[tuple, int] = {}
    for row, req, conflict in zip(rows, pending, conflicts, strict=True):
        key = (req.bucket.pk, req.s3_prefix, req.file_name.lower())
        if conflict:
            errors.append(f"Line {row.line}: {_conflict_message(req.bucket, conflict)}")
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

"""Carrying out one request: claim the row, run the export engine, record how it ended.

Invariants:
- At most one run owns a request: ``claim`` writes a fresh ``run_token`` under a row lock, and
  every ledger commit re-checks it (``DatabaseLedger``). A run that lost ownership stops.
- No run starts into another request's PREFIX/FILE: ``claim`` checks the destination as
  submission and Retry do (``services.destination_conflict``), so a retry, an automatic re-queue
  or a second request submitted at the same moment never overwrites another request's archive.
- The row's heartbeat is refreshed by a thread of the owning process, independent of the
  engine's progress, so a long listing or a 40 MB message never looks like a dead worker.
- The engine never raises for export failures; anything else (a bug, the database going away)
  still ends the request as ``failed`` with a generic message and the traceback in the log.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from requests_app.models import FINAL_STATES, MigrationRequest, State
from requests_app.recovery import is_interrupted
from requests_app.types import get_type

log = logging.getLogger(__name__)


def _current_job_id() -> str:
    try:
        from rq import get_current_job

        job = get_current_job()
        return job.id if job else ""
    except Exception:  # noqa: BLE001
        return ""


@transaction.atomic
def claim(pk: int) -> str | None:
    """Take ownership of the request; None when there is nothing to do (ended, or owned elsewhere)."""
    from requests_app.services import conflict_message, destination_conflict

    row = MigrationRequest.objects.select_for_update().select_related("bucket", "tenant").filter(pk=pk).first()
    if row is None or row.state in FINAL_STATES:
        return None
    if "archives" not in row.checkpoint and row.result.get("archives"):  # finished before archives were recorded
        row.checkpoint = {**row.checkpoint, "archives": [a["key"] for a in row.result["archives"]]}
        row.save(update_fields=["checkpoint"])
    if row.cancel_requested and not row.checkpoint.get("upload"):
        row.state, row.finished_at = State.CANCELLED, timezone.now()
        row.save(update_fields=["state", "finished_at"])
        return None
    holder = destination_conflict(row, claiming=True)
    if holder is not None:  # the bucket is left alone: what its keys hold is the holder's
        log.warning("request %s: its destination is held by request %s; not run", pk, holder.pk)
        row.state, row.finished_at = State.FAILED, timezone.now()
        row.error = conflict_message(row, holder) + " This request was not run."
        row.save(update_fields=["state", "finished_at", "error"])
        return None
    job_id = _current_job_id()
    # A running row is taken over only if its worker is gone: stale heartbeat, or RQ re-running
    # the very job whose previous execution died (RQ retries a job only after its horse ended).
    if row.state == State.RUNNING and not is_interrupted(row) and not (job_id and row.checkpoint.get("job_id") == job_id):
        log.info("request %s is already running elsewhere; skipping", pk)
        return None
    token = uuid.uuid4().hex
    now = timezone.now()
    row.state = State.RUNNING
    row.attempts += 1
    row.started_at = row.started_at or now
    row.heartbeat_at = now
    row.finished_at = None
    row.error = ""
    row.checkpoint = {**row.checkpoint, "run_token": token, "job_id": job_id}
    row.folder_progress = {}  # this run's listing fills it again
    row.save(update_fields=["state", "attempts", "started_at", "heartbeat_at", "finished_at", "error", "checkpoint",
                            "folder_progress"])
    return token


class Heartbeat(threading.Thread):
    """Refresh ``heartbeat_at`` every few seconds while this process runs the request."""

    def __init__(self, pk: int, token: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{pk}")
        self.pk, self.token, self.stop_event = pk, token, threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_event.wait(settings.LEGACYFLO_HEARTBEAT_SECONDS):
                try:
                    MigrationRequest.objects.filter(pk=self.pk, checkpoint__run_token=self.token).update(
                        heartbeat_at=timezone.now())
                except Exception:  # noqa: BLE001 - a missed beat is retried next time
                    log.warning("heartbeat of request %s failed", self.pk, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    return obj


def result_document(result) -> dict:
    folders = [_jsonable(f) for f in result.folders]
    return {
        "state": result.state, "error": result.error, "folders": folders,
        "totals": _jsonable(result.totals), "archives": _jsonable(result.archives),
        "report_key": result.report_key, "summary_key": result.summary_key,
        "started_at": result.started_at, "finished_at": result.finished_at,
        "timings": result.timings, "resumed": result.resumed, "parts": result.parts,
        "summary": _jsonable(result.summary),  # what summary.json in the bucket says (reports.summary)
    }


@transaction.atomic
def finish(pk: int, token: str, *, state: str, error: str = "", result: dict | None = None,
           progress=None) -> bool:
    row = MigrationRequest.objects.select_for_update().get(pk=pk)
    if row.checkpoint.get("run_token") != token:
        return False
    row.state = state
    row.error = error[:4000]
    row.finished_at = timezone.now()
    row.heartbeat_at = row.finished_at
    if result is not None:
        row.result = result
        totals = result.get("totals") or {}
        row.messages_total = totals.get("source_count", row.messages_total)
        row.messages_done = totals.get("exported", row.messages_done)
        row.messages_failed = totals.get("failed", row.messages_failed)
        row.messages_skipped = totals.get("skipped", row.messages_skipped)
        row.folders_total = row.folders_done = totals.get("folders", row.folders_total)
        row.bytes_done = sum(a.get("size", 0) for a in result.get("archives", [])) or row.bytes_done
    row.current_folder = ""
    row.checkpoint = {k: v for k, v in row.checkpoint.items() if k not in ("run_token",)}
    row.save()
    return True


def fail_request(row: MigrationRequest, error: str) -> None:
    """End a request as failed outside a run (recovery giving up); removes what its run left."""
    _remove_leftovers(row)
    row.state, row.error, row.finished_at = State.FAILED, error, timezone.now()
    row.checkpoint = {k: v for k, v in row.checkpoint.items() if k not in ("run_token", "upload")}
    row.save(update_fields=["state", "error", "finished_at", "checkpoint"])


def archive_names(req: MigrationRequest, previous=()):
    """The keys of ``req``'s archive, as its export engine names them (``connectors.pipeline.archivekeys``)."""
    from connectors.pipeline.archivekeys import ArchiveNames

    rtype = get_type(req.request_type)
    extension = rtype.format if rtype is not None else ("pst" if req.request_type.endswith("-PST") else "zip")
    can_split = extension == "pst" or bool(settings.LEGACYFLO_ZIP_SPLIT_BYTES)
    return ArchiveNames.of(req.s3_prefix, req.file_name, extension, previous, can_split=can_split)


def _remove_leftovers(row: MigrationRequest) -> None:
    """Abort the upload in progress and delete the files its run completed
    (``archivekeys.leftover_keys``: a partial set of volumes must not look like an archive; a
    complete archive, and the request's previous archive, are kept). A commit whose publication
    is pending is left for the next run to finish."""
    from buckets.services import bucket_target
    from connectors.pipeline.archivekeys import leftover_keys
    from connectors.storage.s3.client import make_client
    from requests_app.ledger import DatabaseLedger

    ledger = DatabaseLedger(row.pk, "")
    state = ledger.load_upload()
    if state is None or ledger.publication() is not None:
        return
    complete = state.archive_complete
    doomed = leftover_keys(state, archive_names(row, ledger.archive_keys()))
    if complete and not doomed:
        return
    upload = {"key": state.key, "upload_id": state.upload_id}
    try:  # best effort throughout; the bucket's lifecycle rule is the backstop for uploads
        client = make_client(bucket_target(row.bucket), allow_private=settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS)
    except Exception:  # noqa: BLE001
        log.warning("could not reach the bucket of request %s", row.pk, exc_info=True)
        return
    if not complete:
        try:
            client.abort_multipart_upload(Bucket=row.bucket.name, Key=upload["key"], UploadId=upload["upload_id"])
        except Exception:  # noqa: BLE001
            log.warning("could not abort the upload of request %s", row.pk, exc_info=True)
    for key in doomed:
        try:
            client.delete_object(Bucket=row.bucket.name, Key=key)
        except Exception:  # noqa: BLE001
            log.warning("could not delete %s of request %s", key, row.pk, exc_info=True)


def tuning(endpoint_url: str = ""):
    """The export's tuning from the settings, for a bucket at ``endpoint_url`` ("" = AWS S3)."""
    from connectors.pipeline.spec import Tuning
    from connectors.storage.s3.growing import default_max_ahead

    settings.LEGACYFLO_WORK_DIR.mkdir(parents=True, exist_ok=True)
    max_ahead = settings.LEGACYFLO_S3_MAX_AHEAD_BYTES
    if max_ahead is None:
        max_ahead = default_max_ahead(endpoint_url)
    return Tuning(part_bytes=settings.LEGACYFLO_PART_SIZE, max_ahead_bytes=max_ahead,
                  tmp_dir=str(settings.LEGACYFLO_WORK_DIR))


def run_request(pk: int) -> str:
    """The job: run (or resume) request ``pk`` to its end. Returns the final state (or why not)."""
    token = claim(pk)
    if token is None:
        return "skipped"
    heartbeat = Heartbeat(pk, token)
    heartbeat.start()
    try:
        return _run(pk, token)
    finally:
        heartbeat.stop()


def _run(pk: int, token: str) -> str:
    from buckets.services import bucket_target
    from connectors.model import ConnectionFailed
    from connectors.pipeline.run import run_backup
    from connectors.pipeline.spec import ExportSpec
    from connectors.storage.s3.client import make_client
    from requests_app.kinds import source_for_request
    from requests_app.ledger import DatabaseLedger, Superseded

    req = MigrationRequest.objects.select_related("bucket", "tenant").get(pk=pk)
    rtype = get_type(req.request_type)
    if rtype is None:
        finish(pk, token, state=State.FAILED, error=f"The request type {req.request_type} is not available on this portal.")
        return State.FAILED
    spec = ExportSpec(
        bucket=req.bucket.name, file_name=req.file_name, prefix=req.s3_prefix, format=rtype.format,
        include=req.folders, exclude=req.exclude_folders, since=req.since, before=req.before,
        split_bytes=settings.LEGACYFLO_PST_SPLIT_BYTES if rtype.format == "pst" else settings.LEGACYFLO_ZIP_SPLIT_BYTES,
        display_name=f"{req.source_user} (LegacyFlo)",
        source_description={"request": str(req.uuid), "type": rtype.code, "tenant": req.tenant.slug,
                            "server": req.source_server, "user": req.source_user},
    )
    ledger = DatabaseLedger(pk, token)
    try:  # a bucket the portal may not reach (a role bucket without a role...) fails with the reason
        client = make_client(bucket_target(req.bucket), allow_private=settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS)
    except ConnectionFailed as exc:
        finish(pk, token, state=State.FAILED, error=str(exc))
        return State.FAILED
    try:
        with source_for_request(req, rtype) as source:
            result = run_backup(source, client, spec, ledger, tuning(req.bucket.endpoint_url))
    except Superseded:
        log.warning("request %s: another run took over; this one stops", pk)
        return "superseded"
    except Exception as exc:  # noqa: BLE001 - see the module docstring
        log.exception("request %s failed unexpectedly", pk)
        row = MigrationRequest.objects.select_related("bucket").get(pk=pk)
        _remove_leftovers(row)
        finish(pk, token, state=State.FAILED,
               error=f"An internal error stopped the transfer ({exc.__class__.__name__}); the details are in the worker log.")
        return State.FAILED
    finish(pk, token, state=result.state, error=result.error, result=result_document(result))
    return result.state

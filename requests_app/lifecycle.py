"""Every state transition of a MigrationRequest, in one place.

    queued ──claim──► running ──finish──► completed | completed_with_errors | failed | cancelled
      ▲  │              │  └──fail (an internal error)──► failed
      │  └─cancel───────┼──► cancelled (queued with nothing uploaded: at once; else its run stops)
      │                 └──requeue_stale (heartbeat lost) ──► queued, or give_up ──► failed
      └──retry── failed | cancelled | completed_with_errors | a running row whose worker died

Each transition is one transaction on the locked row; what a row keeps between runs is its
typed ``Checkpoint`` (``requests_app.checkpoint``). Callers: the worker (``runner``: claim,
heartbeat, finish, fail), ``recovery`` (requeue_stale, give_up) and ``services`` (cancel,
retry), which audit and enqueue.

Invariants:
- At most one run owns a request: ``claim`` writes a fresh ``run_token`` under the row lock,
  and every ledger write re-checks it (``owned_row``); a run that lost ownership gets
  ``Superseded`` and stops. ``finish`` applies only for the owning run.
- A run's heartbeat is refreshed by a thread of its process, independent of the engine's
  progress, so a long listing or a 40 MB message never looks like a dead worker; a running
  row whose heartbeat is older than ``LEGACYFLO_STALE_AFTER_SECONDS`` is interrupted.
- At most ``LEGACYFLO_TENANT_MAX_RUNNING`` runs of one tenant: ``claim`` of a request whose
  tenant is at the limit leaves it queued and deferred (``requests_app.limits``).
- No run starts into another request's PREFIX/FILE: ``claim`` and ``retry`` check the
  destination as submission does (``selectors.destination_conflict``).
- Ending a request outside its run (``fail``, ``give_up``) removes what that run left in the
  bucket (a partial set of volumes must not look like an archive); the request's previous
  archive and a complete one are kept (``connectors.pipeline.archivekeys``).

Hooks: ``ON_TRANSITION`` holds callables that hear every transition once its transaction has
committed, as a ``Transition``. ``requests_app.apps`` registers the per-tenant limit's release
of deferred requests and the notifications' mails.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from connectors.pipeline.ledger import PartRecord, UploadState
from requests_app import limits
from requests_app.checkpoint import Checkpoint, run_by
from requests_app.models import ACTIVE_STATES, FINAL_STATES, MigrationRequest, State, UploadedPart
from requests_app.selectors import conflict_message, destination_conflict

log = logging.getLogger(__name__)

RETRYABLE_STATES = (State.FAILED, State.CANCELLED, State.COMPLETED_WITH_ERRORS)


class Superseded(Exception):
    """Another run owns this request now; this one must stop without touching the upload."""


@dataclass(frozen=True)
class Transition:
    """A request went from ``before`` to ``after`` (``after`` may equal ``before``: a cancel
    asked of a running request)."""

    request_id: int
    before: str
    after: str
    error: str = ""


ON_TRANSITION: list[Callable[[Transition], None]] = []


def _transitioned(row: MigrationRequest, before: str) -> None:
    transition = Transition(row.pk, before, row.state, row.error)
    for hook in list(ON_TRANSITION):
        transaction.on_commit(lambda hook=hook: hook(transition))


# ---- reading the state ------------------------------------------------------------------------
def stale_before():
    return timezone.now() - timedelta(seconds=settings.LEGACYFLO_STALE_AFTER_SECONDS)


def is_interrupted(req: MigrationRequest) -> bool:
    """Running, but its worker is gone (no heartbeat for ``LEGACYFLO_STALE_AFTER_SECONDS``)."""
    return req.state == State.RUNNING and (req.heartbeat_at is None or req.heartbeat_at < stale_before())


def is_retryable(req: MigrationRequest) -> bool:
    """Whether ``retry`` accepts ``req``: the Retry button is shown exactly then.

    A run of an incremental series that completed with errors is not retried: its archive and
    records are what later runs build on (its cursor lists the failed ids, and the next run of
    the series fetches them again); a retry would replace them."""
    if req.incremental and req.state == State.COMPLETED_WITH_ERRORS:
        return False
    return req.state in RETRYABLE_STATES or is_interrupted(req)


def _locked(pk: int) -> MigrationRequest:
    return MigrationRequest.objects.select_for_update().get(pk=pk)


# ---- the worker's transitions -----------------------------------------------------------------
def _current_job_id() -> str:
    try:
        from rq import get_current_job

        job = get_current_job()
        return job.id if job else ""
    except Exception:  # noqa: BLE001
        return ""


def claim(pk: int) -> str | None:
    """Take ownership of the request (queued, or running with its worker gone → running); its
    run token, or None when there is nothing to do (ended, cancelled, destination held,
    owned elsewhere)."""
    claimed = claim_row(pk)
    return claimed[0] if claimed else None


@transaction.atomic
def claim_row(pk: int) -> tuple[str, MigrationRequest] | None:
    """``claim``, with the claimed row as saved (its bucket and tenant loaded): the run needs
    no second read of it."""
    row = MigrationRequest.objects.select_for_update().select_related("bucket", "tenant").filter(pk=pk).first()
    if row is None or row.state in FINAL_STATES:
        return None
    before = row.state
    checkpoint = Checkpoint.of(row)
    if checkpoint.archives is None and row.result.get("archives"):  # finished before archives were recorded
        checkpoint.archives = [a["key"] for a in row.result["archives"]]
        checkpoint.save(row)
    if row.cancel_requested and checkpoint.upload is None:
        row.state, row.finished_at = State.CANCELLED, timezone.now()
        row.save(update_fields=["state", "finished_at"])
        _transitioned(row, before)
        return None
    holder = destination_conflict(row, claiming=True)
    if holder is not None:  # the bucket is left alone: what its keys hold is the holder's
        log.warning("request %s: its destination is held by request %s; not run", pk, holder.pk)
        row.state, row.finished_at = State.FAILED, timezone.now()
        row.error = conflict_message(row, holder) + " This request was not run."
        row.save(update_fields=["state", "finished_at", "error"])
        _transitioned(row, before)
        return None
    job_id = _current_job_id()
    # A running row is taken over only if its worker is gone: stale heartbeat, or RQ re-running
    # the very job whose previous execution died (RQ retries a job only after its horse ended).
    if row.state == State.RUNNING and not is_interrupted(row) and not (job_id and checkpoint.job_id == job_id):
        log.info("request %s is already running elsewhere; skipping", pk)
        return None
    if limits.at_limit(row):  # it waits queued; its tenant's next run to end re-enqueues it
        log.info("request %s: tenant %s has %s runs going; deferred", pk, row.tenant_id,
                 settings.LEGACYFLO_TENANT_MAX_RUNNING)
        limits.mark_deferred(row)
        return None
    token = uuid.uuid4().hex
    now = timezone.now()
    row.state = State.RUNNING
    row.attempts += 1
    row.started_at = row.started_at or now
    row.heartbeat_at = now
    row.finished_at = None
    row.error = ""
    checkpoint.run_token, checkpoint.job_id = token, job_id
    row.checkpoint = checkpoint.to_json()
    row.folder_progress = {}  # this run's listing fills it again
    row.deferred_at = None
    row.save(update_fields=["state", "attempts", "started_at", "heartbeat_at", "finished_at", "error", "checkpoint",
                            "folder_progress", "deferred_at"])
    _transitioned(row, before)
    return token, row


class Heartbeat(threading.Thread):
    """Refresh ``heartbeat_at`` every few seconds while this process runs the request (only while
    the run owns it). A context manager: started on entry, stopped on exit."""

    def __init__(self, pk: int, token: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{pk}")
        self.pk, self.token, self.stop_event = pk, token, threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_event.wait(settings.LEGACYFLO_HEARTBEAT_SECONDS):
                try:
                    owned(self.pk, self.token).update(heartbeat_at=timezone.now())
                except Exception:  # noqa: BLE001 - a missed beat is retried next time
                    log.warning("heartbeat of request %s failed", self.pk, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def owned(pk: int, token: str):
    """The request as a queryset, empty unless the run ``token`` owns it (for updates that must
    not land once another run took over)."""
    return MigrationRequest.objects.filter(run_by(token), pk=pk)


def owned_row(pk: int, token: str) -> tuple[MigrationRequest, Checkpoint]:
    """The locked row and its checkpoint, for a write by the run ``token``; Superseded when
    another run owns the request now. Call inside a transaction."""
    row = _locked(pk)
    checkpoint = Checkpoint.of(row)
    if checkpoint.run_token != token:
        raise Superseded(f"request {pk} is now run by another worker")
    return row, checkpoint


def cancel_requested(pk: int, token: str) -> bool:
    """Whether the user asked to cancel (True also when the row is gone); Superseded when
    another run owns the request now."""
    row = MigrationRequest.objects.filter(pk=pk).values("cancel_requested", "checkpoint").first()
    if row is None:
        return True
    if Checkpoint.from_json(row["checkpoint"]).run_token != token:
        raise Superseded(f"request {pk} is now run by another worker")
    return bool(row["cancel_requested"])


def upload_state(pk: int, checkpoint: Checkpoint) -> UploadState | None:
    """The recorded upload with its committed parts (in order), or None."""
    if checkpoint.upload is None:
        return None
    parts = [PartRecord(p.part_number, p.etag, p.size, p.final, p.next_volume)
             for p in UploadedPart.objects.filter(request_id=pk, archive_key=checkpoint.upload.key)
             .order_by("part_number")]
    return replace(checkpoint.upload, parts=parts)


@transaction.atomic
def finish(pk: int, token: str, *, state: str, error: str = "", result: dict | None = None) -> bool:
    """The run ``token`` ended (running → a final state) with ``result`` (``runner.result_document``);
    False, and nothing written, when another run owns the request now."""
    row = _locked(pk)
    checkpoint = Checkpoint.of(row)
    if checkpoint.run_token != token:
        return False
    before = row.state
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
    checkpoint.run_token = ""
    row.checkpoint = checkpoint.to_json()
    row.save()
    _transitioned(row, before)
    return True


def fail(pk: int, token: str, error: str) -> bool:
    """The run ``token`` stopped on an internal error (a bug, the database going away): what it
    left in the bucket is removed, the request fails with ``error``."""
    row = MigrationRequest.objects.select_related("bucket").get(pk=pk)
    _remove_leftovers(row, Checkpoint.of(row))
    return finish(pk, token, state=State.FAILED, error=error)


# ---- recovery's transitions -------------------------------------------------------------------
@transaction.atomic
def requeue_stale(pk: int) -> str:
    """A running request whose worker died goes back to the queue ("requeued"), or, after
    ``LEGACYFLO_MAX_ATTEMPTS`` attempts, fails ("gave_up"); "" when it is not interrupted."""
    row = _locked(pk)
    if not is_interrupted(row):
        return ""
    if row.attempts >= settings.LEGACYFLO_MAX_ATTEMPTS:
        give_up(row, f"The transfer was interrupted {row.attempts} times; giving up. Retry it to try again.")
        return "gave_up"
    row.state = State.QUEUED
    row.save(update_fields=["state"])
    _transitioned(row, State.RUNNING)
    log.warning("request %s was interrupted (no heartbeat since %s); re-queued", row.pk, row.heartbeat_at)
    return "requeued"


def give_up(row: MigrationRequest, error: str) -> None:
    """End a request as failed outside a run (recovery giving up): what its run left in the bucket
    is removed, its upload forgotten; its previous archive stays recorded."""
    checkpoint = Checkpoint.of(row)
    _remove_leftovers(row, checkpoint)
    before = row.state
    row.state, row.error, row.finished_at = State.FAILED, error, timezone.now()
    checkpoint.run_token, checkpoint.upload = "", None
    row.checkpoint = checkpoint.to_json()
    row.save(update_fields=["state", "error", "finished_at", "checkpoint"])
    _transitioned(row, before)


# ---- the user's transitions (services audit them and enqueue) ---------------------------------
@transaction.atomic
def cancel(pk: int) -> MigrationRequest:
    """A queued request with nothing uploaded ends at once; any other active one is marked, and
    its run stops at the next message and removes its upload (a queued one when it is claimed)."""
    row = _locked(pk)
    if row.state not in ACTIVE_STATES:
        raise ValidationError(f"The request is {row.get_state_display().lower()} and cannot be cancelled.")
    before = row.state
    row.cancel_requested = True
    fields = ["cancel_requested"]
    if row.state == State.QUEUED and Checkpoint.of(row).upload is None:  # else its run removes the upload
        row.state = State.CANCELLED
        row.finished_at = timezone.now()
        fields += ["state", "finished_at"]
    row.save(update_fields=fields)
    _transitioned(row, before)
    return row


@transaction.atomic
def retry(pk: int) -> MigrationRequest:
    """A failed, cancelled, incomplete or interrupted request goes back to the queue; it resumes
    from its checkpoint (an incomplete one, whose archive cannot be appended to, starts afresh:
    its archive's keys stay recorded until the new run commits)."""
    row = _locked(pk)
    if row.incremental and row.state == State.COMPLETED_WITH_ERRORS:
        raise ValidationError("This run of an incremental series completed with errors: the next run of the "
                              "series fetches its failed messages again (submit it), so it is not retried.")
    if not is_retryable(row):
        raise ValidationError(f"The request is {row.get_state_display().lower()}; only failed, cancelled, "
                              "incomplete or interrupted requests can be retried.")
    holder = destination_conflict(row)
    if holder is not None:  # submitted while this one had failed: its archive must not be overwritten
        raise ValidationError(f"{conflict_message(row, holder)} This request cannot be retried into it; "
                              "submit it again under another file name or prefix.")
    before = row.state
    if row.state == State.COMPLETED_WITH_ERRORS:
        row.records.all().delete()
        row.parts.all().delete()
        checkpoint = Checkpoint.of(row)
        checkpoint.upload = None
        row.checkpoint = checkpoint.to_json()
    row.state = State.QUEUED
    row.cancel_requested = False
    row.error = ""
    row.finished_at = None
    row.save(update_fields=["state", "cancel_requested", "error", "finished_at", "checkpoint"])
    _transitioned(row, before)
    return row


# ---- what a run left in the bucket ------------------------------------------------------------
def archive_names(req: MigrationRequest, previous=()):
    """The keys of ``req``'s archive, as its export pipeline names them (``connectors.pipeline.archivekeys``)."""
    from connectors.pipeline.archivekeys import ArchiveNames
    from requests_app.types import get_type

    rtype = get_type(req.request_type)
    extension = rtype.format if rtype is not None else ("pst" if req.request_type.endswith("-PST") else "zip")
    can_split = extension == "pst" or bool(settings.LEGACYFLO_ZIP_SPLIT_BYTES)
    from requests_app.series import run_file_name

    return ArchiveNames.of(req.s3_prefix, run_file_name(req), extension, previous, can_split=can_split)


def _remove_leftovers(row: MigrationRequest, checkpoint: Checkpoint) -> None:
    """Abort the upload in progress and delete the files its run completed
    (``archivekeys.leftover_keys``: a partial set of volumes must not look like an archive; a
    complete archive, and the request's previous archive, are kept). A commit whose publication
    is pending is left for the next run to finish. Best effort: the bucket's lifecycle rule is
    the backstop for uploads."""
    from buckets.services import bucket_target
    from connectors.pipeline.archivekeys import leftover_keys, remove_leftovers
    from connectors.storage.s3.client import make_client
    from connectors.storage.s3.sink import RetryPolicy

    state = upload_state(row.pk, checkpoint)
    if state is None or checkpoint.publication is not None:
        return
    names = archive_names(row, checkpoint.archives or ())
    if state.archive_complete and not leftover_keys(state, names):
        return
    try:
        client = make_client(bucket_target(row.bucket), allow_private=settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS)
    except Exception:  # noqa: BLE001
        log.warning("could not reach the bucket of request %s", row.pk, exc_info=True)
        return
    remove_leftovers(client, row.bucket.name, state, names, retry=RetryPolicy())

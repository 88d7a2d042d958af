"""Migration requests: one mailbox, one archive. The row holds the state of a transfer.

Workers come and go; the row is the truth the UI reads: state, counters, checkpoint, error.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from accounts.access import TenantQuerySet
from accounts.fields import EncryptedTextField
from accounts.models import Tenant
from buckets.models import Bucket


class State(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors", "Completed with errors"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATES = (State.QUEUED, State.RUNNING)
FINAL_STATES = (State.COMPLETED, State.COMPLETED_WITH_ERRORS, State.FAILED, State.CANCELLED)


class Security(models.TextChoices):
    SSL = "ssl", "SSL/TLS"
    STARTTLS = "starttls", "STARTTLS"
    NONE = "none", "None (plain text)"


class MigrationRequest(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="migration_requests")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    request_type = models.CharField(max_length=32)
    title = models.CharField(max_length=200, blank=True)

    source_server = models.CharField(max_length=255, blank=True)
    source_port = models.PositiveIntegerField(null=True, blank=True)
    source_security = models.CharField(max_length=16, choices=Security.choices, default=Security.SSL)
    source_user = models.CharField(max_length=320, blank=True)
    source_password = EncryptedTextField(blank=True)
    options = models.JSONField(default=dict, blank=True)  # type-specific, never secrets

    folders = models.JSONField(default=list, blank=True)
    exclude_folders = models.JSONField(default=list, blank=True)
    since = models.DateField(null=True, blank=True)
    before = models.DateField(null=True, blank=True)

    bucket = models.ForeignKey(Bucket, on_delete=models.PROTECT, related_name="migration_requests")
    s3_prefix = models.CharField(max_length=500, blank=True)
    file_name = models.CharField(max_length=200)

    # Restore types: the archive read back (``bucket`` holds it; a key, a split archive's base name
    # or a series' base name) and the folder everything goes under instead of the original ones.
    # The mailbox written into is described by the ``source_*`` connection fields above: they are
    # "the mailbox side" of every request, backup or restore.
    archive_key = models.CharField(max_length=1024, blank=True)
    target_folder = models.CharField(max_length=500, blank=True)

    # Backup types: an incremental run belongs to the series ``series_key`` names (same tenant,
    # source, bucket, prefix and file name); see DESIGN.md, "incremental series".
    incremental = models.BooleanField(default=False)
    # When retention (LEGACYFLO_RECORD_RETENTION_DAYS) deleted this run's ArchiveRecords: its
    # FILE.report.csv in the bucket is then the only per-message record (requests_app.retention).
    records_pruned_at = models.DateTimeField(null=True, blank=True)
    series_key = models.CharField(max_length=64, blank=True, db_index=True)
    # Addresses mailed when the run starts and ends (a failure after the last attempt only).
    notify = models.JSONField(default=list, blank=True)
    # The plan whose slot submitted this run (``requests_app.plans``); None for a request by hand.
    plan = models.ForeignKey("Plan", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    # Set while the request waits queued because its tenant already has
    # LEGACYFLO_TENANT_MAX_RUNNING runs going (``requests_app.limits``); cleared when re-enqueued.
    deferred_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Which mail of the current run went out: "" (none yet), "started" or "ended"
    # (``requests_app.notifications``: one start mail per run, not one per automatic attempt).
    notified = models.CharField(max_length=16, blank=True)
    # The CSV upload (or requests_submit file) this request came from, if any.
    batch = models.ForeignKey("RequestBatch", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="requests")

    state = models.CharField(max_length=32, choices=State.choices, default=State.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    folders_total = models.PositiveIntegerField(default=0)
    folders_done = models.PositiveIntegerField(default=0)
    messages_total = models.PositiveIntegerField(default=0)
    messages_done = models.PositiveIntegerField(default=0)
    messages_failed = models.PositiveIntegerField(default=0)
    messages_skipped = models.PositiveIntegerField(default=0)
    bytes_done = models.BigIntegerField(default=0)
    current_folder = models.CharField(max_length=500, blank=True)
    # While a run goes on: {"counts": {folder: source count}, "outcomes": {folder: [exported,
    # failed, skipped, bytes] not yet in the records}} (see connectors.pipeline.ledger.Progress).
    folder_progress = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    checkpoint = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    job_id = models.CharField(max_length=64, blank=True)

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "state"]),
                   # The request list: a tenant's newest first, whatever filter narrows it.
                   models.Index(fields=["tenant", "-created_at", "-id"], name="request_list_idx")]

    def __str__(self) -> str:
        return f"{self.request_type} {self.title or self.source_user}"

    @property
    def is_restore(self) -> bool:
        """A restore (archive → mailbox) rather than a backup: its ``source_*`` fields are the target."""
        from requests_app.types import get_type

        rtype = get_type(self.request_type)
        return bool(rtype and rtype.is_restore)

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def percent(self) -> int:
        if self.state == State.COMPLETED:
            return 100
        if not self.messages_total:
            return 0
        done = self.messages_done + self.messages_failed + self.messages_skipped
        return min(100, int(100 * done / self.messages_total))


class RecordStatus(models.TextChoices):
    EXPORTED = "exported", "Exported"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class ArchiveRecord(models.Model):
    """One message (or folder entry) of a request's archive, written when its bytes are safely in S3.

    The ledger of a transfer: a row exists only for an uploaded part (or a message reported as
    failed/skipped in that part; for a PST, once every file of the archive is complete, with no
    part), so after a crash every source id with a row is done and every other one is fetched
    again: exactly once. ``entry`` keeps what the archive writer needs to
    rebuild its index (ZIP central directory) on resume.
    """

    request = models.ForeignKey(MigrationRequest, on_delete=models.CASCADE, related_name="records")
    seq = models.BigIntegerField()
    part_number = models.IntegerField(null=True, blank=True)
    kind = models.CharField(max_length=16, default="message")
    folder = models.TextField()
    source_id = models.CharField(max_length=255)
    folder_seq = models.IntegerField(default=0)  # the NNNNNN of the entry name within its folder
    message_id = models.TextField(blank=True)
    date = models.CharField(max_length=64, blank=True)
    sender = models.TextField(blank=True)
    recipients = models.TextField(blank=True)
    subject = models.TextField(blank=True)
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=RecordStatus.choices, default=RecordStatus.EXPORTED)
    error = models.TextField(blank=True)
    labels = models.JSONField(default=list, blank=True)
    entry = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["seq"]
        constraints = [
            models.UniqueConstraint(fields=["request", "seq"], name="record_seq_unique"),
        ]
        indexes = [models.Index(fields=["request", "kind", "status"]), models.Index(fields=["request", "folder"])]


class UploadedPart(models.Model):
    """A multipart-upload part that S3 acknowledged, committed with the records it contains."""

    request = models.ForeignKey(MigrationRequest, on_delete=models.CASCADE, related_name="parts")
    archive_key = models.CharField(max_length=1024)
    part_number = models.IntegerField()
    etag = models.CharField(max_length=128)
    size = models.BigIntegerField()
    final = models.BooleanField(default=False)  # holds the central directory
    next_volume = models.BooleanField(default=False)  # final part of a full volume: another one follows

    class Meta:
        ordering = ["archive_key", "part_number"]
        constraints = [
            models.UniqueConstraint(fields=["request", "archive_key", "part_number"], name="part_unique"),
        ]


class Plan(models.Model):
    """A backup series on a schedule: the settings of its requests (a template, the password
    encrypted), when it runs, and who hears about it.

    ``next_run_at`` is the truth about the next slot (the scheduler never asks Redis): a slot is
    taken by moving it forward in the same transaction that submits its run, so each slot runs
    at most once whatever number of schedulers run (``requests_app.plans``).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="plans")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    request_type = models.CharField(max_length=32)
    title = models.CharField(max_length=200, blank=True)
    # The form's cleaned data without the bucket and the password (dates as ISO text).
    template = models.JSONField(default=dict, blank=True)
    source_password = EncryptedTextField(blank=True)
    bucket = models.ForeignKey(Bucket, on_delete=models.PROTECT, related_name="plans")
    schedule = models.CharField(max_length=64)  # canonical text, ``requests_app.schedule``
    next_run_at = models.DateTimeField(db_index=True)
    paused = models.BooleanField(default=False)
    notify = models.JSONField(default=list, blank=True)

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["title", "id"]
        indexes = [models.Index(fields=["paused", "next_run_at"])]

    def __str__(self) -> str:
        return self.title or self.template.get("source_user", "") or str(self.uuid)


class PlanEventKind(models.TextChoices):
    SUBMITTED = "submitted", "Run submitted"
    SKIPPED = "skipped", "Slot skipped: the previous run is still going"
    COLLAPSED = "collapsed", "Missed slots collapsed into one run"
    FAILED_TO_START = "failed_to_start", "Failed to start"
    LATE = "late", "Run not started within an hour of its slot"


class PlanEvent(models.Model):
    """What the scheduler did with one slot of a plan (append-only)."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=32, choices=PlanEventKind.choices)
    slot_at = models.DateTimeField()
    request = models.ForeignKey(MigrationRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["plan", "kind"])]
        constraints = [models.UniqueConstraint(fields=["request"], condition=models.Q(kind="late"),
                                               name="planevent_one_late_per_request")]


class TenantNotifications(models.Model):
    """A tenant's default recipients: mailed about every run of the tenant, besides each
    request's (or plan's) own ``notify`` list."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="notification_settings")
    notify = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()


class RequestBatch(models.Model):
    """One CSV upload (the web form or ``requests_submit``): its requests on one page with totals.

    Created in the same transaction as its requests (all or nothing), so a batch never exists
    without them; deleting it leaves the requests (their ``batch`` becomes empty).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="request_batches")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=255, blank=True)  # the uploaded file's name
    source = models.CharField(max_length=16, default="csv")  # "csv" (web) or "cli"
    count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="request_batch_list_idx")]

    def __str__(self) -> str:
        return self.name or f"batch of {self.created_at:%Y-%m-%d %H:%M}"

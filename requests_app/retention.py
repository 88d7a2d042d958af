"""Pruning the per-message records (ArchiveRecord) of old completed requests.

A completed run's records serve the portal's report page and report.csv download; the same
report was written to the bucket beside the archive (FILE.report.csv), which stays the durable
copy. ``LEGACYFLO_RECORD_RETENTION_DAYS`` (0: never) bounds how long the database keeps them:
``prune_records`` deletes those of requests that completed (with or without errors) longer ago,
and marks the request (``records_pruned_at``) so the portal says where the report now is.

Left alone: active and failed or cancelled requests (a retry resumes from their records),
incremental backups (a later run of the series may read them), and anything finished within
the retention period. A request retried later starts from an empty ledger as usual.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from requests_app.models import ArchiveRecord, MigrationRequest, State

log = logging.getLogger(__name__)

PRUNABLE_STATES = (State.COMPLETED, State.COMPLETED_WITH_ERRORS)


def prunable(days: int):
    """The requests whose records ``prune_records`` deletes, for a retention of ``days``."""
    return MigrationRequest.objects.filter(state__in=PRUNABLE_STATES, incremental=False, records_pruned_at=None,
                                           finished_at__lt=timezone.now() - timedelta(days=days))


def prune_records(days: int | None = None, *, limit: int = 100) -> int:
    """Delete the records of at most ``limit`` requests past the retention; how many requests.
    Each request is one transaction on its locked row (a retry that won the lock first is left
    alone: it is no longer prunable)."""
    days = settings.LEGACYFLO_RECORD_RETENTION_DAYS if days is None else days
    if not days:
        return 0
    pruned = 0
    for pk in prunable(days).values_list("pk", flat=True)[:limit]:
        with transaction.atomic():
            if not prunable(days).select_for_update().filter(pk=pk).exists():
                continue
            ArchiveRecord.objects.filter(request_id=pk).delete()
            MigrationRequest.objects.filter(pk=pk).update(records_pruned_at=timezone.now())
        pruned += 1
    if pruned:
        log.info("pruned the message records of %s completed requests (older than %s days)", pruned, days)
    return pruned

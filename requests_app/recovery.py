"""Finding requests whose worker died, and putting them back on the queue.

A running request's heartbeat is refreshed every few seconds by its worker; one older than
``LEGACYFLO_STALE_AFTER_SECONDS`` means the worker was killed (OOM, SIGKILL, machine lost).
Each worker runs ``recover()`` periodically: interrupted requests are re-queued and resume from
their checkpoint; queued requests whose job vanished (Redis restarted) are enqueued again.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from requests_app.models import MigrationRequest, State

log = logging.getLogger(__name__)


def stale_before():
    return timezone.now() - timedelta(seconds=settings.LEGACYFLO_STALE_AFTER_SECONDS)


def is_interrupted(req: MigrationRequest) -> bool:
    return req.state == State.RUNNING and (req.heartbeat_at is None or req.heartbeat_at < stale_before())


def _job_exists(job_id: str) -> bool:
    import django_rq
    from rq.job import Job

    if not job_id:
        return False
    try:
        return Job.exists(job_id, connection=django_rq.get_connection("default"))
    except Exception:  # noqa: BLE001 - Redis down: assume it exists, try later
        return True


def recover() -> list[int]:
    """Re-queue interrupted requests and lost queued ones; return their ids."""
    from requests_app.queue import enqueue_request

    requeued = []
    for req in MigrationRequest.objects.filter(state=State.RUNNING, heartbeat_at__lt=stale_before()):
        with transaction.atomic():
            row = MigrationRequest.objects.select_for_update().get(pk=req.pk)
            if not is_interrupted(row):
                continue
            if row.attempts >= settings.LEGACYFLO_MAX_ATTEMPTS:
                from requests_app.runner import fail_request

                fail_request(row, f"The transfer was interrupted {row.attempts} times; giving up. Retry it to try again.")
                continue
            row.state = State.QUEUED
            row.save(update_fields=["state"])
        log.warning("request %s was interrupted (no heartbeat since %s); re-queued", row.pk, row.heartbeat_at)
        enqueue_request(row.pk)
        requeued.append(row.pk)
    grace = timezone.now() - timedelta(seconds=60)
    for req in MigrationRequest.objects.filter(state=State.QUEUED, created_at__lt=grace).only("pk", "job_id"):
        if not _job_exists(req.job_id):
            log.warning("request %s was queued but its job is gone; enqueued again", req.pk)
            enqueue_request(req.pk)
            requeued.append(req.pk)
    return requeued

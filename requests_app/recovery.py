"""Finding requests whose worker died, and putting them back on the queue.

A running request's heartbeat is refreshed every few seconds by its worker; one older than
``LEGACYFLO_STALE_AFTER_SECONDS`` means the worker was killed (OOM, SIGKILL, machine lost).
Each worker runs ``recover()`` periodically: interrupted requests are re-queued and resume from
their checkpoint (or, interrupted too often, fail: ``lifecycle.requeue_stale``); queued requests
whose job vanished (Redis restarted) are enqueued again, and requests deferred by the per-tenant
limit are re-enqueued where their tenant has a free place (``limits.release_all``: the safety
net behind the release each ending run does).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from requests_app import lifecycle, limits
from requests_app.models import MigrationRequest, State
from requests_app.queue import enqueue_request

log = logging.getLogger(__name__)


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
    requeued = []
    stale = MigrationRequest.objects.filter(state=State.RUNNING, heartbeat_at__lt=lifecycle.stale_before())
    for pk in stale.values_list("pk", flat=True):
        if lifecycle.requeue_stale(pk) == "requeued":
            enqueue_request(pk)
            requeued.append(pk)
    requeued += limits.release_all()
    grace = timezone.now() - timedelta(seconds=60)
    for req in (MigrationRequest.objects.filter(state=State.QUEUED, created_at__lt=grace, deferred_at__isnull=True)
                .only("pk", "job_id")):
        if not _job_exists(req.job_id):
            log.warning("request %s was queued but its job is gone; enqueued again", req.pk)
            enqueue_request(req.pk)
            requeued.append(req.pk)
    return requeued

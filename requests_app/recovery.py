"""Finding requests whose worker died, and putting them back on the queue.

A running request's heartbeat is refreshed every few seconds by its worker; one older than
``LEGACYFLO_STALE_AFTER_SECONDS`` means the worker was killed (OOM, SIGKILL, machine lost).
Each worker runs ``recover()`` periodically: interrupted requests are re-queued and resume from
their checkpoint (or, interrupted too often, fail: ``lifecycle.requeue_stale``); queued requests
whose job can no longer run them (gone, failed, or enqueued under an old function path:
``job_is_lost``) are enqueued again, and requests deferred by the per-tenant limit are
re-enqueued where their tenant has a free place (``limits.release_all``: the safety net behind
the release each ending run does).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from requests_app import lifecycle, limits
from requests_app.models import MigrationRequest, State
from requests_app.queue import JOB_FUNCTION, enqueue_request

log = logging.getLogger(__name__)

# A job in one of these will never run its request again (RQ retries a failed job by moving it
# back to queued or scheduled, so a failed one has no retry left).
_DEAD_STATUSES = ("failed", "stopped", "canceled")


def job_is_lost(job_id: str) -> bool:
    """Whether the queued request's job cannot run it: no job id, the job is gone (Redis
    restarted or flushed), it failed for good (e.g. its function could not be imported), or it
    calls another function than ``JOB_FUNCTION`` (enqueued before an upgrade; it is deleted so
    it never runs as well). Redis unreachable: not lost, the next round looks again."""
    import django_rq
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    if not job_id:
        return True
    try:
        job = Job.fetch(job_id, connection=django_rq.get_connection("default"))
    except NoSuchJobError:
        return True
    except Exception:  # noqa: BLE001 - Redis down (or a job we cannot read): try later
        log.warning("could not look up job %s", job_id, exc_info=True)
        return False
    try:
        if job.func_name != JOB_FUNCTION:
            job.delete()
            return True
        return job.get_status(refresh=False) in _DEAD_STATUSES
    except Exception:  # noqa: BLE001
        log.warning("could not inspect job %s", job_id, exc_info=True)
        return False


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
        if job_is_lost(req.job_id):
            log.warning("request %s was queued but its job cannot run it (gone, failed or outdated); "
                        "enqueued again", req.pk)
            enqueue_request(req.pk)
            requeued.append(req.pk)
    return requeued

"""Putting requests on the RQ queue. Jobs carry only the request id."""

from __future__ import annotations

import logging
import uuid

import django_rq
from django.conf import settings
from rq import Retry

from requests_app.models import MigrationRequest

log = logging.getLogger(__name__)


def enqueue_request(pk: int) -> str | None:
    """Enqueue ``run_request(pk)``. If Redis is down the row stays queued and recovery re-enqueues it."""
    job_id = f"request-{pk}-{uuid.uuid4().hex[:8]}"
    try:
        django_rq.get_queue("default").enqueue(
            "requests_app.jobs.run_request", pk, job_id=job_id,
            job_timeout=settings.RQ_QUEUES["default"]["DEFAULT_TIMEOUT"],
            # A worker killed mid-run (OOM, deploy, SIGKILL) fails the job; RQ runs it again and the
            # request resumes from its checkpoint.
            retry=Retry(max=settings.LEGACYFLO_JOB_RETRIES, interval=[5, 30, 120]),
            result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600,
        )
    except Exception:  # noqa: BLE001 - the queue being down must not lose the submission
        log.exception("could not enqueue request %s; recovery will retry", pk)
        return None
    MigrationRequest.objects.filter(pk=pk).update(job_id=job_id)
    return job_id

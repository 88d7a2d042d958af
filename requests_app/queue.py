"""Putting requests on the RQ queue. Jobs carry only the request id."""

from __future__ import annotations

import logging
import uuid

import django_rq
from django.conf import settings
from rq import Queue, Retry
from rq.queue import EnqueueData

from requests_app.models import MigrationRequest

log = logging.getLogger(__name__)


# The function every job calls. Jobs enqueued under another path (before an upgrade moved it:
# ``requests_app.jobs.run_request`` once) are replaced by recovery (``recovery.job_is_lost``).
JOB_FUNCTION = "requests_app.runner.run_request"


def new_job_id() -> str:
    return f"request-{uuid.uuid4().hex}"


def _job(pk: int, job_id: str) -> EnqueueData:
    return Queue.prepare_data(
        JOB_FUNCTION, (pk,), job_id=job_id,
        timeout=settings.RQ_QUEUES["default"]["DEFAULT_TIMEOUT"],
        # A worker killed mid-run (OOM, deploy, SIGKILL) fails the job; RQ runs it again and the
        # request resumes from its checkpoint.
        retry=Retry(max=settings.LEGACYFLO_JOB_RETRIES, interval=[5, 30, 120]),
        result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600,
    )


def enqueue_request(pk: int) -> str | None:
    """Enqueue ``run_request(pk)``. If Redis is down the row stays queued and recovery re-enqueues it."""
    job_id = new_job_id()
    if not enqueue_jobs([(pk, job_id)]):
        return None
    MigrationRequest.objects.filter(pk=pk).update(job_id=job_id)
    return job_id


def enqueue_jobs(jobs: list[tuple[int, str]]) -> int:
    """Enqueue ``run_request(pk)`` as each (pk, job id), 500 per Redis round-trip; how many went.

    The rows already carry their job ids (``requests_submit_many`` stores them with the rows): a
    chunk that cannot be queued (Redis down) leaves rows whose job does not exist, which recovery
    enqueues again.
    """
    queued = 0
    queue = django_rq.get_queue("default")
    for start in range(0, len(jobs), 500):
        chunk = jobs[start:start + 500]
        try:
            queue.enqueue_many([_job(pk, job_id) for pk, job_id in chunk])
        except Exception:  # noqa: BLE001 - the queue being down must not lose the submission
            log.exception("could not enqueue requests %s; recovery will retry", [pk for pk, _ in chunk])
            continue
        queued += len(chunk)
    return queued

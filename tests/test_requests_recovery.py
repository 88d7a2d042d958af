"""Recovery of queued requests whose RQ job can no longer run them: real Redis, real worker,
real Dovecot and S3."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from requests_app.models import MigrationRequest
from tests.portal_fixtures import (
    MAILBOX_PASSWORD,
    archive_digests,
    run_worker_burst,
    source_digests,
)

pytestmark = pytest.mark.django_db(transaction=True)

OLD_FUNCTION = "requests_app.jobs.run_request"  # where the job function lived before an upgrade


def _queued(tenant, dovecot, bucket, file_name: str) -> MigrationRequest:
    """A queued request, older than recovery's grace period, with no job yet."""
    req = MigrationRequest.objects.create(
        tenant=tenant, title=file_name, request_type="IMAP-S3-ZIP", source_server="127.0.0.1",
        source_port=dovecot.ssl_port, source_security="ssl", source_user="alice", source_password=MAILBOX_PASSWORD,
        bucket=bucket, s3_prefix="mail", file_name=file_name)
    MigrationRequest.objects.filter(pk=req.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    return req


def _old_job(queue, req: MigrationRequest) -> str:
    job = queue.enqueue_call(OLD_FUNCTION, args=(req.pk,), job_id=f"request-old-{req.pk}")
    MigrationRequest.objects.filter(pk=req.pk).update(job_id=job.id)
    return job.id


@pytest.mark.parametrize("case", ["old function, still queued", "old function, failed", "job gone"])
def test_a_queued_request_whose_job_cannot_run_it_is_enqueued_again_and_completes(
        case, tenant, dovecot, imap_ca, dest_bucket, rclone, rq_queue):
    from rq.job import Job

    from requests_app.queue import JOB_FUNCTION
    from requests_app.recovery import recover

    req = _queued(tenant, dovecot, dest_bucket, "recovered")
    if case == "job gone":
        MigrationRequest.objects.filter(pk=req.pk).update(job_id="request-never-enqueued")
    else:
        old = _old_job(rq_queue, req)
        if case == "old function, failed":
            run_worker_burst(rq_queue)  # the worker cannot import the old path: the job fails
            assert Job.fetch(old, connection=rq_queue.connection).get_status() == "failed"
            req.refresh_from_db()
            assert req.state == "queued"  # stuck there until recovery

    assert recover() == [req.pk]
    req.refresh_from_db()
    job = Job.fetch(req.job_id, connection=rq_queue.connection)
    assert job.func_name == JOB_FUNCTION and job.get_status() == "queued"
    if case == "old function, still queued":
        assert not Job.exists(old, connection=rq_queue.connection)  # it will not run as well
    assert recover() == []  # the new job is alive: nothing more to do

    run_worker_burst(rq_queue)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    digests = archive_digests(rclone.client(), dest_bucket.name, "mail/recovered.zip")
    assert sorted(map(sorted, digests.values())) == sorted(map(sorted, source_digests(dovecot.mailbox).values()))


def test_a_queued_request_with_a_live_job_is_left_alone(tenant, dovecot, imap_ca, dest_bucket, rq_queue):
    from requests_app.queue import enqueue_request
    from requests_app.recovery import recover

    req = _queued(tenant, dovecot, dest_bucket, "alive")
    job_id = enqueue_request(req.pk)
    assert recover() == []
    req.refresh_from_db()
    assert req.job_id == job_id and rq_queue.count == 1

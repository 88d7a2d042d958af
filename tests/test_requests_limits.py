"""requests_app.limits: at most LEGACYFLO_TENANT_MAX_RUNNING running requests per tenant; the
others wait queued (deferred) and are re-enqueued, never lost."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from requests_app import lifecycle, recovery
from requests_app.models import MigrationRequest, State
from tests.portal_fixtures import imap_form, run_worker_burst, submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def other_bucket(other_tenant, rclone, s3_bucket):
    from buckets.models import Bucket

    name = s3_bucket + "-other"
    rclone.client().create_bucket(Bucket=name)
    return Bucket.objects.create(
        tenant=other_tenant, name=name, region="us-east-1", endpoint_url=rclone.url, purpose="destination",
        auth_mode="keys", access_key_id=rclone.access_key, secret_access_key=rclone.secret_key, status="verified")


def queued_job_ids(queue) -> list[str]:
    return list(queue.job_ids)


def test_a_tenant_at_its_limit_waits_and_runs_when_a_place_frees(operator, outsider, tenant, other_tenant, dovecot,
                                                                  imap_ca, dest_bucket, other_bucket, rclone,
                                                                  rq_queue, settings):
    settings.LEGACYFLO_TENANT_MAX_RUNNING = 1
    first = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="first"))
    second = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="second"))
    other = submit(other_tenant, outsider, "IMAP-S3-ZIP", imap_form(dovecot, other_bucket, file_name="other"))
    rq_queue.empty()

    token = lifecycle.claim(first.pk)
    assert token
    assert lifecycle.claim(second.pk) is None  # the tenant's one place is taken
    second.refresh_from_db()
    assert second.state == State.QUEUED and second.deferred_at is not None
    assert lifecycle.claim(other.pk)  # another tenant is not held back

    lifecycle.finish(first.pk, token, state=State.COMPLETED)  # its place frees: the deferred one is enqueued
    second.refresh_from_db()
    assert second.deferred_at is None and second.state == State.QUEUED
    assert queued_job_ids(rq_queue) == [second.job_id]
    run_worker_burst(rq_queue)
    second.refresh_from_db()
    assert second.state == State.COMPLETED


def test_deferred_requests_are_released_by_recovery_when_the_release_was_missed(operator, tenant, dovecot, imap_ca,
                                                                              dest_bucket, rclone, rq_queue, settings):
    settings.LEGACYFLO_TENANT_MAX_RUNNING = 1
    first = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="first"))
    second = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="second"))
    rq_queue.empty()
    assert lifecycle.claim(first.pk)
    assert lifecycle.claim(second.pk) is None
    # the first one ends in a way whose release does not see the deferred one (a race between its
    # release and this claim, or a release that failed): recovery's round re-enqueues it
    MigrationRequest.objects.filter(pk=first.pk).update(state=State.FAILED)
    assert queued_job_ids(rq_queue) == []
    assert recovery.recover() == [second.pk]
    second.refresh_from_db()
    assert second.deferred_at is None and queued_job_ids(rq_queue) == [second.job_id]
    run_worker_burst(rq_queue)
    second.refresh_from_db()
    assert second.state == State.COMPLETED


def test_workers_claiming_at_once_never_exceed_the_limit(operator, tenant, dovecot, dest_bucket, rq_queue, settings):
    settings.LEGACYFLO_TENANT_MAX_RUNNING = 2
    reqs = [submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name=f"m{n}"))
            for n in range(6)]
    rq_queue.empty()
    start = threading.Barrier(len(reqs))
    tokens, errors = {}, []

    def worker(pk):
        try:
            start.wait()
            tokens[pk] = lifecycle.claim(pk)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(r.pk,)) for r in reqs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(1 for t in tokens.values() if t) == 2
    assert MigrationRequest.objects.filter(state=State.RUNNING).count() == 2
    assert MigrationRequest.objects.filter(state=State.QUEUED, deferred_at__isnull=False).count() == 4


def test_a_deferred_request_can_be_cancelled(operator, tenant, dovecot, dest_bucket, rq_queue, settings):
    from requests_app.services import request_cancel

    settings.LEGACYFLO_TENANT_MAX_RUNNING = 1
    first = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="first"))
    second = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, file_name="second"))
    assert lifecycle.claim(first.pk)
    assert lifecycle.claim(second.pk) is None
    request_cancel(req=second, actor=operator)
    second.refresh_from_db()
    assert second.state == State.CANCELLED

"""Record retention: old completed requests lose their per-message records (the bucket's
report.csv stays), and the portal says where the report is. Real database and views."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from buckets.models import Bucket
from requests_app.models import ArchiveRecord, MigrationRequest
from requests_app.retention import prune_records

pytestmark = pytest.mark.django_db


def _finished(tenant, bucket, name: str, *, days_ago: int, state: str = "completed", **fields) -> MigrationRequest:
    req = MigrationRequest.objects.create(
        tenant=tenant, request_type="IMAP-S3-ZIP", bucket=bucket, file_name=name, source_user=f"{name}@acme.test",
        state=state, finished_at=timezone.now() - timedelta(days=days_ago),
        result={"report_key": f"mail/{name}.report.csv", "folders": [], "archives": []}, **fields)
    ArchiveRecord.objects.bulk_create([ArchiveRecord(request=req, seq=n, folder="INBOX", source_id=str(n))
                                       for n in range(1, 4)])
    return req


@pytest.fixture
def bucket(tenant):
    return Bucket.objects.create(tenant=tenant, name="acme-mail", region="us-east-1", status="verified")


def test_only_old_completed_requests_lose_their_records(tenant, bucket):
    old = _finished(tenant, bucket, "old", days_ago=40)
    old_with_errors = _finished(tenant, bucket, "partial", days_ago=40, state="completed_with_errors")
    recent = _finished(tenant, bucket, "recent", days_ago=5)
    failed = _finished(tenant, bucket, "failed", days_ago=40, state="failed")  # a retry resumes from them
    incremental = _finished(tenant, bucket, "series", days_ago=40, incremental=True)

    assert prune_records(0) == 0  # retention off: nothing
    assert prune_records(30) == 2
    for req in (old, old_with_errors):
        req.refresh_from_db()
        assert req.records_pruned_at is not None and not req.records.exists()
    for req in (recent, failed, incremental):
        req.refresh_from_db()
        assert req.records_pruned_at is None and req.records.count() == 3
    assert prune_records(30) == 0  # once


def test_the_setting_drives_the_worker_default(tenant, bucket, settings):
    old = _finished(tenant, bucket, "old", days_ago=10)
    settings.LEGACYFLO_RECORD_RETENTION_DAYS = 0
    assert prune_records() == 0
    settings.LEGACYFLO_RECORD_RETENTION_DAYS = 7
    assert prune_records() == 1
    assert not old.records.exists()


def test_the_report_page_of_a_pruned_request_points_at_the_bucket(tenant, bucket, viewer, client_for):
    req = _finished(tenant, bucket, "old", days_ago=40)
    client = client_for(viewer)
    page = client.get(f"/t/{tenant.slug}/requests/{req.uuid}/report/").content.decode()
    assert "records-pruned" not in page and "Download report.csv" in page
    prune_records(30)
    page = client.get(f"/t/{tenant.slug}/requests/{req.uuid}/report/").content.decode()
    assert "records-pruned" in page and "acme-mail/mail/old.report.csv" in page
    assert "Download report.csv" not in page
    response = client.get(f"/t/{tenant.slug}/requests/{req.uuid}/report.csv")
    assert response.status_code == 410 and "acme-mail/mail/old.report.csv" in response.content.decode()

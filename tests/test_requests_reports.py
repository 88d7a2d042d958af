"""The report page's per-folder table: live while a run goes on (from what the run's ledger
stores on the row), the run's own figures once it ended. Real database, ledger and views."""

from __future__ import annotations

import html
import re

import pytest

from buckets.models import Bucket
from connectors.pipeline.ledger import EXPORTED, FAILED, MESSAGE, EntryRecord, PartRecord, Progress
from requests_app.ledger import DatabaseLedger
from requests_app.lifecycle import claim, finish
from requests_app.models import MigrationRequest

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(tenant):
    """A request claimed by a run, with that run's ledger."""
    bucket = Bucket.objects.create(tenant=tenant, name="acme-mail", region="us-east-1", status="verified")
    req = MigrationRequest.objects.create(tenant=tenant, request_type="IMAP-S3-ZIP", bucket=bucket,
                                         file_name="alice", source_user="alice@acme.test")
    token = claim(req.pk)
    return req, token, DatabaseLedger(req.pk, token)


def folder_rows(page: str) -> dict[str, tuple[int, ...]]:
    """Folder → (source count, exported, failed, skipped) as the table shows them."""
    rows = re.findall(r'<tr data-folder="([^"]*)"><td>[^<]*</td><td class="num">(\d+)</td><td class="num">(\d+)</td>\s*'
                      r'<td class="num">(?:<span class="error">)?(\d+)(?:</span>)?</td><td class="num">(\d+)</td>', page)
    return {html.unescape(folder): tuple(int(n) for n in numbers) for folder, *numbers in rows}


def test_live_table_shows_listing_counts_committed_records_and_reported_outcomes(running, client_for, viewer, tenant):
    req, _token, ledger = running
    ledger.begin_upload("alice.zip", "upload-1", "zip")
    ledger.commit_part(PartRecord(1, "etag-1", 1000), [
        EntryRecord(MESSAGE, "INBOX", "1", EXPORTED, size=400),
        EntryRecord(MESSAGE, "INBOX", "2", FAILED, error="server said NO"),
    ])
    ledger.report_progress(Progress(
        phase="transferring", messages_total=9, messages_done=5, current_folder="Archive/2023 & Co",
        folder_counts={"INBOX": 5, "Archive/2023 & Co": 4, "Leer": 0},
        folder_outcomes={"Archive/2023 & Co": [2, 0, 1, 300]},
    ))
    client = client_for(viewer)
    base = f"/t/{tenant.slug}/requests/{req.uuid}/report/"
    page = client.get(base).content.decode()
    expected = {"INBOX": (5, 1, 1, 0), "Archive/2023 & Co": (4, 2, 0, 1), "Leer": (0, 0, 0, 0)}
    assert folder_rows(page) == expected
    assert 'id="in-progress"' in page and f'data-poll="{base}folders/"' in page
    fragment = client.get(f"{base}folders/").content.decode()
    assert folder_rows(fragment) == expected and 'data-final="1"' not in fragment
    data = client.get(f"{base}folders/?format=json").json()
    assert data["state"] == "running" and data["reconciles"] is False
    assert {f["folder"]: (f["source_count"], f["exported"], f["failed"], f["skipped"])
            for f in data["folders"]} == expected
    assert data["totals"]["source_count"] == 9


def test_unchanged_folder_progress_is_not_written_again(running):
    req, _token, ledger = running
    progress = Progress(folder_counts={"INBOX": 5})
    ledger.report_progress(progress)
    assert MigrationRequest.objects.get(pk=req.pk).folder_progress == {"counts": {"INBOX": 5}, "outcomes": {}}
    MigrationRequest.objects.filter(pk=req.pk).update(folder_progress={"counts": {"INBOX": 999}})
    ledger.report_progress(Progress(messages_done=1, folder_counts={"INBOX": 5}))
    row = MigrationRequest.objects.get(pk=req.pk)
    assert row.messages_done == 1 and row.folder_progress == {"counts": {"INBOX": 999}}
    ledger.report_progress(Progress(messages_done=2, folder_counts={"INBOX": 5, "Sent": 2}))
    assert MigrationRequest.objects.get(pk=req.pk).folder_progress["counts"] == {"INBOX": 5, "Sent": 2}


def test_a_new_run_starts_with_an_empty_live_table(running):
    req, token, ledger = running
    ledger.report_progress(Progress(folder_counts={"INBOX": 5}, folder_outcomes={"INBOX": [3, 0, 0, 10]}))
    MigrationRequest.objects.filter(pk=req.pk).update(state="queued")  # as a retry leaves it
    assert claim(req.pk) not in (None, token)
    assert MigrationRequest.objects.get(pk=req.pk).folder_progress == {}


def test_ended_run_shows_its_own_figures_and_stops_polling(running, client_for, viewer, tenant):
    req, token, ledger = running
    ledger.report_progress(Progress(folder_counts={"INBOX": 5}, folder_outcomes={"INBOX": [1, 0, 0, 10]}))
    final = [{"folder": "INBOX", "source_count": 5, "exported": 5, "failed": 0, "skipped": 0, "bytes": 50, "error": ""}]
    assert finish(req.pk, token, state="completed", result={"folders": final, "totals": {}})
    client = client_for(viewer)
    base = f"/t/{tenant.slug}/requests/{req.uuid}/report/"
    page = client.get(base).content.decode()
    assert folder_rows(page) == {"INBOX": (5, 5, 0, 0)} and 'id="reconciled"' in page
    assert "data-poll=" not in page
    assert 'data-final="1"' in client.get(f"{base}folders/").content.decode()


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_report_downloads_keep_a_non_ascii_file_name(tenant, viewer, client_for, kind):
    """RFC 6266 ``filename*`` (as Django's FileResponse writes it), not a MIME encoded-word that
    browsers show as ``=?utf-8?b?…?=``."""
    bucket = Bucket.objects.create(tenant=tenant, name="acme-mail", region="us-east-1", status="verified")
    req = MigrationRequest.objects.create(tenant=tenant, request_type="IMAP-S3-ZIP", bucket=bucket,
                                         file_name="Bérénice Dupré", source_user="berenice@acme.test")
    response = client_for(viewer).get(f"/t/{tenant.slug}/requests/{req.uuid}/report.{kind}")
    assert response.status_code == 200
    suffix = "report.csv" if kind == "csv" else "summary.json"
    assert response["Content-Disposition"] == f"attachment; filename*=utf-8''B%C3%A9r%C3%A9nice%20Dupr%C3%A9.{suffix}"


def test_sample_csv_download_is_an_attachment_with_its_name(tenant, viewer, client_for):
    response = client_for(viewer).get(f"/t/{tenant.slug}/requests/sample/IMAP-S3-ZIP.csv")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="imap-s3-zip-sample.csv"'


def test_a_running_request_shows_its_pace_and_the_time_left():
    import datetime as dt

    from requests_app.models import MigrationRequest
    from requests_app.reports import throughput

    started = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    req = MigrationRequest(state="running", started_at=started, messages_total=1000, messages_done=200,
                           messages_failed=0, bytes_done=100 * 1024 * 1024)
    pace = throughput(req, now=started + dt.timedelta(seconds=100))
    assert pace == {"messages_per_s": 2.0, "bytes_per_s": 1024 * 1024, "remaining_s": 400.0}
    assert throughput(MigrationRequest(state="running", started_at=started), now=started)["remaining_s"] is None
    req.state = "completed"
    assert throughput(req) is None

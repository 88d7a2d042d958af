"""The request list at scale: search, filters, a mailbox column, bulk retry / cancel through the
services, and CSV batches with their own page and totals — all inside the tenant."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from buckets.models import Bucket
from requests_app.models import MigrationRequest, RequestBatch
from tests.test_requests_forms import row, to_csv

pytestmark = pytest.mark.django_db


@pytest.fixture
def bucket(tenant):
    return Bucket.objects.create(tenant=tenant, name="acme-backups", region="us-east-1", status="verified",
                                 purpose="destination", endpoint_url="http://127.0.0.1:9")


@pytest.fixture
def second_bucket(tenant):
    return Bucket.objects.create(tenant=tenant, name="acme-archive", region="us-east-1", status="verified",
                                 purpose="destination", endpoint_url="http://127.0.0.1:9")


def upload(client, tenant, rows, name="mailboxes.csv"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(f"/t/{tenant.slug}/requests/upload/",
                       {"file": SimpleUploadedFile(name, to_csv(rows), content_type="text/csv")})


@pytest.fixture
def listed(tenant, operator, bucket, second_bucket, client_for):
    """Four requests: a CSV batch of two, two single ones in other states, types and buckets."""
    client = client_for(operator)
    response = upload(client, tenant, [row(title="Sales team", source_user="bob@acme.test", file_name="bob"),
                                       row(title="Carol", source_user="carol@acme.test", file_name="carol")])
    assert response.status_code == 302
    batch = RequestBatch.objects.get(tenant=tenant)
    assert response["Location"] == f"/t/{tenant.slug}/requests/batches/{batch.uuid}/"
    upload(client, tenant, [row(title="Dave", source_user="dave@acme.test", file_name="dave",
                                request_type="IMAP-S3-PST", bucket="acme-archive")], name="single.csv")
    MigrationRequest.objects.filter(source_user="dave@acme.test").update(
        state="failed", created_at=timezone.now() - dt.timedelta(days=10))
    upload(client, tenant, [row(title="Erin", source_user="erin@acme.test", file_name="erin")], name="e.csv")
    MigrationRequest.objects.filter(source_user="erin@acme.test").update(state="completed")
    return client, batch


def mailboxes(client, url) -> set[str]:
    html = client.get(url).content.decode()
    return {m for m in ("bob@", "carol@", "dave@", "erin@") if f'title="{m}acme.test"' in html}


def test_search_by_mailbox_or_title_and_every_filter(listed, tenant, second_bucket):
    client, batch = listed
    base = f"/t/{tenant.slug}/requests/"
    assert mailboxes(client, base) == {"bob@", "carol@", "dave@", "erin@"}  # the mailbox column
    assert mailboxes(client, base + "?q=CAROL@acme") == {"carol@"}
    assert mailboxes(client, base + "?q=sales") == {"bob@"}
    assert mailboxes(client, base + "?type=IMAP-S3-PST") == {"dave@"}
    assert mailboxes(client, base + "?state=completed") == {"erin@"}
    assert mailboxes(client, base + f"?bucket={second_bucket.uuid}") == {"dave@"}
    assert mailboxes(client, base + f"?batch={batch.uuid}") == {"bob@", "carol@"}
    week_ago = (timezone.localdate() - dt.timedelta(days=7)).isoformat()
    assert mailboxes(client, base + f"?created_to={week_ago}") == {"dave@"}
    assert mailboxes(client, base + f"?created_from={week_ago}&state=queued") == {"bob@", "carol@"}


def test_a_batch_page_shows_its_requests_and_totals(listed, tenant):
    client, batch = listed
    html = client.get(f"/t/{tenant.slug}/requests/batches/{batch.uuid}/").content.decode()
    assert "CSV batch: mailboxes.csv" in html and 'id="batch-totals"' in html
    assert mailboxes(client, f"/t/{tenant.slug}/requests/batches/{batch.uuid}/") == {"bob@", "carol@"}
    assert '<span class="num">2</span><span class="lbl">requests</span>' in html
    assert '<span class="num">2</span><span class="lbl">Queued</span>' in html


def test_bulk_cancel_and_retry_go_through_the_services_rules(listed, tenant):
    client, batch = listed
    queued = list(MigrationRequest.objects.filter(batch=batch))
    erin = MigrationRequest.objects.get(source_user="erin@acme.test")
    response = client.post(f"/t/{tenant.slug}/requests/bulk/", {
        "action": "cancel", "selected": [str(r.uuid) for r in queued] + [str(erin.uuid), "not-a-uuid"],
        "next": f"/t/{tenant.slug}/requests/?state=queued"}, follow=True)
    assert response.redirect_chain[-1][0] == f"/t/{tenant.slug}/requests/?state=queued"
    text = response.content.decode()
    assert "2 requests cancellation requested." in text
    assert "1 not cancelled: Erin: The request is completed and cannot be cancelled." in text
    assert {r.state for r in MigrationRequest.objects.filter(batch=batch)} == {"cancelled"}

    dave = MigrationRequest.objects.get(source_user="dave@acme.test")
    client.post(f"/t/{tenant.slug}/requests/bulk/", {"action": "retry", "selected": [str(dave.uuid), str(erin.uuid)]})
    dave.refresh_from_db(), erin.refresh_from_db()
    assert (dave.state, erin.state) == ("queued", "completed")


def test_another_tenant_gets_404_for_a_batch_and_its_requests_are_untouched(listed, tenant, outsider, other_tenant,
                                                                            client_for):
    _client, batch = listed
    foreign = client_for(outsider)
    assert foreign.get(f"/t/{tenant.slug}/requests/batches/{batch.uuid}/").status_code == 404
    assert foreign.get(f"/t/{other_tenant.slug}/requests/batches/{batch.uuid}/").status_code == 404
    assert "bob@" not in foreign.get(f"/t/{other_tenant.slug}/requests/?batch={batch.uuid}").content.decode()
    targets = [str(r.uuid) for r in MigrationRequest.objects.filter(tenant=tenant)]
    foreign.post(f"/t/{other_tenant.slug}/requests/bulk/", {"action": "cancel", "selected": targets})
    assert not MigrationRequest.objects.filter(tenant=tenant, state="cancelled").exists()


def test_a_viewer_sees_the_list_without_checkboxes_and_cannot_act(listed, tenant, viewer, client_for):
    client = client_for(viewer)
    html = client.get(f"/t/{tenant.slug}/requests/").content.decode()
    assert 'name="selected"' not in html and "bob@acme.test" in html
    queued = MigrationRequest.objects.filter(state="queued").first()
    assert client.post(f"/t/{tenant.slug}/requests/bulk/", {"action": "cancel",
                                                           "selected": [str(queued.uuid)]}).status_code == 403


def test_requests_submit_makes_a_batch_named_after_its_file(tenant, bucket, tmp_path):
    from django.core.management import call_command

    path = tmp_path / "q3.csv"
    path.write_bytes(to_csv([row(file_name="a1"), row(file_name="a2")]))
    call_command("requests_submit", "--tenant", tenant.slug, str(path))
    batch = RequestBatch.objects.get(tenant=tenant)
    assert (batch.name, batch.source, batch.count, batch.requests.count()) == ("q3.csv", "cli", 2, 2)


def test_the_dashboard_totals_link_to_the_filtered_list(listed, tenant):
    client, batch = listed
    MigrationRequest.objects.filter(source_user="erin@acme.test").update(messages_done=40, bytes_done=3 * 1024 ** 3)
    MigrationRequest.objects.filter(source_user="bob@acme.test").update(state="running")
    html = client.get(f"/t/{tenant.slug}/").content.decode()
    base = f"/t/{tenant.slug}/requests/"

    def tile(name):
        start = html.index(f'id="tile-{name}"')
        return html[html.rindex("<a", 0, start):html.index("</a>", start)]

    assert f'href="{base}"' in tile("mailboxes") and '<span class="num">4</span>' in tile("mailboxes")
    assert f'href="{base}?state=completed"' in tile("messages") and '<span class="num">40</span>' in tile("messages")
    assert '<span class="num">3.0 GB</span>' in tile("size")
    assert '<span class="num">50.0 %</span>' in tile("success")  # erin completed, dave failed
    assert f'href="{base}?state=failed"' in tile("success")
    assert f'href="{base}?state=running"' in tile("running") and '<span class="num">1</span>' in tile("running")
    assert mailboxes(client, base + "?state=running") == {"bob@"}


def test_the_dashboard_counts_only_its_own_tenant(listed, outsider, other_tenant, client_for):
    html = client_for(outsider).get(f"/t/{other_tenant.slug}/").content.decode()
    start = html.index('id="tile-mailboxes"')
    assert '<span class="num">0</span>' in html[start:html.index("</a>", start)]


def test_check_only_lists_every_rows_errors_and_submits_nothing(tenant, operator, bucket, client_for):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = client_for(operator)
    bad = to_csv([row(file_name="ok1"), row(source_port="x", file_name="b1"), row(bucket="nope", file_name="b2")])
    html = client.post(f"/t/{tenant.slug}/requests/upload/", {
        "check_only": "1", "file": SimpleUploadedFile("t.csv", bad, content_type="text/csv")}).content.decode()
    assert "Nothing was submitted" in html and "Line 3" in html and "Line 4" in html
    assert 'download="csv-errors.csv"' in html and "line%2Ccolumn%2Cerror" in html
    good = to_csv([row(file_name="g1"), row(file_name="g2")])
    html = client.post(f"/t/{tenant.slug}/requests/upload/", {
        "check_only": "1", "file": SimpleUploadedFile("t.csv", good, content_type="text/csv")}).content.decode()
    assert "All 2 rows are valid." in html and "Nothing was submitted yet" in html
    assert not MigrationRequest.objects.exists() and not RequestBatch.objects.exists()


def test_check_only_finds_a_destination_another_request_holds(tenant, operator, bucket, client_for):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = client_for(operator)
    upload(client, tenant, [row(file_name="taken")])
    html = client.post(f"/t/{tenant.slug}/requests/upload/", {"check_only": "1", "file": SimpleUploadedFile(
        "t.csv", to_csv([row(file_name="taken")]), content_type="text/csv")}).content.decode()
    assert "Line 2:" in html and MigrationRequest.objects.count() == 1


def test_errors_csv_has_a_row_per_error():
    import csv
    import io

    from requests_app.csvimport import errors_csv

    rows = list(csv.reader(io.StringIO(errors_csv(["Line 3, column source_port: Enter a whole number.",
                                                   "Line 4: no such bucket", "The file is empty."]))))
    assert rows == [["line", "column", "error"], ["3", "source_port", "Enter a whole number."],
                    ["4", "", "no such bucket"], ["", "", "The file is empty."]]


def test_the_sample_csv_names_the_tenants_own_bucket(tenant, viewer, bucket, client_for):
    body = client_for(viewer).get(f"/t/{tenant.slug}/requests/sample/IMAP-S3-ZIP.csv").content.decode()
    assert ",acme-backups," in body and "my-backup-bucket" not in body


# ---- Run again (clone) -------------------------------------------------------------------------

@pytest.fixture
def original(tenant, operator, bucket):
    from tests.portal_fixtures import submit

    req = submit(tenant, operator, "IMAP-S3-ZIP", {
        "title": "Frank", "source_server": "imap.acme.test", "source_port": 993, "source_security": "ssl",
        "source_user": "frank@acme.test", "source_password": "frank-secret-pw", "folders": "INBOX; Sent",
        "bucket": str(bucket.uuid), "s3_prefix": "mail", "file_name": "frank"})
    MigrationRequest.objects.filter(pk=req.pk).update(state="completed")
    return req


def clone_post(original, **changes):
    data = {"clone_of": str(original.uuid), "title": "Frank again", "source_server": "imap.acme.test",
            "source_port": "993", "source_security": "ssl", "source_user": "frank@acme.test", "source_password": "",
            "folders": "INBOX; Sent", "bucket": str(original.bucket.uuid), "s3_prefix": "mail",
            "file_name": "frank-2"}
    data.update(changes)
    return data


def test_run_again_fills_the_form_without_the_password(original, tenant, operator, client_for):
    html = client_for(operator).get(f"/t/{tenant.slug}/requests/{original.uuid}/clone/").content.decode()
    assert 'value="frank@acme.test"' in html and 'value="INBOX; Sent"' in html and 'value="imap.acme.test"' in html
    assert 'name="clone_of" value="' + str(original.uuid) in html and 'value="frank-' in html
    assert "frank-secret-pw" not in html


def test_run_again_reuses_the_stored_password_only_for_the_same_mailbox(original, tenant, operator, client_for):
    client = client_for(operator)
    url = f"/t/{tenant.slug}/requests/new/IMAP-S3-ZIP/"
    for change in ({"source_server": "imap.evil.test"}, {"source_port": "143"}, {"source_security": "starttls"},
                   {"source_user": "grace@acme.test"}):
        response = client.post(url, clone_post(original, **change))
        assert response.status_code == 200 and "its stored password is not used" in response.content.decode()
        assert "frank-secret-pw" not in response.content.decode()
    assert MigrationRequest.objects.count() == 1
    response = client.post(url, clone_post(original))
    assert response.status_code == 302
    again = MigrationRequest.objects.exclude(pk=original.pk).get()
    assert (again.source_password, again.folders, again.file_name) == ("frank-secret-pw", ["INBOX", "Sent"], "frank-2")


def test_another_tenant_cannot_clone_or_borrow_a_password(original, tenant, outsider, other_tenant, client_for):
    client = client_for(outsider)
    assert client.get(f"/t/{tenant.slug}/requests/{original.uuid}/clone/").status_code == 404
    assert client.get(f"/t/{other_tenant.slug}/requests/{original.uuid}/clone/").status_code == 404
    assert client.post(f"/t/{other_tenant.slug}/requests/new/IMAP-S3-ZIP/",
                       clone_post(original)).status_code == 404
    assert client.post(f"/t/{other_tenant.slug}/requests/new/IMAP-S3-ZIP/test/",
                       clone_post(original)).status_code == 404


def test_an_incremental_series_is_one_line_with_its_run_count(tenant, operator, bucket, client_for):
    """Three runs of one series and a one-off request: the list shows the series once (its latest
    run, "series · 3 runs") and the one-off; a filter lists every matching run on its own."""
    base = dict(tenant=tenant, request_type="IMAP-S3-ZIP", bucket=bucket, source_server="imap.acme.test",
                source_user="frank@acme.test", file_name="frank", incremental=True, series_key="s" * 64)
    now = timezone.now()
    runs = [MigrationRequest.objects.create(**base, title=f"Frank run {n}", state="completed") for n in (1, 2, 3)]
    for n, run in enumerate(runs):
        MigrationRequest.objects.filter(pk=run.pk).update(created_at=now - dt.timedelta(days=3 - n))
    MigrationRequest.objects.create(**{**base, "incremental": False, "series_key": "", "file_name": "once"},
                                    title="Frank once", state="completed")
    client = client_for(operator)
    html = client.get(f"/t/{tenant.slug}/requests/").content.decode()
    assert "Frank run 3" in html and "Frank once" in html
    assert "Frank run 1" not in html and "Frank run 2" not in html
    assert "series · 3 runs" in html
    filtered = client.get(f"/t/{tenant.slug}/requests/?state=completed").content.decode()
    assert all(f"Frank run {n}" in filtered for n in (1, 2, 3))

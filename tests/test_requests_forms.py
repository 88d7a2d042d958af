"""Request forms and the CSV importer: the same validation for the web page and bulk files."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.management import call_command

from buckets.models import Bucket
from requests_app.csvimport import parse_csv, sample_csv
from requests_app.forms import RequestForm, split_folders
from requests_app.models import MigrationRequest
from requests_app.types import REQUEST_TYPES, available_types, get_type


@pytest.fixture
def bucket(tenant):
    return Bucket.objects.create(tenant=tenant, name="acme-backups", region="us-east-1", status="verified",
                                 purpose="destination", endpoint_url="http://127.0.0.1:9")


def row(**overrides):
    data = {"request_type": "IMAP-S3-ZIP", "title": "Alice", "source_server": "imap.acme.test", "source_port": "993",
            "source_security": "ssl", "source_user": "alice@acme.test", "source_password": "pw-alice",
            "folders": "", "exclude_folders": "Trash; Junk", "since": "2020-01-01", "before": "",
            "bucket": "acme-backups", "s3_prefix": "mail/2026", "file_name": "alice"}
    data.update(overrides)
    return data


def to_csv(rows) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def test_folder_lists_use_semicolons_and_slashes():
    assert split_folders(" INBOX; Projekte/日本語 ;; /Sent/") == ["INBOX", "Projekte/日本語", "Sent"]


@pytest.mark.django_db
def test_form_applies_provider_defaults(tenant, bucket):
    form = RequestForm({"source_user": "bob@gmail.com", "source_password": "app-pw", "bucket": str(bucket.uuid)},
                       rtype=REQUEST_TYPES["GMAIL-S3-ZIP"], tenant=tenant)
    assert form.is_valid(), form.errors
    data = form.cleaned_data
    assert (data["source_server"], data["source_port"], data["source_security"]) == ("imap.gmail.com", 993, "ssl")
    assert data["bucket"] == bucket and data["file_name"].startswith("bob@gmail.com-")


@pytest.mark.django_db
@pytest.mark.parametrize("field,value,message", [
    ("s3_prefix", "/lead", "cannot start or end"), ("s3_prefix", "a/../b", "'..'"), ("file_name", "a/b", "no '/'"),
    ("source_server", "bad host!", "not a valid host"), ("source_port", "70000", "less than or equal"),
    ("since", "2024-13-01", "valid date"), ("bucket", "nope", "No bucket named nope"),
    ("source_password", "", "required"),
])
def test_form_rejects_bad_values(tenant, bucket, field, value, message):
    form = RequestForm(row(**{field: value}), rtype=REQUEST_TYPES["IMAP-S3-ZIP"], tenant=tenant)
    assert not form.is_valid()
    assert message in " ".join(form.errors.get(field, []))


@pytest.mark.django_db
def test_unverified_bucket_is_refused(tenant):
    Bucket.objects.create(tenant=tenant, name="acme-unverified", region="us-east-1", status="failed")
    form = RequestForm(row(bucket="acme-unverified"), rtype=REQUEST_TYPES["IMAP-S3-ZIP"], tenant=tenant)
    assert not form.is_valid() and "not a verified destination" in form.errors["bucket"][0]


@pytest.mark.django_db
def test_another_tenants_bucket_is_invisible(tenant, other_tenant):
    Bucket.objects.create(tenant=other_tenant, name="globex-backups", region="us-east-1", status="verified")
    form = RequestForm(row(bucket="globex-backups"), rtype=REQUEST_TYPES["IMAP-S3-ZIP"], tenant=tenant)
    assert not form.is_valid() and "No bucket named globex-backups" in form.errors["bucket"][0]


@pytest.mark.django_db
def test_csv_all_or_nothing_with_per_row_errors(tenant, bucket):
    rows = [row(), row(source_user="bob@acme.test", file_name="bob", since="yesterday"),
            row(request_type="NOPE-S3-ZIP", file_name="c"), row(file_name="alice")]
    result = parse_csv(to_csv(rows), tenant=tenant)
    assert not result.ok
    text = "\n".join(result.errors)
    assert "Line 3: since: Enter a valid date." in text
    assert "Line 4: request_type 'NOPE-S3-ZIP' is not one of" in text
    assert "Line 5: same bucket, prefix and file name as line 2" in text
    # Rows of one type share the form's fields, not their errors or data.
    mixed = parse_csv(to_csv([row(since="yesterday"), row(file_name="bob", source_user="bob@acme.test")]), tenant=tenant)
    assert mixed.errors == ["Line 2: since: Enter a valid date."]
    assert [(r.line, r.data["source_user"], str(r.data["since"])) for r in mixed.rows] == [
        (3, "bob@acme.test", "2020-01-01")]


@pytest.mark.django_db
def test_csv_thousand_rows(tenant, bucket):
    rows = [row(source_user=f"user{i}@acme.test", file_name=f"user{i}", title=f"User {i}") for i in range(1000)]
    result = parse_csv(to_csv(rows), tenant=tenant)
    assert result.ok, result.errors[:3]
    assert len(result.rows) == 1000 and result.rows[-1].data["source_user"] == "user999@acme.test"
    assert result.rows[0].data["exclude_folders"] == ["Trash", "Junk"]


@pytest.mark.django_db
def test_csv_structure_errors(tenant, bucket):
    assert "unknown column(s) colour" in parse_csv(b"request_type,colour\nIMAP-S3-ZIP,red\n", tenant=tenant).errors[0]
    assert parse_csv("request_type\nÄ".encode("latin-1"), tenant=tenant).errors[0].startswith(
        "Line 2: the file is not UTF-8 text (byte 13).")
    assert "no requests" in parse_csv(b"request_type,title\n", tenant=tenant).errors[0]
    assert parse_csv(b"\xef\xbb\xbf" + to_csv([row()]), tenant=tenant).ok  # Excel's BOM


@pytest.mark.django_db
def test_sample_csv_parses_once_bucket_exists(tenant):
    from providers.models import ProviderConnection

    Bucket.objects.create(tenant=tenant, name="my-backup-bucket", region="us-east-1", status="verified")
    # The restore types' samples read from a source bucket.
    Bucket.objects.create(tenant=tenant, name="my-source-bucket", region="us-east-1", status="verified",
                          purpose="source")
    # The OAuth/API types' samples name a connection called like its provider.
    ProviderConnection.objects.create(tenant=tenant, provider="google", name="google",
                                      service_account_key='{"type": "service_account"}')
    ProviderConnection.objects.create(tenant=tenant, provider="microsoft", name="microsoft",
                                      client_id="3fa85f64-5717-4562-b3fc-2c963f66afa6", client_secret="x",
                                      directory_tenant="contoso.onmicrosoft.com")
    for rtype in available_types():
        result = parse_csv(sample_csv(rtype).encode(), tenant=tenant)
        assert result.ok, (rtype.code, result.errors)


def test_request_types_command(capsys):
    call_command("request_types")
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("IMAP-S3-ZIP\trequest_type,title,source_server") for line in lines)
    call_command("request_types", "--sample", "YAHOO-S3-ZIP")
    sample = capsys.readouterr().out
    assert sample.startswith("request_type,") and "imap.mail.yahoo.com" in sample
    assert get_type("yahoo-s3-zip") is REQUEST_TYPES["YAHOO-S3-ZIP"]


@pytest.mark.django_db
def test_requests_submit_command(tenant, bucket, tmp_path, rq_queue, capsys):
    good = tmp_path / "good.csv"
    good.write_bytes(to_csv([row(), row(source_user="bob@acme.test", file_name="bob")]))
    call_command("requests_submit", "--tenant", tenant.slug, str(good))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.endswith(" queued") for line in out)
    assert MigrationRequest.objects.filter(tenant=tenant).count() == 2
    bad = tmp_path / "bad.csv"
    bad.write_bytes(to_csv([row(source_user="carol@acme.test", file_name="carol"), row(file_name="x", bucket="zzz")]))
    with pytest.raises(SystemExit) as exit_info:
        call_command("requests_submit", "--tenant", tenant.slug, str(bad))
    assert exit_info.value.code == 2
    assert "Line 3: bucket: No bucket named zzz" in capsys.readouterr().err
    assert MigrationRequest.objects.filter(tenant=tenant).count() == 2  # nothing from the bad file
    # Re-submitting the same file would overwrite the same archives: refused.
    with pytest.raises(SystemExit):
        call_command("requests_submit", "--tenant", tenant.slug, str(good))
    assert "is already written by request" in capsys.readouterr().err


@pytest.mark.django_db
def test_zip_and_pst_of_one_name_would_share_reports_so_refused(tenant, bucket, rq_queue):
    rows = [row(file_name="same"), row(request_type="IMAP-S3-PST", file_name="same")]
    result = parse_csv(to_csv(rows), tenant=tenant)
    assert "Line 3: same bucket, prefix and file name as line 2." in result.errors
    from requests_app.services import requests_submit_many

    first = parse_csv(to_csv(rows[:1]), tenant=tenant)
    requests_submit_many(tenant=tenant, actor=None, rows=first.rows)
    second = parse_csv(to_csv(rows[1:]), tenant=tenant)
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="already written"):
        requests_submit_many(tenant=tenant, actor=None, rows=second.rows)


def upload_csv(client, tenant, body: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(f"/t/{tenant.slug}/requests/upload/",
                       {"file": SimpleUploadedFile("requests.csv", body, content_type="text/csv")})


@pytest.mark.django_db
def test_a_cell_over_the_csv_field_limit_is_refused_with_its_line_and_column(tenant, bucket, operator, client_for):
    body = to_csv([row(), row(source_user="bob@acme.test", file_name="bob", title="x" * 140_000)])
    response = upload_csv(client_for(operator), tenant, body)
    assert response.status_code == 200
    assert "Line 3, column title: the value is longer than 131,072 characters." in response.context["errors"]
    assert not MigrationRequest.objects.exists()


@pytest.mark.django_db
def test_an_unbalanced_quote_before_more_than_128_kb_is_refused_with_its_line_and_column(
        tenant, bucket, operator, client_for):
    rows = [row(source_user=f"user{n}@acme.test", file_name=f"user{n}") for n in range(1500)]
    body = to_csv(rows).replace(b"\nIMAP-S3-ZIP,Alice,imap.acme.test,993,ssl,user7@", b'\nIMAP-S3-ZIP,"Alice,imap.acme.test,993,ssl,user7@', 1)
    assert len(body) > 180_000  # more than csv's field limit after the quote
    response = upload_csv(client_for(operator), tenant, body)
    assert response.status_code == 200
    [error] = response.context["errors"]
    assert error.startswith("Line 9, column title: a quoted value is never closed")
    assert not MigrationRequest.objects.exists()


@pytest.mark.django_db
def test_a_quote_left_open_at_the_end_of_the_file_is_refused_not_read_as_a_value(tenant, bucket):
    body = to_csv([row()]).replace(b",alice\r\n", b',"alice\r\n')
    assert body.endswith(b'mail/2026,"alice\r\n')  # read leniently, the value would be "alice\r\n"
    assert parse_csv(body, tenant=tenant).errors == [
        "Line 2, column file_name: a quoted value is never closed (a '\"' without its closing '\"'), so nothing "
        "after it can be read."]


@pytest.mark.django_db
def test_text_after_a_closing_quote_is_refused_with_its_line_and_column(tenant, bucket):
    body = to_csv([row()]).replace(b",Alice,", b',"Al"ice,')
    assert parse_csv(body, tenant=tenant).errors == [
        "Line 2, column title: text follows a closing quote; inside a quoted value write '\"' as '\"\"'."]


@pytest.mark.django_db
def test_a_quoted_value_may_hold_commas_quotes_and_line_breaks(tenant, bucket):
    result = parse_csv(to_csv([row(title='Alice, "the boss"\nof sales'), row(file_name="bob", source_user="b@x")]),
                       tenant=tenant)
    assert result.ok, result.errors
    assert result.rows[0].data["title"] == 'Alice, "the boss"\nof sales'
    assert [r.line for r in result.rows] == [2, 4]  # line numbers count the line break inside the value


@pytest.mark.django_db
def test_a_repeated_column_is_refused(tenant, bucket):
    body = b"request_type,title,title\nIMAP-S3-ZIP,a,b\n"
    assert "Line 1: column(s) title appear more than once." in parse_csv(body, tenant=tenant).errors


@pytest.mark.django_db
def test_a_file_over_the_row_limit_is_refused_before_any_row_is_checked(
        tenant, bucket, settings, django_assert_max_num_queries):
    settings.LEGACYFLO_CSV_MAX_ROWS = 5
    rows = [row(source_user=f"user{n}@acme.test", file_name=f"user{n}", bucket="nope") for n in range(12)]
    with django_assert_max_num_queries(0):  # checking a row looks up its bucket
        result = parse_csv(to_csv(rows), tenant=tenant)
    assert result.errors == ["The file has more than 5 requests (the most one file may hold); split it."]
    assert parse_csv(to_csv(rows[:5]), tenant=tenant).errors[0].startswith("Line 2: bucket: No bucket named nope")


@pytest.mark.django_db
def test_checking_and_submitting_a_csv_takes_no_query_per_row(
        tenant, bucket, rq_queue, django_assert_max_num_queries, django_capture_on_commit_callbacks):
    """The documented maximum must go in one web request: checking reads the tenant once, and
    submitting inserts in bulk (SQLite's parameter limit allows ~38 rows per INSERT)."""
    from requests_app.services import requests_submit_many

    rows = [row(source_user=f"user{n}@acme.test", file_name=f"user{n}") for n in range(300)]
    with django_assert_max_num_queries(3):
        result = parse_csv(to_csv(rows), tenant=tenant)
    assert result.ok, result.errors[:3]
    with django_capture_on_commit_callbacks(execute=True), django_assert_max_num_queries(30):
        created = requests_submit_many(tenant=tenant, actor=None, rows=result.rows)
    assert len(created) == 300
    stored = MigrationRequest.objects.for_tenant(tenant).order_by("id")
    assert [r.source_user for r in stored] == [f"user{n}@acme.test" for n in range(300)]
    assert stored[0].source_password == "pw-alice" and len({r.options["batch"] for r in stored}) == 1
    jobs = {job.id: job.args for job in rq_queue.get_jobs()}
    assert len(jobs) == 300 and all(jobs[r.job_id] == (r.pk,) for r in stored)


@pytest.mark.django_db
def test_a_csv_row_that_would_overwrite_an_existing_archive_is_refused_by_line(tenant, bucket, rq_queue):
    from django.core.exceptions import ValidationError

    from requests_app.services import requests_submit_many

    requests_submit_many(tenant=tenant, actor=None, rows=parse_csv(to_csv([row(file_name="Ärger")]), tenant=tenant).rows)
    again = parse_csv(to_csv([row(file_name="bob"), row(file_name="ärger")]), tenant=tenant)
    assert again.ok
    with pytest.raises(ValidationError) as refused:
        requests_submit_many(tenant=tenant, actor=None, rows=again.rows)
    assert refused.value.messages == [
        "Line 3: acme-backups/mail/2026/Ärger.* is already written by request “Alice”: choose another file name or "
        "prefix."]
    assert MigrationRequest.objects.count() == 1


@pytest.mark.django_db
def test_requests_submit_reports_a_malformed_file_like_the_upload_page(tenant, bucket, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(to_csv([row(title="x" * 140_000)]))
    with pytest.raises(SystemExit) as exit_info:
        call_command("requests_submit", "--tenant", tenant.slug, str(bad))
    assert exit_info.value.code == 2
    assert "Line 2, column title: the value is longer than 131,072 characters." in capsys.readouterr().err


# ---- file names whose archive could be another name's (issue 11.3) -----------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("file_name,message", [
    ("alice.part001", "named like a volume of alice"), ("alice.PART12", "named like a volume"),
    ("alice.zip.pst", "cannot end in .zip or .pst"), ("alice.zip.zip", "cannot end in .zip or .pst"),
])
def test_file_names_that_could_name_another_requests_files_are_refused(tenant, bucket, file_name, message):
    form = RequestForm(row(file_name=file_name), rtype=REQUEST_TYPES["IMAP-S3-ZIP"], tenant=tenant)
    assert not form.is_valid() and message in " ".join(form.errors["file_name"])
    result = parse_csv(to_csv([row(file_name="bob"), row(file_name=file_name)]), tenant=tenant)
    assert any(e.startswith("Line 3: file_name:") and message in e for e in result.errors), result.errors


@pytest.mark.django_db
def test_the_service_refuses_such_file_names_whatever_calls_it(tenant, bucket, operator):
    from django.core.exceptions import ValidationError

    from requests_app.services import request_submit

    form = RequestForm(row(), rtype=REQUEST_TYPES["IMAP-S3-ZIP"], tenant=tenant)
    assert form.is_valid(), form.errors
    for name in ("alice.part001", ".legacyflo-new.alice", "alice.ZIP"):
        with pytest.raises(ValidationError):
            request_submit(tenant=tenant, actor=operator, rtype=REQUEST_TYPES["IMAP-S3-ZIP"],
                           data={**form.cleaned_data, "file_name": name})
    assert not MigrationRequest.objects.filter(tenant=tenant).exists()


@pytest.mark.django_db
def test_a_name_is_taken_by_an_older_request_whose_archive_is_named_like_its_volume(tenant, bucket, operator):
    """A request named ``alice.part001`` from before such names were refused holds ``alice``: a
    split archive of ``alice`` would overwrite its ``alice.part001.zip``."""
    from django.core.exceptions import ValidationError

    from requests_app.services import request_submit

    MigrationRequest.objects.create(tenant=tenant, request_type="IMAP-S3-ZIP", bucket=bucket, s3_prefix="mail/2026",
                                    file_name="alice.part001", state="completed")
    form = RequestForm(row(), rtype=REQUEST_TYPES["IMAP-S3-ZIP"], tenant=tenant)
    assert form.is_valid(), form.errors
    with pytest.raises(ValidationError, match="already written by request"):
        request_submit(tenant=tenant, actor=operator, rtype=REQUEST_TYPES["IMAP-S3-ZIP"], data=form.cleaned_data)
    request_submit(tenant=tenant, actor=operator, rtype=REQUEST_TYPES["IMAP-S3-ZIP"],
                   data={**form.cleaned_data, "file_name": "alice.partial"})  # not a volume name: its own


@pytest.mark.django_db
def test_destination_names_are_compared_literally_and_case_insensitively(tenant, bucket):
    from requests_app.selectors import destination_holders

    taken = MigrationRequest.objects.create(tenant=tenant, request_type="IMAP-S3-ZIP", bucket=bucket,
                                            s3_prefix="Mail", file_name="a b+c@d.e-f", state="completed")
    holders = lambda name, prefix="mail": list(destination_holders(  # noqa: E731
        tenant, bucket=bucket, s3_prefix=prefix, file_name=name))
    assert holders("A B+C@D.E-F") == [taken]
    assert holders("a bbc@d.e-f") == holders("a b+c@dxe-f") == holders("a b+c@d.e-f", "other") == []
    MigrationRequest.objects.filter(pk=taken.pk).update(state="failed")
    assert holders("a b+c@d.e-f") == []  # failed before writing anything: the name is free again
    MigrationRequest.objects.filter(pk=taken.pk).update(checkpoint={"archives": ["Mail/a b+c@d.e-f.zip"]})
    assert holders("a b+c@d.e-f") == [taken]  # its earlier archive is still there

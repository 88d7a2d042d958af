"""Restore request types: registry, form, CSV rows and the archive key, against a real S3 server (rclone)."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.management import call_command

from buckets.models import Bucket
from connectors.pipeline.restore_keys import ArchiveNotFound, resolve_archive, restore_file_name
from requests_app.csvimport import parse_csv
from requests_app.forms import RestoreForm, form_class
from requests_app.types import REQUEST_TYPES, NOTIFY_COLUMNS, RESTORE_COLUMNS, get_type, restore_type_for

RESTORE_CODES = ("S3-IMAP-ZIP", "S3-IMAP-PST", "S3-MITHI-ZIP")


def _bucket(tenant, rclone, name, purpose="source"):
    return Bucket.objects.create(tenant=tenant, name=name, region="us-east-1", endpoint_url=rclone.url,
                                 purpose=purpose, auth_mode="keys", access_key_id=rclone.access_key,
                                 secret_access_key=rclone.secret_key, status="verified")


@pytest.fixture
def source_bucket(tenant, rclone, s3_bucket):
    client = rclone.client()
    for key in ("mail/alice.zip", "mail/split.part001.zip", "mail/split.part002.zip", "mail/gap.part001.zip",
                "mail/gap.part003.zip", "mail/bob.pst"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    return _bucket(tenant, rclone, s3_bucket)


def form_data(bucket, **overrides) -> dict:
    data = {"bucket": str(bucket.uuid), "archive_key": "mail/alice.zip", "target_server": "imap.acme.test",
            "target_port": "993", "target_security": "ssl", "target_user": "alice@acme.test",
            "target_password": "pw-alice"}
    data.update(overrides)
    return data


def test_the_three_restore_types_are_listed_with_their_csv_columns_and_a_sample(capsys):
    call_command("request_types")
    lines = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    for code in RESTORE_CODES:
        assert lines[code].split(",") == RESTORE_COLUMNS + NOTIFY_COLUMNS
        call_command("request_types", sample=code)
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert rows and list(rows[0]) == RESTORE_COLUMNS + NOTIFY_COLUMNS and rows[0]["request_type"] == code
        assert rows[0]["archive_key"].endswith("." + REQUEST_TYPES[code].format)
    assert "target_password" not in lines["IMAP-S3-ZIP"]


def test_every_backup_has_a_restore_type_that_reads_its_format():
    assert restore_type_for(get_type("IMAP-S3-ZIP")).code == "S3-IMAP-ZIP"
    assert restore_type_for(get_type("M365API-S3-PST")).code == "S3-IMAP-PST"
    assert restore_type_for(get_type("MITHI-S3-ZIP")).code == "S3-MITHI-ZIP"
    assert restore_type_for(get_type("S3-IMAP-ZIP")) is None


@pytest.mark.django_db
def test_the_form_maps_the_target_mailbox_onto_the_requests_mailbox_side(tenant, source_bucket):
    form = RestoreForm(form_data(source_bucket, target_folder=" Restored / 2026-12-01 ", folders="INBOX; Sent/"),
                       rtype=get_type("S3-IMAP-ZIP"), tenant=tenant)
    assert form.is_valid(), form.errors
    data = form.cleaned_data
    assert (data["source_server"], data["source_port"], data["source_security"], data["source_user"],
            data["source_password"]) == ("imap.acme.test", 993, "ssl", "alice@acme.test", "pw-alice")
    assert data["target_folder"] == "Restored/2026-12-01" and data["folders"] == ["INBOX", "Sent"]
    # The report goes beside the archive under a name of its own, never the backup's FILE.report.csv.
    assert data["s3_prefix"] == "mail" and data["file_name"].startswith("alice.restore-")
    assert form_class(get_type("S3-MITHI-ZIP")) is RestoreForm


@pytest.mark.django_db
@pytest.mark.parametrize("key,message", [
    ("mail/nothing.zip", "No archive mail/nothing.zip"),
    ("mail/gap", "misses volume(s) part002"),
    ("mail/bob.pst", ".zip archives, not .pst"),
    ("/mail/alice.zip", "cannot start or end"),
    ("mail/../alice.zip", "'..'"),
])
def test_an_archive_key_that_names_no_complete_archive_is_refused(tenant, source_bucket, key, message):
    form = RestoreForm(form_data(source_bucket, archive_key=key), rtype=get_type("S3-IMAP-ZIP"), tenant=tenant)
    assert not form.is_valid()
    assert message in " ".join(form.errors["archive_key"])


@pytest.mark.django_db
def test_a_split_archive_is_found_by_its_base_name_or_any_volume(tenant, source_bucket, rclone):
    client = rclone.client()
    expected = ["mail/split.part001.zip", "mail/split.part002.zip"]
    assert resolve_archive(client, source_bucket.name, "mail/split", "zip") == expected
    assert resolve_archive(client, source_bucket.name, "mail/split.part002.zip", "zip") == expected
    assert resolve_archive(client, source_bucket.name, "mail/alice", "zip") == ["mail/alice.zip"]
    assert resolve_archive(client, source_bucket.name, "mail/bob", "pst") == ["mail/bob.pst"]
    with pytest.raises(ArchiveNotFound):
        resolve_archive(client, source_bucket.name, "mail/ali", "zip")  # a prefix of a name is no archive
    form = RestoreForm(form_data(source_bucket, archive_key="mail/split"), rtype=get_type("S3-IMAP-ZIP"), tenant=tenant)
    assert form.is_valid(), form.errors


def test_a_restores_report_never_takes_the_backups_name():
    assert restore_file_name("mail/2026/alice.part003.zip", "abc") == ("mail/2026", "alice.restore-abc")
    assert restore_file_name("alice.pst", "abc") == ("", "alice.restore-abc")


@pytest.mark.django_db
def test_only_a_source_bucket_of_the_tenant_can_be_restored_from(tenant, other_tenant, rclone, s3_bucket):
    destination_only = _bucket(tenant, rclone, s3_bucket, purpose="destination")
    others = _bucket(other_tenant, rclone, s3_bucket + "-x", purpose="both")
    rtype = get_type("S3-IMAP-ZIP")
    form = RestoreForm({**form_data(destination_only), "bucket": destination_only.name}, rtype=rtype, tenant=tenant)
    assert not form.is_valid() and "not a verified source bucket" in " ".join(form.errors["bucket"])
    form = RestoreForm(form_data(others), rtype=rtype, tenant=tenant)  # by uuid: still not the tenant's
    assert not form.is_valid() and "No bucket named" in " ".join(form.errors["bucket"])
    form = RestoreForm({**form_data(others), "bucket": others.name}, rtype=rtype, tenant=tenant)  # by name
    assert not form.is_valid() and "No bucket named" in " ".join(form.errors["bucket"])


def _csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


@pytest.mark.django_db
def test_csv_restore_rows_are_checked_like_the_form(tenant, source_bucket):
    good = {"request_type": "S3-MITHI-ZIP", "title": "Back", "bucket": source_bucket.name,
            "archive_key": "mail/alice.zip", "target_server": "mail.mithi.test", "target_port": "993",
            "target_security": "ssl", "target_user": "alice@acme.test", "target_password": "pw",
            "target_folder": "", "folders": "", "exclude_folders": "", "since": "", "before": ""}
    parsed = parse_csv(_csv([good, {**good, "target_user": "bob@acme.test"}]), tenant=tenant)
    assert parsed.ok, parsed.errors
    assert [r.data["source_user"] for r in parsed.rows] == ["alice@acme.test", "bob@acme.test"]
    assert parsed.rows[0].data["file_name"] != parsed.rows[1].data["file_name"]  # each its own report

    bad = parse_csv(_csv([{**good, "target_password": "", "s3_prefix": ""},
                          {**good, "s3_prefix": "x"}]), tenant=tenant)
    assert not bad.ok
    assert "Line 2: target_password: This field is required." in bad.errors
    assert "Line 3: s3_prefix do(es) not apply to S3-MITHI-ZIP." in bad.errors


@pytest.mark.django_db(transaction=True)
def test_a_submitted_restore_keeps_the_archive_and_the_mailbox_password_encrypted(tenant, operator, source_bucket):
    from django.db import connection

    from requests_app.services import request_submit

    rtype = get_type("S3-IMAP-ZIP")
    form = RestoreForm(form_data(source_bucket, target_folder="Restored"), rtype=rtype, tenant=tenant)
    assert form.is_valid(), form.errors
    req = request_submit(tenant=tenant, actor=operator, rtype=rtype, data=form.cleaned_data)
    req.refresh_from_db()
    assert (req.archive_key, req.target_folder, req.source_user) == ("mail/alice.zip", "Restored", "alice@acme.test")
    assert req.source_password == "pw-alice"
    with connection.cursor() as cursor:
        cursor.execute("SELECT source_password FROM requests_app_migrationrequest WHERE id = %s", [req.pk])
        assert "pw-alice" not in cursor.fetchone()[0]

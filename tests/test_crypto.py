"""Credentials are encrypted at rest, rotate to the newest key, and never appear in clear in
the database, its dump, the logs or the pages."""

from __future__ import annotations

import logging
import shutil
import subprocess

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from buckets.models import Bucket

SECRET = "s3cr3t-Plaintext-Value-0042/ZZ"
# Distinct signing halves (a Fernet key is 16 bytes of HMAC key, then 16 of AES key). The former
# test keys shared theirs, so a token of one passed the other's HMAC check and, about once in
# 256 runs (random IV), its padding too: a garbage plaintext instead of the next key's turn.
KEY_A = "c2lnbmluZy1rZXktb25lIWVuY3J5cHQta2V5LW9uZSE="  # "signing-key-one!encrypt-key-one!"
KEY_B = "c2lnbmluZy1rZXktdHdvIWVuY3J5cHQta2V5LXR3byE="  # "signing-key-two!encrypt-key-two!"


def raw_column(model, pk, column):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {model._meta.db_table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def database_dump() -> str:
    if connection.vendor == "sqlite":
        return "\n".join(connection.connection.iterdump())
    pg_dump = shutil.which("pg_dump")
    assert pg_dump, "pg_dump is needed to dump the PostgreSQL test database"
    params = connection.get_connection_params()
    cmd = [pg_dump, "--data-only", "-h", params.get("host") or "127.0.0.1", "-p", str(params.get("port") or 5432),
           "-U", params.get("user") or "postgres", connection.settings_dict["NAME"]]
    connection.commit() if not connection.in_atomic_block else None
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@pytest.mark.django_db
def test_field_round_trip_and_ciphertext_at_rest(tenant):
    bucket = Bucket.objects.create(tenant=tenant, name="acme-mail", region="us-east-1",
                                   access_key_id="AKIAEXAMPLE", secret_access_key=SECRET)
    stored = raw_column(Bucket, bucket.pk, "secret_access_key")
    assert stored.startswith("fernet:") and SECRET not in stored
    assert Bucket.objects.get(pk=bucket.pk).secret_access_key == SECRET


@pytest.mark.django_db(transaction=True)
def test_database_dump_holds_no_plaintext_secret(tenant, owner):
    from requests_app.models import MigrationRequest

    bucket = Bucket.objects.create(tenant=tenant, name="acme-mail", region="us-east-1",
                                   access_key_id="AKIAEXAMPLE", secret_access_key=SECRET)
    MigrationRequest.objects.create(tenant=tenant, request_type="IMAP-S3-ZIP", bucket=bucket, file_name="x",
                                    source_user="u@acme.test", source_password=SECRET + "-imap")
    dump = database_dump()
    assert "acme-mail" in dump  # the dump is real and complete...
    assert SECRET not in dump  # ...and holds no secret in clear
    assert "correct-horse-battery-staple" not in dump  # user passwords are hashed


@pytest.mark.django_db
def test_rotation_re_encrypts_with_the_newest_key(tenant, settings, capsys):
    settings.LEGACYFLO_ENCRYPTION_KEYS = [KEY_B]
    bucket = Bucket.objects.create(tenant=tenant, name="acme-mail", region="us-east-1", secret_access_key=SECRET)
    old = raw_column(Bucket, bucket.pk, "secret_access_key")
    Fernet(KEY_B).decrypt(old[len("fernet:"):].encode())

    settings.LEGACYFLO_ENCRYPTION_KEYS = [KEY_A, KEY_B]  # operator prepends a new key
    assert Bucket.objects.get(pk=bucket.pk).secret_access_key == SECRET  # old key still decrypts
    call_command("credentials_rotate")
    assert "buckets.Bucket: 1 rows" in capsys.readouterr().out
    new = raw_column(Bucket, bucket.pk, "secret_access_key")
    assert new != old
    assert Fernet(KEY_A).decrypt(new[len("fernet:"):].encode()).decode() == SECRET

    settings.LEGACYFLO_ENCRYPTION_KEYS = [KEY_A]  # old key removed: everything still reads
    assert Bucket.objects.get(pk=bucket.pk).secret_access_key == SECRET


@pytest.mark.django_db
def test_secret_never_rendered_or_logged(client_for, admin, tenant, rclone, s3_bucket, caplog):
    caplog.set_level(logging.DEBUG)
    client = client_for(admin)
    form = {"name": s3_bucket, "region": "us-east-1", "endpoint_url": rclone.url, "purpose": "destination",
            "auth_mode": "keys", "access_key_id": rclone.access_key, "secret_access_key": rclone.secret_key}
    response = client.post(f"/t/{tenant.slug}/buckets/register/", form, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Verified" in page and rclone.secret_key not in page
    # A form that fails validation does not echo the secret back either.
    bad = client.post(f"/t/{tenant.slug}/buckets/register/", {**form, "name": "Bad_Name"})
    assert bad.status_code == 200 and rclone.secret_key not in bad.content.decode()
    assert all(rclone.secret_key not in record.getMessage() for record in caplog.records)
    from accounts.models import AuditEvent

    assert all(rclone.secret_key not in str(e.detail) for e in AuditEvent.objects.all())

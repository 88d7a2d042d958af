"""`make run`'s set-up steps (legacyflo/management/commands/devserver.py): the first login it
prints and the local bucket it registers, against the real database and a real S3 store."""

from __future__ import annotations

import io

import pytest

from buckets.models import Bucket
from legacyflo.management.commands.devserver import LOCAL_BUCKET, Command, first_login

pytestmark = pytest.mark.django_db


@pytest.fixture
def local_store(rclone):
    client = rclone.client()
    if LOCAL_BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=LOCAL_BUCKET)
    return rclone


def register(store, *, secret_key: str | None = None) -> str:
    """Run the command's bucket step; return what it printed (in lower case)."""
    out = io.StringIO()
    Command(stdout=out)._register_local_bucket(store, store.access_key, secret_key or store.secret_key)
    return out.getvalue().lower()


def test_make_run_reports_a_failed_verification_of_the_local_bucket(local_store, tenant, settings):
    assert "bucket local-backups of acme corp: verified" in register(local_store)
    settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS = False  # e.g. exported by the user over var/dev.env
    printed = register(local_store)
    assert "verification failed" in printed and ": verified" not in printed
    assert "legacyflo_allow_private_networks" in printed  # the failed check, with its fix
    assert Bucket.objects.get(name=LOCAL_BUCKET).status == "failed"


def test_make_run_gives_the_local_bucket_the_keys_of_var_dev_env(local_store, tenant):
    printed = register(local_store, secret_key="not-the-secret-key-of-the-store")
    assert "verification failed" in printed
    assert ": verified" in register(local_store)  # var/dev.env has the store's keys again
    assert Bucket.objects.get(name=LOCAL_BUCKET).secret_access_key == local_store.secret_key


def test_the_first_login_is_printed_until_the_password_is_changed(tmp_path, client):
    from accounts.models import User

    line = first_login(tmp_path)
    email, password = (tmp_path / "first-login.txt").read_text().split()
    assert f"First login: {email} / {password}" in line
    assert first_login(tmp_path) == line  # the next `make run` prints it again...

    client.force_login(User.objects.get(email=email))
    response = client.post("/accounts/password/change/", {
        "old_password": password, "new_password1": "my-own-passphrase-2026", "new_password2": "my-own-passphrase-2026"})
    assert response.status_code == 302
    line = first_login(tmp_path)  # ...until the password is changed: then never the old one
    assert password not in line and f"Log in as {email} with the password you chose" in line
    assert not (tmp_path / "first-login.txt").exists()

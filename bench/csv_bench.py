"""Benchmark: a CSV upload of the documented maximum (LEGACYFLO_CSV_MAX_ROWS, 10,000 rows) through
the real web view, in one request, as an operator would send it.

    python bench/csv_bench.py                  # 10,000 IMAP-S3-ZIP rows, best of 3
    python bench/csv_bench.py --rows 2000 --repeat 1
    python bench/csv_bench.py --profile        # cProfile of one upload (top 40 by cumulative time)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/legacyflo_bench python bench/csv_bench.py

It migrates a throwaway SQLite database (or the DATABASE_URL given), starts a private Redis,
registers one verified bucket and posts the file to the upload page with Django's test client:
parsing, validating every row, inserting the requests, the commit and enqueueing every job all
count. It checks the outcome (every row a queued request with its RQ job, the password
encrypted), then times a file of twice the maximum, which must be refused before any row is
validated.

Target: the maximum file checked and submitted in well under 10 s.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = ["request_type", "title", "source_server", "source_port", "source_security", "source_user",
           "source_password", "folders", "exclude_folders", "since", "before", "bucket", "s3_prefix", "file_name"]
TARGET_SECONDS = 10.0


def make_csv(rows: int) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    for n in range(rows):
        writer.writerow({
            "request_type": "IMAP-S3-ZIP", "title": f"Mailbox {n}", "source_server": "imap.example.com",
            "source_port": "993", "source_security": "ssl", "source_user": f"user{n}@example.com",
            "source_password": f"password-{n}", "folders": "INBOX;Projects/2024", "exclude_folders": "Trash;Junk",
            "since": "2020-01-01", "before": "", "bucket": "bench-backups", "s3_prefix": "mail/2026",
            "file_name": f"user{n}-example-com"})
    return out.getvalue().encode()


def setup_django(work: Path) -> object:
    """Environment, a private Redis, a migrated database. Returns the Redis server (to stop)."""
    from legacyflo.localservices import start_redis

    redis = start_redis(work / "redis")
    os.environ.update(REDIS_URL=redis.url, DJANGO_SETTINGS_MODULE="legacyflo.settings")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{work / 'bench.sqlite3'}")
    os.environ.setdefault("SECRET_KEY", "csv-bench-secret-key-not-for-production-0123456789")
    os.environ.setdefault("LEGACYFLO_ENCRYPTION_KEYS", "c2lnbmluZy1rZXktb25lIWVuY3J5cHQta2V5LW9uZSE=")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    os.environ.update(DEBUG="0", LEGACYFLO_HTTPS="0", LEGACYFLO_MANIFEST_STATIC="0")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return redis


def fresh_tenant():
    """An operator and a verified bucket in a tenant of their own, with no earlier requests."""
    from accounts.models import Membership, Tenant, User
    from buckets.models import Bucket
    from requests_app.models import MigrationRequest

    MigrationRequest.objects.filter(tenant__slug="csv-bench").delete()
    Bucket.objects.filter(tenant__slug="csv-bench").delete()
    Tenant.objects.filter(slug="csv-bench").delete()
    tenant = Tenant.objects.create(slug="csv-bench", name="CSV bench")
    user = User.objects.filter(email="operator@csv-bench.test").first() or User.objects.create_user(
        "operator@csv-bench.test", "csv-bench-password-0001")
    Membership.objects.create(tenant=tenant, user=user, role="operator")
    Bucket.objects.create(tenant=tenant, name="bench-backups", region="us-east-1", status="verified",
                          purpose="destination", endpoint_url="https://s3.example.com")
    return tenant, user


def upload(body: bytes, *, profile: bool = False) -> tuple[float, object, object]:
    """POST ``body`` to the upload page as a new tenant's operator: (seconds, response, tenant)."""
    import django_rq
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    django_rq.get_queue("default").connection.flushdb()
    tenant, user = fresh_tenant()
    client = Client()
    client.force_login(user)
    url = f"/t/{tenant.slug}/requests/upload/"
    file = SimpleUploadedFile("requests.csv", body, content_type="text/csv")
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    response = client.post(url, {"file": file})
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    return elapsed, response, tenant


def check_submitted(response, tenant, rows: int) -> None:
    import django_rq
    from django.db import connection

    from requests_app.models import MigrationRequest

    if response.status_code != 302:
        sys.exit(f"FAILED: the upload answered {response.status_code}, not a redirect to the list")
    requests = MigrationRequest.objects.for_tenant(tenant)
    queued = django_rq.get_queue("default").count
    with_job = requests.exclude(job_id="").count()
    with connection.cursor() as cursor:
        cursor.execute("SELECT source_password FROM requests_app_migrationrequest WHERE tenant_id = %s LIMIT 1",
                       [tenant.pk])
        stored = cursor.fetchone()[0]
    if requests.count() != rows or queued != rows or with_job != rows or not stored.startswith("fernet:"):
        sys.exit(f"FAILED: {requests.count()} requests, {queued} jobs queued, {with_job} with a job id, "
                 f"password stored as {stored[:7]!r}… (expected {rows} of each, encrypted)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=0, help="rows per file (default: LEGACYFLO_CSV_MAX_ROWS)")
    parser.add_argument("--repeat", type=int, default=3, help="uploads to time; the best is reported")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one upload instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="csv-bench-") as tmp:
        redis = setup_django(Path(tmp))
        try:
            from django.conf import settings

            rows = args.rows or settings.LEGACYFLO_CSV_MAX_ROWS
            body = make_csv(rows)
            print(f"{rows:,} rows, {len(body) / 1e6:.1f} MB, database {settings.DATABASES['default']['ENGINE']}")
            if args.profile:
                upload(body, profile=True)
                return 0
            times = []
            for attempt in range(args.repeat):
                elapsed, response, tenant = upload(body)
                check_submitted(response, tenant, rows)
                times.append(elapsed)
                print(f"  upload {attempt + 1}: {elapsed:.2f} s ({rows / elapsed:,.0f} rows/s)", flush=True)
            over = make_csv(2 * settings.LEGACYFLO_CSV_MAX_ROWS)
            refused, response, tenant = upload(over)
            from requests_app.models import MigrationRequest

            if b"split it" not in response.content or MigrationRequest.objects.for_tenant(tenant).exists():
                sys.exit("FAILED: a file over the maximum was not refused")
            best = min(times)
            verdict = "within" if best < TARGET_SECONDS else "MISSES"
            print(f"CSV upload of {rows:,} rows: best {best:.2f} s ({rows / best:,.0f} rows/s), "
                  f"{verdict} the target of {TARGET_SECONDS:.0f} s")
            print(f"CSV upload of {2 * settings.LEGACYFLO_CSV_MAX_ROWS:,} rows refused in {refused:.2f} s")
            return 0 if best < TARGET_SECONDS else 1
        finally:
            redis.stop()


if __name__ == "__main__":
    sys.exit(main())

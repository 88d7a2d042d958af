import os
import sys
import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Tenant
from requests_app.csvimport import parse_csv
from requests_app.models import MigrationRequest, State
from requests_app.services import requests_submit_many


class Command(BaseCommand):
    help = ("Submit one request per CSV row (the web upload's parser). A file with any bad row submits "
            "nothing and prints each error (exit 2). --wait exits 0 only when every request completed.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV file, or - for standard input")
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--wait", action="store_true", help="wait until every request has ended")
        parser.add_argument("--timeout", type=float, default=0, help="with --wait: give up after this many seconds")

    def handle(self, *args, file, tenant, wait, timeout, **options):
        tenant_obj = Tenant.objects.filter(slug=tenant).first()
        if tenant_obj is None:
            raise CommandError(f"No tenant with the slug {tenant!r}.")
        try:
            raw = sys.stdin.buffer.read() if file == "-" else open(file, "rb").read()
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}") from exc
        parsed = parse_csv(raw, tenant=tenant_obj)
        errors = parsed.errors
        created = []
        if not errors:
            try:
                created = requests_submit_many(tenant=tenant_obj, actor="manage.py requests_submit", rows=parsed.rows,
                                               source="cli", name="-" if file == "-" else os.path.basename(file))
            except ValidationError as exc:
                errors = exc.messages
        if errors:
            for error in errors:
                self.stderr.write(error)
            self.stderr.write(f"Nothing was submitted ({len(errors)} error{'s' if len(errors) != 1 else ''}).")
            sys.exit(2)
        for req in created:
            self.stdout.write(f"{req.uuid} {req.request_type} {req.state}")
        if not wait:
            return
        ids = [r.pk for r in created]
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            rows = list(MigrationRequest.objects.filter(pk__in=ids).order_by("id"))
            if all(r.is_final for r in rows):
                break
            if deadline and time.monotonic() > deadline:
                for r in rows:
                    self.stdout.write(f"{r.uuid} {r.request_type} {r.state}")
                self.stderr.write(f"Timed out after {timeout:.0f}s.")
                sys.exit(3)
            time.sleep(1)
        for r in rows:
            self.stdout.write(f"{r.uuid} {r.request_type} {r.state}" + (f" {r.error}" if r.error else ""))
        if any(r.state != State.COMPLETED for r in rows):
            sys.exit(1)

"""``manage.py plans_create --tenant SLUG FILE.csv``: one plan per row, all or nothing."""

import re
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Tenant
from requests_app.csvimport import parse_csv
from requests_app.plans import plans_create_many
from requests_app.schedule import ScheduleError, parse


def _line_of(error: str) -> int:
    match = re.match(r"Line (\d+)", error)
    return int(match.group(1)) if match else 0


class Command(BaseCommand):
    help = ("Create one plan per CSV row: the backup columns plus schedule ('daily HH:MM', 'weekly DAY HH:MM', "
            "'monthly N HH:MM', UTC) and notify. A file with any bad row creates nothing and prints each "
            "error (exit 2). Prints PLAN_UUID SCHEDULE NEXT_RUN per plan (the schedule's words, then the ISO instant).")

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV file, or - for standard input")
        parser.add_argument("--tenant", required=True)

    def handle(self, *args, file, tenant, **options):
        tenant_obj = Tenant.objects.filter(slug=tenant).first()
        if tenant_obj is None:
            raise CommandError(f"No tenant with the slug {tenant!r}.")
        try:
            raw = sys.stdin.buffer.read() if file == "-" else open(file, "rb").read()
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}") from exc
        parsed = parse_csv(raw, tenant=tenant_obj, extra_columns=("schedule",))
        errors, plans = list(parsed.errors), []
        for row in parsed.rows:  # every row's schedule is checked too, not only once the rest passed
            try:
                parse(row.extra["schedule"])
            except ScheduleError as exc:
                errors.append(f"Line {row.line}: schedule: {exc}")
        errors.sort(key=_line_of)
        if not errors:
            try:
                plans = plans_create_many(tenant=tenant_obj, actor="manage.py plans_create",
                                          rows=[(row, row.extra["schedule"]) for row in parsed.rows])
            except ValidationError as exc:
                errors = exc.messages
        if errors:
            for error in errors:
                self.stderr.write(error)
            self.stderr.write(f"Nothing was created ({len(errors)} error{'s' if len(errors) != 1 else ''}).")
            sys.exit(2)
        for plan in plans:
            self.stdout.write(f"{plan.uuid} {plan.schedule} {plan.next_run_at.isoformat()}")

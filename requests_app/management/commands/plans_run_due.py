"""``manage.py plans_run_due [--at ISO-8601]``: submit the runs of the plans due at that instant."""

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from requests_app.plans import plans_run_due


def parse_instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CommandError(f"--at {text!r} is not an ISO-8601 instant (e.g. 2026-12-02T02:00:00Z).") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Command(BaseCommand):
    help = ("Submit one request for each plan due at --at (default now); prints ID TYPE STATE per request. "
            "A slot runs once however often this is called; missed slots run once.")

    def add_arguments(self, parser):
        parser.add_argument("--at", help="the instant, ISO-8601 (UTC when no offset is given)")

    def handle(self, *args, at=None, **options):
        for req in plans_run_due(parse_instant(at) if at else None):
            self.stdout.write(f"{req.uuid} {req.request_type} {req.state}")

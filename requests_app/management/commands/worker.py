"""An RQ worker for LegacyFlo's queue (what `make run` starts; run more on other machines)."""

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run an RQ worker on the LegacyFlo queue."

    def add_arguments(self, parser):
        parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")

    def handle(self, *args, burst: bool, **options):
        call_command("rqworker", "default", burst=burst, with_scheduler=True)

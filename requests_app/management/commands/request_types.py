from django.core.management.base import BaseCommand, CommandError

from requests_app.csvimport import sample_csv
from requests_app.types import available_types, get_type


class Command(BaseCommand):
    help = "List the request types with their CSV columns, or print one type's sample CSV (--sample TYPE)."

    def add_arguments(self, parser):
        parser.add_argument("--sample", metavar="TYPE")

    def handle(self, *args, sample=None, **options):
        if sample:
            rtype = get_type(sample)
            if rtype is None:
                raise CommandError(f"Unknown request type {sample!r}; run without --sample to list them.")
            self.stdout.write(sample_csv(rtype), ending="")
            return
        for rtype in available_types():
            self.stdout.write(f"{rtype.code}\t{','.join(rtype.columns)}")

import json

from django.core.management.base import BaseCommand

from requests_app import reports
from requests_app.management.commands._lookup import request_by_id


class Command(BaseCommand):
    help = "Print a request's state, counters and report (json: summary + progress; csv: report.csv)."

    def add_arguments(self, parser):
        parser.add_argument("id")
        parser.add_argument("--format", choices=["json", "csv"], default="json")

    def handle(self, *args, id, format, **options):
        req = request_by_id(id)
        if format == "csv":
            with reports.report_csv_file(req) as report:
                self.stdout.write(report.read().decode("utf-8-sig"), ending="")
            return
        document = {**reports.progress_dict(req), "type": req.request_type, "tenant": req.tenant.slug,
                    "report": reports.folder_table(req), "summary": reports.summary(req)}
        self.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, default=str))

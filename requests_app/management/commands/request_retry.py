from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from requests_app.management.commands._lookup import request_by_id
from requests_app.services import request_retry


class Command(BaseCommand):
    help = "Re-queue a failed, cancelled or interrupted request; it resumes from its checkpoint."

    def add_arguments(self, parser):
        parser.add_argument("id")

    def handle(self, *args, id, **options):
        req = request_by_id(id)
        try:
            req = request_retry(req=req, actor="manage.py request_retry")
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(f"{req.uuid} {req.request_type} {req.state}")

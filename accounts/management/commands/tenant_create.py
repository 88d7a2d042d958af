import getpass
import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.services import tenant_create


class Command(BaseCommand):
    help = "Create a tenant and its first owner. Password from LEGACYFLO_OWNER_PASSWORD or a prompt."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner", required=True, help="the owner's email address")

    def handle(self, *args, slug, name, owner, **options):
        from accounts.models import User

        password = None
        if not User.objects.filter(email__iexact=owner).exists():
            password = os.environ.get("LEGACYFLO_OWNER_PASSWORD")
            if not password:
                if not os.isatty(0):
                    raise CommandError("Set LEGACYFLO_OWNER_PASSWORD (no terminal to ask for a password).")
                password = getpass.getpass(f"Password for {owner}: ")
                if password != getpass.getpass("Again: "):
                    raise CommandError("The passwords differ.")
        try:
            tenant = tenant_create(slug=slug, name=name, owner_email=owner, owner_password=password)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(f"Created tenant {tenant.slug} ({tenant.name}) owned by {owner}")

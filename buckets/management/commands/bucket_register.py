import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Tenant
from buckets.models import AuthMode, Bucket, Purpose
from buckets.rules import bucket_name_problem, normalise_endpoint, region_problem
from buckets.services import bucket_register, bucket_set_credentials, bucket_set_role, bucket_verify


class Command(BaseCommand):
    help = ("Register a bucket for a tenant and verify it (the web form's checks). "
            "Exit 0 when verified, 1 with the failing checks otherwise.")

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--name", required=True, help="bucket name")
        parser.add_argument("--region", required=True)
        parser.add_argument("--endpoint-url", default="", help="S3-compatible endpoint (empty for AWS)")
        parser.add_argument("--access-key-id", default="")
        parser.add_argument("--secret-access-key-env", default="",
                            help="name of the environment variable that holds the secret access key")
        parser.add_argument("--role-arn", default="",
                            help="a role in the bucket's AWS account that the portal assumes (instead of a key pair)")
        parser.add_argument("--purpose", choices=[p.value for p in Purpose], default=Purpose.DESTINATION)

    def handle(self, *args, **o):
        tenant = Tenant.objects.filter(slug=o["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant with the slug {o['tenant']!r}.")
        endpoint = normalise_endpoint(o["endpoint_url"])
        problem = bucket_name_problem(o["name"]) or region_problem(o["region"], has_endpoint=bool(endpoint))
        if problem:
            raise CommandError(problem)
        if bool(o["access_key_id"]) == bool(o["role_arn"]):
            raise CommandError("Give either --access-key-id with --secret-access-key-env, or --role-arn.")
        secret = ""
        if o["access_key_id"]:
            if not o["secret_access_key_env"]:
                raise CommandError("--access-key-id needs --secret-access-key-env VAR (the secret never goes on the command line).")
            secret = os.environ.get(o["secret_access_key_env"], "")
            if not secret:
                raise CommandError(f"The environment variable {o['secret_access_key_env']} is empty or not set.")
        mode = AuthMode.KEYS if o["access_key_id"] else AuthMode.ROLE
        actor = "manage.py bucket_register"
        existing = Bucket.objects.for_tenant(tenant).filter(
            name=o["name"], endpoint_url=endpoint).first()
        try:
            if existing is not None:
                self.stdout.write(f"Bucket {existing.name} is already registered: verifying it again.")
                if mode == AuthMode.KEYS:
                    bucket_set_credentials(bucket=existing, actor=actor,
                                           access_key_id=o["access_key_id"], secret_access_key=secret)
                elif existing.auth_mode != AuthMode.ROLE or existing.role_arn != o["role_arn"].strip():
                    bucket_set_role(bucket=existing, actor=actor, role_arn=o["role_arn"])
                return self._report(bucket_verify(bucket=existing, actor=actor))
            bucket = bucket_register(
                tenant=tenant, actor=actor, name=o["name"], region=o["region"],
                endpoint_url=endpoint, purpose=o["purpose"], auth_mode=mode,
                access_key_id=o["access_key_id"], secret_access_key=secret, role_arn=o["role_arn"],
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self._report(bucket)

    def _report(self, bucket):
        for check in bucket.checks:
            line = f"[{check['status'].upper():4}] {check['label']}: {check['message']}"
            if check["status"] == "fail" and check["fix"]:
                line += f" Fix: {check['fix']}"
            self.stdout.write(line)
        if bucket.status != "verified":
            raise CommandError(f"Bucket {bucket.name} failed verification (registered, not usable until verified).")
        self.stdout.write(f"Bucket {bucket.name} verified ({bucket.uuid}).")

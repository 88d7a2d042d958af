"""Role buckets, and one verified registration per bucket in the whole portal.

Buckets that used "the portal's own AWS credentials" have no role yet: they are marked failed with
a check that asks for a role ARN, so nothing reaches them with the portal's identity any more.
Endpoint URLs are stored normalised. Where several tenants hold a verified registration of the
same bucket, the oldest keeps it and the others are marked failed with the reason (verification
is a cached check, so this loses nothing but a status).
"""

from django.db import migrations, models
from django.utils import timezone

from buckets.rules import normalise_endpoint

NEEDS_ROLE_CHECK = {
    "key": "role", "label": "Role", "status": "fail",
    "message": ("This bucket used the portal's own AWS identity, which no longer reaches customers' "
                "buckets (another tenant could have registered your bucket and written to it)."),
    "fix": ("Create a role in your AWS account with the trust and permissions policies shown on this "
            "page, enter its ARN under Role, and verify again."),
}
REGISTERED_ELSEWHERE_CHECK = {
    "key": "registered", "label": "Registration", "status": "fail",
    "message": "Another organisation on this portal registered and verified this bucket first.",
    "fix": "If the bucket is yours, ask the portal's operator.",
}


def stop_portal_identity_buckets(apps, schema_editor):
    Bucket = apps.get_model("buckets", "Bucket")
    Bucket.objects.filter(auth_mode="portal", role_arn="").update(
        status="failed", checks=[NEEDS_ROLE_CHECK], verified_at=timezone.now())


def normalise_endpoints(apps, schema_editor):
    Bucket = apps.get_model("buckets", "Bucket")
    for bucket in Bucket.objects.exclude(endpoint_url="").order_by("pk"):
        endpoint = normalise_endpoint(bucket.endpoint_url)
        taken = Bucket.objects.filter(tenant_id=bucket.tenant_id, name=bucket.name, endpoint_url=endpoint).exists()
        if endpoint != bucket.endpoint_url and not taken:  # a tenant's second spelling keeps its own
            bucket.endpoint_url = endpoint
            bucket.save(update_fields=["endpoint_url"])


def one_verified_registration(apps, schema_editor):
    Bucket = apps.get_model("buckets", "Bucket")
    seen: set[tuple[str, str]] = set()
    for bucket in Bucket.objects.filter(status="verified").order_by("created_at", "pk"):
        key = (bucket.name, bucket.endpoint_url)
        if key in seen:
            bucket.status, bucket.checks = "failed", [REGISTERED_ELSEWHERE_CHECK, *bucket.checks]
            bucket.save(update_fields=["status", "checks"])
        seen.add(key)


class Migration(migrations.Migration):

    dependencies = [
        ("buckets", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="bucket", name="role_arn", field=models.CharField(blank=True, max_length=2048),
        ),
        migrations.AlterField(
            model_name="bucket", name="auth_mode",
            field=models.CharField(choices=[
                ("keys", "An access key pair (stored encrypted)"),
                ("portal", "A role in your AWS account that the portal assumes (AWS S3 only)")],
                default="keys", max_length=16),
        ),
        migrations.RunPython(stop_portal_identity_buckets, migrations.RunPython.noop),
        migrations.RunPython(normalise_endpoints, migrations.RunPython.noop),
        migrations.RunPython(one_verified_registration, migrations.RunPython.noop),
        # The constraint comes in 0003: PostgreSQL cannot build an index on a table whose rows this
        # transaction updated ("pending trigger events").
    ]

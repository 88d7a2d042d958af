"""Give every tenant its own ExternalId (existing tenants get a fresh one each)."""

from django.db import migrations, models

import accounts.models


def fill_external_ids(apps, schema_editor):
    Tenant = apps.get_model("accounts", "Tenant")
    for tenant in Tenant.objects.filter(aws_external_id__isnull=True):
        tenant.aws_external_id = accounts.models.new_external_id()
        tenant.save(update_fields=["aws_external_id"])


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant", name="aws_external_id",
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.RunPython(fill_external_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="tenant", name="aws_external_id",
            field=models.CharField(default=accounts.models.new_external_id, editable=False, max_length=64, unique=True),
        ),
    ]

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("requests_app", "0005_restore_series_notify_fields"),
    ]

    operations = [
        migrations.AddField(
            model_name="migrationrequest",
            name="records_pruned_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]

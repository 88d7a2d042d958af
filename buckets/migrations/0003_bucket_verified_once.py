"""One verified registration per bucket in the whole portal (see 0002 for the data it needs)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("buckets", "0002_roles_and_one_registration_per_bucket"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="bucket",
            constraint=models.UniqueConstraint(condition=models.Q(("status", "verified")), fields=("name", "endpoint_url"),
                                               name="bucket_verified_once"),
        ),
    ]

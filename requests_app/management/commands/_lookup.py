from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from requests_app.models import MigrationRequest


def request_by_id(value: str) -> MigrationRequest:
    """Find a request by the ID that `requests_submit` printed (its UUID)."""
    try:
        return MigrationRequest.objects.select_related("bucket", "tenant").get(uuid=value)
    except (MigrationRequest.DoesNotExist, ValueError, ValidationError) as exc:
        raise CommandError(f"No request with the ID {value!r}.") from exc

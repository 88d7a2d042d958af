"""Reads for migration requests, always through a tenant."""

import re

from django.db.models import Q

from requests_app.models import ACTIVE_STATES, MigrationRequest, State

# A request in one of these states holds its PREFIX/FILE; in any other, only while it has an
# archive in the bucket (``checkpoint["archives"]``, see ``connectors.archivekeys``).
HOLDING_STATES = (*ACTIVE_STATES, State.COMPLETED, State.COMPLETED_WITH_ERRORS)


def destination_holders(tenant, *, bucket, s3_prefix: str, file_name: str):
    """The requests that write, or have their archive under, PREFIX/FILE of this bucket (their
    archive, report and summary: ZIP and PST share FILE.report.csv and FILE.summary.json): the
    live ones, the completed ones, and any other whose archive is still there (a failed or
    cancelled retry keeps the archive its earlier run committed). Compared by bucket name, and
    prefix and file name case-insensitively, erring on the side of a conflict; a request named
    ``FILE.partNNN`` (refused since, see ``archivekeys.file_name_problem``) holds ``FILE`` too,
    its archive being named like a volume of FILE's."""
    same_name = rf"^{re.escape(file_name)}(\.part[0-9]+)?$"
    return MigrationRequest.objects.for_tenant(tenant).filter(
        Q(bucket__name=bucket.name, s3_prefix__iexact=s3_prefix, file_name__iregex=same_name)
        & (Q(state__in=HOLDING_STATES) | Q(checkpoint__has_key="archives"))).order_by("pk")


def active_requests_for_bucket(bucket):
    return MigrationRequest.objects.filter(tenant=bucket.tenant, bucket=bucket, state__in=ACTIVE_STATES)


def requests_for_bucket(bucket):
    return MigrationRequest.objects.filter(tenant=bucket.tenant, bucket=bucket)

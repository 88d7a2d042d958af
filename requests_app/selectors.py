"""Reads for migration requests, always through a tenant."""

from requests_app.models import ACTIVE_STATES, MigrationRequest


def active_requests_for_bucket(bucket):
    return MigrationRequest.objects.filter(tenant=bucket.tenant, bucket=bucket, state__in=ACTIVE_STATES)


def requests_for_bucket(bucket):
    return MigrationRequest.objects.filter(tenant=bucket.tenant, bucket=bucket)

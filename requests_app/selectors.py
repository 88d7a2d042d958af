"""Reads for migration requests, always through a tenant."""

import re

from django.db.models import Q

from requests_app.models import ACTIVE_STATES, MigrationRequest, State

# A request in one of these states holds its PREFIX/FILE; in any other, only while it has an
# archive in the bucket (``checkpoint["archives"]``, see ``connectors.pipeline.archivekeys``).
HOLDING_STATES = (*ACTIVE_STATES, State.COMPLETED, State.COMPLETED_WITH_ERRORS)


def _holds(other_file_name: str, file_name: str) -> bool:
    """Whether a request named ``other_file_name`` holds ``file_name``: the same name, compared
    case-insensitively (Unicode), or ``FILE.partNNN`` (refused since, see
    ``archivekeys.file_name_problem``), whose archive is named like a volume of FILE's."""
    return re.fullmatch(rf"{re.escape(file_name)}(\.part[0-9]+)?", other_file_name, re.IGNORECASE) is not None


def destination_holders_many(tenant, destinations: list[tuple]) -> list[list[int]]:
    """For each (bucket, prefix, file name), the ids (oldest first) of the requests that write, or
    have their archive under, PREFIX/FILE of that bucket — their archive, report and summary: ZIP
    and PST share FILE.report.csv and FILE.summary.json. A request holds its destination while it
    is live or completed, and in any other state while it has an archive in the bucket (a failed
    or cancelled retry keeps the archive its earlier run committed: ``checkpoint["archives"]``).

    Compared by bucket name, and prefix and file name case-insensitively in Python (the same rule
    on every database: SQLite folds only ASCII letters), erring on the side of a conflict. One
    query per 500 bucket names, so a CSV of thousands of rows is checked at once.
    """
    names = sorted({bucket.name for bucket, _, _ in destinations})
    candidates: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for start in range(0, len(names), 500):
        rows = (MigrationRequest.objects.for_tenant(tenant)
                .filter(Q(bucket__name__in=names[start:start + 500])
                        & (Q(state__in=HOLDING_STATES) | Q(checkpoint__has_key="archives")))
                .order_by("pk").values_list("pk", "bucket__name", "s3_prefix", "file_name"))
        for pk, bucket_name, prefix, file_name in rows:
            candidates.setdefault((bucket_name, prefix.casefold()), []).append((pk, file_name))
    return [[pk for pk, other in candidates.get((bucket.name, prefix.casefold()), []) if _holds(other, name)]
            for bucket, prefix, name in destinations]


def destination_holders(tenant, *, bucket, s3_prefix: str, file_name: str) -> list[MigrationRequest]:
    """``destination_holders_many`` for one destination, as rows (oldest first)."""
    pks = destination_holders_many(tenant, [(bucket, s3_prefix, file_name)])[0]
    found = MigrationRequest.objects.in_bulk(pks)
    return [found[pk] for pk in pks]


def active_requests_for_bucket(bucket):
    return MigrationRequest.objects.filter(tenant=bucket.tenant, bucket=bucket, state__in=ACTIVE_STATES)


def requests_for_bucket(bucket):
    return MigrationRequest.objects.filter(tenant=bucket.tenant, bucket=bucket)

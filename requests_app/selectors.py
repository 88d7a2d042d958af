"""Reads for migration requests, always through a tenant."""

import re

from django.db.models import Q

from requests_app.checkpoint import Checkpoint, holds_archive
from requests_app.models import ACTIVE_STATES, MigrationRequest, State

# A request in one of these states holds its PREFIX/FILE; in any other, only while it has an
# archive in the bucket (``Checkpoint.archives``, see ``connectors.pipeline.archivekeys``).
HOLDING_STATES = (*ACTIVE_STATES, State.COMPLETED, State.COMPLETED_WITH_ERRORS)


def _holds(other_file_name: str, file_name: str) -> bool:
    """Whether a request named ``other_file_name`` holds ``file_name``: the same name, compared
    case-insensitively (Unicode), or ``FILE.partNNN`` (refused since, see
    ``archivekeys.file_name_problem``), whose archive is named like a volume of FILE's."""
    return re.fullmatch(rf"{re.escape(file_name)}(\.r[0-9]+)?(\.part[0-9]+)?", other_file_name,
                        re.IGNORECASE) is not None


def destination_holders_many(tenant, destinations: list[tuple]) -> list[list[int]]:
    """For each (bucket, prefix, file name), the ids (oldest first) of the requests that write, or
    have their archive under, PREFIX/FILE of that bucket — their archive, report and summary: ZIP
    and PST share FILE.report.csv and FILE.summary.json. A request holds its destination while it
    is live or completed, and in any other state while it has an archive in the bucket (a failed
    or cancelled retry keeps the archive its earlier run committed: ``Checkpoint.archives``).

    Compared by bucket name, and prefix and file name case-insensitively in Python (the same rule
    on every database: SQLite folds only ASCII letters), erring on the side of a conflict. One
    query per 500 bucket names, so a CSV of thousands of rows is checked at once.
    """
    names = sorted({bucket.name for bucket, _, _ in destinations})
    candidates: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for start in range(0, len(names), 500):
        rows = (MigrationRequest.objects.for_tenant(tenant)
                .filter(Q(bucket__name__in=names[start:start + 500])
                        & (Q(state__in=HOLDING_STATES) | holds_archive()))
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


def requests_for_bucket(bucket):
    return MigrationRequest.objects.filter(tenant=bucket.tenant, bucket=bucket)


def archive_base_key(req: MigrationRequest) -> str:
    """``PREFIX/FILE`` without extension; the archive, report and summary sit side by side."""
    return f"{req.s3_prefix}/{req.file_name}" if req.s3_prefix else req.file_name


def destination_conflict(req: MigrationRequest, *, claiming: bool = False) -> MigrationRequest | None:
    """Another request holding ``req``'s PREFIX/FILE (``destination_holders``): ``req`` must not
    run into it, or it would overwrite or delete that request's archive. When a worker claims
    ``req`` (``claiming``), a live request submitted after it does not count: that one is refused
    when it is claimed, so of two submitted at once exactly the first runs.

    Runs of one incremental series (``series.same_series``) share PREFIX/FILE but never a key
    (``series.run_file_name``): another run holds it only while it is queued or running (one
    run of a series at a time)."""
    from requests_app.series import same_series

    pks = [pk for pk in destination_holders_many(req.tenant, [(req.bucket, req.s3_prefix, req.file_name)])[0]
           if pk != req.pk]
    found = MigrationRequest.objects.in_bulk(pks) if pks else {}  # usually none: no second query
    for other in (found[pk] for pk in pks):
        if same_series(req, other):
            if other.state in ACTIVE_STATES and not (claiming and other.pk > req.pk):
                return other
            continue
        if (claiming and other.state in ACTIVE_STATES and other.pk > req.pk
                and Checkpoint.of(other).archives is None):
            continue
        return other
    return None


def conflict_message(req: MigrationRequest, holder: MigrationRequest) -> str:
    from requests_app.series import same_series

    if same_series(req, holder):
        return (f"A run of this incremental series ({req.bucket.name}/{archive_base_key(holder)}) is still "
                f"{holder.get_state_display().lower()}: one run of a series at a time.")
    return (f"{req.bucket.name}/{archive_base_key(holder)}.* is already written by request "
            f"“{holder.title or holder.source_user}”: choose another file name or prefix.")


def batch_totals(batch) -> dict:
    """A CSV batch's figures in one query: requests per state, messages exported / failed,
    archive bytes so far."""
    from django.db.models import Count, Sum

    rows = MigrationRequest.objects.filter(batch=batch, tenant=batch.tenant).values("state").annotate(
        n=Count("id"), done=Sum("messages_done"), failed=Sum("messages_failed"), size=Sum("bytes_done"))
    by_state = {row["state"]: row for row in rows}
    return {
        "requests": sum(r["n"] for r in by_state.values()),
        "states": [(value, label, by_state[value]["n"]) for value, label in State.choices if value in by_state],
        "messages": sum(r["done"] or 0 for r in by_state.values()),
        "failed": sum(r["failed"] or 0 for r in by_state.values()),
        "bytes": sum(r["size"] or 0 for r in by_state.values()),
    }


def tenant_totals(tenant) -> dict:
    """The dashboard's figures in one query: mailboxes (distinct users of the tenant's requests),
    messages exported and archive bytes of the completed runs, the success rate (completed
    without errors among the finished runs that were not cancelled; None before any), and how
    many run now."""
    from django.db.models import Count, Sum

    done = (State.COMPLETED, State.COMPLETED_WITH_ERRORS)
    figures = MigrationRequest.objects.filter(tenant=tenant).aggregate(
        mailboxes=Count("source_user", distinct=True),
        messages=Sum("messages_done", filter=Q(state__in=done)),
        bytes=Sum("bytes_done", filter=Q(state__in=done)),
        clean=Count("id", filter=Q(state=State.COMPLETED)),
        finished=Count("id", filter=Q(state__in=(*done, State.FAILED))),
        running=Count("id", filter=Q(state=State.RUNNING)),
    )
    finished = figures.pop("finished")
    clean = figures.pop("clean")
    return {**figures, "messages": figures["messages"] or 0, "bytes": figures["bytes"] or 0,
            "success_rate": round(100 * clean / finished, 1) if finished else None}

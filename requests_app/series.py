"""Incremental series in the portal: which requests form a series, how its runs are named, and
what a run learns from the earlier ones.

A series is every request with ``incremental`` set and the same ``series_key``: a hash of the
tenant, the type family (source and archive format), the server, the mailbox (user or API
mailbox identity), the bucket, the prefix and the file name (``series_key_for``). Each request
is one run; its number is fixed at submission (``options["series_run"]``: one more than the
highest of the series so far), and so are its file names (``run_file_name``):

    PREFIX/FILE.zip, FILE.report.csv, FILE.summary.json                  run 1
    PREFIX/FILE.r0002.zip, FILE.r0002.report.csv, FILE.r0002.summary.json  run 2 ...

(``.partNNN`` before the extension when a run's archive is split). A number may be skipped
when a run failed and was never retried; no run ever writes another run's keys, so no run
overwrites or deletes an earlier run's files.

A run's cursor is the ``series`` part of its ``result`` (``result["series"]["cursor"]``),
written by ``lifecycle.finish`` when it ends; only *completed* runs are read back
(``series_context``), so a failed or cancelled run moves nothing.
"""

from __future__ import annotations

import hashlib
import json

from requests_app.models import ArchiveRecord, MigrationRequest, State

DONE_STATES = (State.COMPLETED, State.COMPLETED_WITH_ERRORS)


def series_key_for(*, tenant, rtype, data: dict) -> str:
    """The series a backup row belongs to (64 hex characters); case-insensitive where the
    destination check is (prefix, file name) and where mail systems are (host, mailbox)."""
    identity = [
        str(tenant.pk), f"{rtype.source}-{rtype.format}",
        (data.get("source_server") or "").strip().lower() if rtype.source == "imap" else "",
        (data.get("source_user") or "").strip().lower(),
        data["bucket"].name, (data.get("s3_prefix") or "").casefold(), (data.get("file_name") or "").casefold(),
    ]
    return hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode()).hexdigest()


def same_series(a: MigrationRequest, b: MigrationRequest) -> bool:
    return bool(a.incremental and b.incremental and a.series_key and a.series_key == b.series_key)


def series_runs(req: MigrationRequest):
    """Every run of ``req``'s series (``req`` included), oldest first; none for a one-off."""
    if not (req.incremental and req.series_key):
        return MigrationRequest.objects.none()
    return (MigrationRequest.objects.for_tenant(req.tenant)
            .filter(incremental=True, series_key=req.series_key).order_by("pk"))


def series_run_rows(req: MigrationRequest) -> list[dict]:
    """The request page's list of the series' runs: request, file name, new and expunged
    counts once completed (None before)."""
    rows = []
    for run in series_runs(req).only("pk", "uuid", "state", "file_name", "options", "result", "finished_at",
                                     "incremental"):
        series = (run.result or {}).get("series") or {}
        rows.append({"request": run, "file_name": run_file_name(run), "new": series.get("new"),
                     "expunged": series.get("expunged")})
    return rows


def next_run_numbers(tenant, keys: list[str]) -> dict[str, int]:
    """For each series key, the number its next run gets (1 for a new series)."""
    highest: dict[str, int] = {}
    rows = (MigrationRequest.objects.for_tenant(tenant).filter(incremental=True, series_key__in=set(keys))
            .values_list("series_key", "options"))
    for key, options in rows:
        highest[key] = max(highest.get(key, 0), int((options or {}).get("series_run") or 1))
    return {key: highest.get(key, 0) + 1 for key in keys}


def run_number(req: MigrationRequest) -> int:
    return int((req.options or {}).get("series_run") or 1) if req.incremental else 1


def run_file_name(req: MigrationRequest) -> str:
    """The file name (without extension) this request's files use: FILE, or FILE.rNNNN."""
    number = run_number(req)
    return req.file_name if number <= 1 else f"{req.file_name}.r{number:04d}"


def series_base_key(req: MigrationRequest) -> str:
    """The key that restores every run of ``req``'s series (``PREFIX/FILE``, DESIGN.md "Restore
    rows"), from the run's own archive key; "" for a one-off or a run without an archive."""
    from connectors.archives.keys import base_name

    archives = (req.result or {}).get("archives") or []

    if not (req.incremental and req.series_key and archives):
        return ""
    base = base_name(archives[0].get("key", ""))
    suffix = f".r{run_number(req):04d}"
    return base[:-len(suffix)] if run_number(req) > 1 and base.endswith(suffix) else base


def _parent(run: MigrationRequest) -> dict:
    result = run.result or {}
    return {"request": str(run.uuid), "run": run_number(run),
            "archives": [a.get("key", "") for a in result.get("archives", [])],
            "summary_key": result.get("summary_key", "")}


def series_context(req: MigrationRequest):
    """The engine's ``SeriesContext`` for a run of ``req``'s series (None for a one-off): the
    newest completed run's cursor and archive, and what every completed run archived."""
    from connectors.pipeline.series import Archived, SeriesContext, normalize_date

    if not (req.incremental and req.series_key):
        return None
    done = list(series_runs(req).filter(state__in=DONE_STATES).exclude(pk=req.pk)
                .order_by("finished_at", "pk").only("pk", "uuid", "options", "result", "incremental"))
    latest = done[-1] if done else None
    cursors = ((latest.result or {}).get("series") or {}).get("cursor") or {} if latest else {}
    pks = [r.pk for r in done]
    has_date = any(f.name == "internal_date" for f in ArchiveRecord._meta.get_fields())

    def archived(folder: str):
        if not pks:
            return
        fields = ["source_id", "message_id", "size", "date", "sender", "subject"] + (
            ["internal_date"] if has_date else [])
        rows = (ArchiveRecord.objects.filter(request_id__in=pks, kind="message", status="exported", folder=folder)
                .values_list(*fields))
        for row in rows.iterator(chunk_size=2000):
            yield Archived(row[0], row[1] or "", row[2] or 0, normalize_date(row[6]) if has_date else "",
                           date=row[3] or "", from_=row[4] or "", subject=row[5] or "")

    return SeriesContext(req.series_key, run=run_number(req), parent=_parent(latest) if latest else {},
                         cursors=cursors, archived=archived)

"""Reports of a request, read from its ledger: per-folder table, failures, report.csv, summary.

The same numbers are uploaded beside the archive at the end of a run (FILE.report.csv and
FILE.summary.json); the portal serves them from the database so they are available while the
request runs and even if the bucket is unreachable.
"""

from __future__ import annotations

import tempfile

from django.db.models import Count, Q, Sum

from requests_app.models import ArchiveRecord, MigrationRequest, RecordStatus


def progress_dict(req: MigrationRequest) -> dict:
    return {
        "id": str(req.uuid), "state": req.state, "percent": req.percent, "cancel_requested": req.cancel_requested,
        "folders_done": req.folders_done, "folders_total": req.folders_total,
        "messages_done": req.messages_done, "messages_total": req.messages_total,
        "messages_failed": req.messages_failed, "messages_skipped": req.messages_skipped,
        "bytes_done": req.bytes_done, "current_folder": req.current_folder, "error": req.error,
        "started_at": req.started_at.isoformat() if req.started_at else None,
        "finished_at": req.finished_at.isoformat() if req.finished_at else None,
    }


def folder_table(req: MigrationRequest) -> dict:
    """Per folder: source count at start, exported, failed, skipped, bytes; totals; do they reconcile?

    A finished run's own figures (``result.folders``) are authoritative. While a request is
    active the table is live: source counts as the run's listing found them, plus what is
    exported so far — the committed records, and the outcomes a run reports before its records
    reach the database (PST). Both come from the row the run updates at its progress interval.
    """
    if req.result.get("folders") and not req.is_active:
        return _table([dict(f) for f in req.result["folders"]])
    live = req.folder_progress or {}
    counts: dict[str, int] = live.get("counts") or {}
    outcomes: dict[str, list[int]] = live.get("outcomes") or {}
    stats = (ArchiveRecord.objects.filter(request=req, kind="message").values("folder").annotate(
        exported=Count("id", filter=Q(status=RecordStatus.EXPORTED)),
        failed=Count("id", filter=Q(status=RecordStatus.FAILED)),
        skipped=Count("id", filter=Q(status=RecordStatus.SKIPPED)),
        bytes=Sum("size", filter=Q(status=RecordStatus.EXPORTED)),
    ))
    by_folder = {row["folder"]: row for row in stats}
    folders = []
    for folder in sorted(set(counts) | set(by_folder) | set(outcomes), key=lambda path: path.split("/")):
        row = by_folder.get(folder, {})
        exported, failed, skipped, size = outcomes.get(folder) or (0, 0, 0, 0)
        folders.append({"folder": folder, "source_count": counts.get(folder, 0),
                        "exported": row.get("exported", 0) + exported, "failed": row.get("failed", 0) + failed,
                        "skipped": row.get("skipped", 0) + skipped, "bytes": (row.get("bytes") or 0) + size,
                        "error": ""})
    return _table(folders)


def _table(folders: list[dict]) -> dict:
    totals = {k: sum(f.get(k, 0) for f in folders) for k in ("source_count", "exported", "failed", "skipped", "bytes")}
    reconciles = bool(folders) and all(
        f["source_count"] == f["exported"] + f["failed"] + f["skipped"] for f in folders)
    return {"folders": folders, "totals": totals, "reconciles": reconciles}


def failures(req: MigrationRequest):
    return ArchiveRecord.objects.filter(request=req, kind="message").exclude(status=RecordStatus.EXPORTED)


def archive_files(req: MigrationRequest) -> list[dict]:
    """The archive files (key, size) in volume order: the finished run's, or while it runs the
    completed volumes of a split archive and the one being written (size so far), under the
    keys they will have (a retry writes some under staging keys until it commits)."""
    from connectors.pipeline.archivekeys import final_key
    from requests_app.checkpoint import Checkpoint

    if req.is_final:
        return list(req.result.get("archives") or [])
    upload = Checkpoint.of(req).upload
    if upload is None or not upload.key:
        return []
    size = sum(req.parts.filter(archive_key=upload.key).values_list("size", flat=True))
    return [*({"key": final_key(v.key), "size": v.size} for v in upload.volumes),
            {"key": final_key(upload.key), "size": size}]


def report_csv_file(req: MigrationRequest):
    """report.csv exactly as the run writes it beside the archive (same writer), in a temp file."""
    from connectors.pipeline.report import FolderError, write_report
    from requests_app.ledger import to_entry_record

    records = ArchiveRecord.objects.filter(request=req).order_by("seq")
    folder_errors = [FolderError(f["folder"], f["error"]) for f in req.result.get("folders", []) if f.get("error")]
    keys = {number: a["key"] for number, a in enumerate(archive_files(req), start=1)}
    out = tempfile.TemporaryFile()
    status_names = None
    if req.is_restore:
        from connectors.pipeline.restore import REPORT_STATUS as status_names
    write_report((to_entry_record(r) for r in records.iterator(chunk_size=2000)), folder_errors, out, keys,
                 status_names=status_names)
    out.seek(0)
    return out


def summary(req: MigrationRequest) -> dict:
    """The summary.json a completed run uploaded (kept in ``result``), otherwise one built from
    the ledger: while the request runs, or after it failed or was cancelled."""
    if req.result.get("summary"):
        return req.result["summary"]
    table = folder_table(req)
    return {
        "request": str(req.uuid), "type": req.request_type, "mailbox": req.source_user, "state": req.state,
        "folders": {f["folder"]: {k: f[k] for k in ("source_count", "exported", "failed", "skipped", "bytes")}
                    for f in table["folders"]},
        "totals": table["totals"],
        "timings": {"started_at": req.started_at.isoformat() if req.started_at else None,
                    "finished_at": req.finished_at.isoformat() if req.finished_at else None},
        "archives": archive_files(req),
    }


def throughput(req: MigrationRequest, now=None) -> dict | None:
    """While a request runs: its average rates since it started (messages/s, bytes/s) and the time
    the rest would take at that pace (None until a message is done: no pace to go by)."""
    from django.utils import timezone

    if req.state != "running" or not req.started_at:
        return None
    elapsed = ((now or timezone.now()) - req.started_at).total_seconds()
    if elapsed <= 0 or not req.messages_done:
        return {"messages_per_s": 0.0, "bytes_per_s": 0.0, "remaining_s": None}
    per_s = req.messages_done / elapsed
    left = max(0, req.messages_total - req.messages_done - req.messages_failed - req.messages_skipped)
    return {"messages_per_s": per_s, "bytes_per_s": req.bytes_done / elapsed,
            "remaining_s": left / per_s if req.messages_total else None}

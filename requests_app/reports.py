"""Reports of a request, read from its ledger: per-folder table, failures, report.csv, summary.

The same numbers are uploaded beside the archive at the end of a run (FILE.report.csv and
FILE.summary.json); the portal serves them from the database so they are available while the
request runs and even if the bucket is unreachable.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from django.db.models import Count, Q, Sum

from requests_app.models import ArchiveRecord, MigrationRequest, RecordStatus

REPORT_COLUMNS = ["folder", "source_id", "message_id", "date", "from", "to", "subject", "size", "sha256", "status", "error"]


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
    """Per folder: source count at start, exported, failed, skipped, bytes; totals; do they reconcile?"""
    counts: dict[str, int] = dict(req.checkpoint.get("folder_counts") or req.result.get("folder_counts") or {})
    stats = (ArchiveRecord.objects.filter(request=req, kind="message").values("folder").annotate(
        exported=Count("id", filter=Q(status=RecordStatus.EXPORTED)),
        failed=Count("id", filter=Q(status=RecordStatus.FAILED)),
        skipped=Count("id", filter=Q(status=RecordStatus.SKIPPED)),
        bytes=Sum("size", filter=Q(status=RecordStatus.EXPORTED)),
    ))
    by_folder = {row["folder"]: row for row in stats}
    folders = []
    for folder in list(counts) + sorted(set(by_folder) - set(counts)):
        row = by_folder.get(folder, {})
        folders.append({"folder": folder, "source_count": counts.get(folder, 0), "exported": row.get("exported", 0),
                        "failed": row.get("failed", 0), "skipped": row.get("skipped", 0), "bytes": row.get("bytes") or 0})
    totals = {k: sum(f[k] for f in folders) for k in ("source_count", "exported", "failed", "skipped", "bytes")}
    reconciles = bool(folders) and all(f["source_count"] == f["exported"] + f["failed"] + f["skipped"] for f in folders)
    return {"folders": folders, "totals": totals, "reconciles": reconciles}


def failures(req: MigrationRequest):
    return ArchiveRecord.objects.filter(request=req, kind="message").exclude(status=RecordStatus.EXPORTED)


def report_row(record: ArchiveRecord) -> list:
    return [record.folder, record.source_id, record.message_id, record.date, record.sender, record.recipients,
            record.subject, record.size, record.sha256, record.status, record.error]


def report_csv_lines(req: MigrationRequest) -> Iterator[str]:
    """Stream report.csv, one row per message, without loading the ledger into memory."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(REPORT_COLUMNS)
    yield flush()
    records = ArchiveRecord.objects.filter(request=req, kind="message").order_by("seq")
    for record in records.iterator(chunk_size=2000):
        writer.writerow(report_row(record))
        yield flush()


def summary(req: MigrationRequest) -> dict:
    """The summary.json the run uploaded, or a live one while it runs."""
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
        "archives": req.result.get("archives", []),
    }

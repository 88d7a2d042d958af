"""Carrying out one request (the RQ job): claim it, build its source, run the backup, finish.

    run_request(pk): lifecycle.claim → kinds.source_for_request → pipeline.run.run_backup
                     → lifecycle.finish (or lifecycle.fail)
    a restore type:  lifecycle.claim → kinds.destination_for_request, restore_readers.opener_for
                     → pipeline.restore.run_restore → lifecycle.finish

Every state change goes through ``lifecycle``; this module turns the request's row into the
engine's inputs (``backup_spec``, ``tuning``, its bucket's client) and the engine's result into
the row's (``result_document``).

The engine never raises for export failures; anything else (a bug, the database going away)
still ends the request as ``failed`` with a generic message and the traceback in the log.
"""

from __future__ import annotations

import dataclasses
import logging

from django.conf import settings

from requests_app import lifecycle
from requests_app.models import MigrationRequest, State
from requests_app.types import RequestType, get_type

log = logging.getLogger(__name__)


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    return obj


def result_document(result) -> dict:
    """What the row keeps of the engine's ``ExportResult`` (``MigrationRequest.result``)."""
    folders = [_jsonable(f) for f in result.folders]
    return {
        "state": result.state, "error": result.error, "folders": folders,
        "totals": _jsonable(result.totals), "archives": _jsonable(result.archives),
        "report_key": result.report_key, "summary_key": result.summary_key,
        "started_at": result.started_at, "finished_at": result.finished_at,
        "timings": result.timings, "resumed": result.resumed, "parts": result.parts,
        "summary": _jsonable(result.summary),  # what summary.json in the bucket says (reports.summary)
        "series": _jsonable(result.series),  # a series run: its cursor (requests_app.series)
    }


def tuning(endpoint_url: str = ""):
    """The export's tuning from the settings, for a bucket at ``endpoint_url`` ("" = AWS S3)."""
    from connectors.pipeline.spec import Tuning
    from connectors.storage.s3.growing import default_max_ahead

    settings.LEGACYFLO_WORK_DIR.mkdir(parents=True, exist_ok=True)
    max_ahead = settings.LEGACYFLO_S3_MAX_AHEAD_BYTES
    if max_ahead is None:
        max_ahead = default_max_ahead(endpoint_url)
    return Tuning(part_bytes=settings.LEGACYFLO_PART_SIZE, max_ahead_bytes=max_ahead,
                  tmp_dir=str(settings.LEGACYFLO_WORK_DIR))


def backup_spec(req: MigrationRequest, rtype: RequestType):
    """What the engine backs up, and where, for ``req`` (no secrets: the summary shows it)."""
    from connectors.pipeline.spec import ExportSpec
    from requests_app.series import run_file_name, series_context

    return ExportSpec(
        bucket=req.bucket.name, file_name=run_file_name(req), prefix=req.s3_prefix, format=rtype.format,
        include=req.folders, exclude=req.exclude_folders, since=req.since, before=req.before,
        split_bytes=settings.LEGACYFLO_PST_SPLIT_BYTES if rtype.format == "pst" else settings.LEGACYFLO_ZIP_SPLIT_BYTES,
        display_name=f"{req.source_user} (LegacyFlo)",
        source_description={"request": str(req.uuid), "type": rtype.code, "tenant": req.tenant.slug,
                            "server": req.source_server, "user": req.source_user},
        series=series_context(req),
    )


def restore_spec(req: MigrationRequest, rtype: RequestType):
    """What the engine restores, from where, and where its report goes (no secrets)."""
    from connectors.archives import Selection
    from connectors.pipeline.restore import RestoreSpec

    return RestoreSpec(
        bucket=req.bucket.name, archive_key=req.archive_key, format=rtype.format,
        report_prefix=req.s3_prefix, report_file_name=req.file_name, target_folder=req.target_folder,
        report_in_bucket=req.bucket.is_destination,
        selection=Selection(folders=tuple(req.folders), exclude_folders=tuple(req.exclude_folders),
                            since=req.since, before=req.before),
        source_description={"request": str(req.uuid), "type": rtype.code, "tenant": req.tenant.slug,
                            "server": req.source_server, "user": req.source_user,
                            "archive_key": req.archive_key},
    )


def run_request(pk: int) -> str:
    """The job: run (or resume) request ``pk`` to its end. Returns the final state (or why not)."""
    claimed = lifecycle.claim_row(pk)
    if claimed is None:
        return "skipped"
    token, req = claimed
    with lifecycle.Heartbeat(pk, token):
        return _run(pk, token, req)


def _run(pk: int, token: str, req: MigrationRequest) -> str:
    from buckets.services import bucket_target
    from connectors.model import ConnectionFailed
    from connectors.pipeline.run import run_backup
    from connectors.storage.s3.client import make_client
    from requests_app.kinds import source_for_request
    from requests_app.ledger import DatabaseLedger

    rtype = get_type(req.request_type)
    if rtype is None:
        lifecycle.finish(pk, token, state=State.FAILED,
                         error=f"The request type {req.request_type} is not available on this portal.")
        return State.FAILED
    ledger = DatabaseLedger(pk, token)
    try:  # a bucket the portal may not reach (a role bucket without a role...) fails with the reason
        client = make_client(bucket_target(req.bucket), allow_private=settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS)
    except ConnectionFailed as exc:
        lifecycle.finish(pk, token, state=State.FAILED, error=str(exc))
        return State.FAILED
    try:
        if rtype.is_restore:
            result = _restore(req, rtype, client, ledger)
        else:
            with source_for_request(req, rtype) as source:
                result = run_backup(source, client, backup_spec(req, rtype), ledger, tuning(req.bucket.endpoint_url))
    except lifecycle.Superseded:
        log.warning("request %s: another run took over; this one stops", pk)
        return "superseded"
    except Exception as exc:  # noqa: BLE001 - see the module docstring
        log.exception("request %s failed unexpectedly", pk)
        lifecycle.fail(pk, token, f"An internal error stopped the transfer ({exc.__class__.__name__}); "
                                  "the details are in the worker log.")
        return State.FAILED
    lifecycle.finish(pk, token, state=result.state, error=result.error, result=result_document(result))
    return result.state


def _restore(req: MigrationRequest, rtype: RequestType, client, ledger):
    from connectors.pipeline.restore import run_restore
    from connectors.pipeline.restore_readers import opener_for
    from requests_app.kinds import destination_for_request

    spec_tuning = tuning(req.bucket.endpoint_url)
    with destination_for_request(req, rtype) as destination:
        return run_restore(opener_for(rtype.format, client, req.bucket.name, tmp_dir=spec_tuning.tmp_dir),
                           destination, client, restore_spec(req, rtype), ledger, spec_tuning)

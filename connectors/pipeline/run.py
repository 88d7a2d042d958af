"""The engine's entry point: one backup of a Source into a bucket, in the request's format.

    result = run_backup(source, s3_client, ExportSpec(bucket=..., prefix=..., file_name=...), ledger)

The format (``ExportSpec.format``) is looked up in the archive registry
(``connectors.archives.FORMATS``); each has its pipeline on the shared skeleton.
"""

from __future__ import annotations

from connectors.archives import PST, ZIP, archive_format
from connectors.memtune import tune_malloc
from connectors.pipeline.ledger import Ledger
from connectors.pipeline.pst_backup import PstBackup
from connectors.pipeline.skeleton import Backup
from connectors.pipeline.spec import ExportResult, ExportSpec, Tuning
from connectors.pipeline.zip_backup import ZipBackup
from connectors.sources import Source

PIPELINES: dict[str, type[Backup]] = {ZIP.name: ZipBackup, PST.name: PstBackup}


def run_backup(source: Source, s3_client, spec: ExportSpec, ledger: Ledger,
               tuning: Tuning | None = None) -> ExportResult:
    """Run (or resume) one backup to its end; never raises for export failures (see
    ``result.state``). Raises ValueError for a format the registry does not know, and whatever
    the ledger itself raises (``skeleton.LedgerGuard``)."""
    tune_malloc()
    pipeline = PIPELINES[archive_format(spec.format).name]
    backup = pipeline(source, s3_client, spec, ledger, tuning)
    result = backup.run()
    if backup.conflict:  # upload aborted and ledger reset: one clean second attempt
        result = pipeline(source, s3_client, spec, ledger, tuning).run()
    return result

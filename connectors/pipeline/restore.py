"""The restore pipeline: an archive in the bucket → a mailbox, every archived message exactly once.

    result = run_restore(open_reader, destination, s3_client, RestoreSpec(...), ledger)

``open_reader(keys)`` gives the format's ``ArchiveReader`` over the archive's files (resolved by
``restore_keys.resolve_archive``); the ``Destination`` creates folders and appends. The same
``Ledger`` as backups keeps one record per archived message (kind "message", ``source_id`` the
message's stable ``entry`` in the archive), with status ``exported`` (put back: "restored" in
the report), ``skipped`` (already present in the target) or ``failed`` (with the reason).

Exactly once (DESIGN.md, "Restore is exactly once per archive entry"):
- Messages go out in batches of one folder; a batch's records are committed in one ledger
  transaction right after its APPENDs. A message with a record is never touched again.
- Before a batch is appended, the target folder is asked which of its messages it already
  holds (``Destination.find_existing`` on Message-ID, size and SHA-256, counting
  multiplicity). Of the copies it holds, those already accounted for by this run's records of
  that folder (restored or skipped) are set aside; each remaining copy lets one message of the
  batch be skipped as "already present". So a message appended by a run killed before its
  record was committed, a retry, or the same restore submitted again adds nothing twice,
  while an archive holding one message twice in a folder restores two copies.
- Nothing is cleaned up after a failure or a cancel: what was appended stays, and its records
  too, so a retry goes on where the run stopped.

Outputs: ``PREFIX/FILE.restore-<token>.report.csv`` and ``.summary.json`` beside the archive
(``restore_keys.restore_file_name``; a backup's own report is never overwritten) when the bucket
may be written (purpose both; a read-only source bucket gets nothing, the portal serves both), with
per-folder counts (archive count = restored + failed + skipped) and the folder names the
target could not hold as they are (``folder_mapping``).

Memory: one batch (at most ``Tuning.queue_bytes`` of messages) and, per folder met, a counter
of the SHA-256s this run's records hold. All Ledger calls come from the thread calling ``run``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from connectors.archives import ArchivedMessage, ArchiveFailure, ArchiveReader, Selection
from connectors.destinations import Destination, MessageRejected
from connectors.mimeinfo import extract
from connectors.model import AuthenticationFailed, ConnectionFailed, FolderUnavailable, SourceError
from connectors.naming import object_key
from connectors.pipeline.ledger import (
    EXPORTED,
    FAILED,
    MESSAGE,
    SKIPPED,
    EntryRecord,
    Ledger,
    Progress,
)
from connectors.pipeline.pacing import Cancelled, ExportPacer
from connectors.pipeline.report import ArchiveFile, FolderStats, Summary, Totals, write_report
from connectors.pipeline.restore_keys import resolve_archive
from connectors.pipeline.skeleton import LedgerGuard
from connectors.pipeline.spec import (
    CANCELLED,
    COMPLETED,
    COMPLETED_WITH_ERRORS,
    FAILED_STATE,
    ExportResult,
    Tuning,
)
from connectors.storage.s3.sink import S3Failure, put_file

log = logging.getLogger(__name__)

RESTORED = "restored"  # the report's word for a record with status EXPORTED
REPORT_STATUS = {EXPORTED: RESTORED}
ALREADY_PRESENT = "Already present in the target folder."
BATCH_MESSAGES = 100


@dataclass
class RestoreSpec:
    """What to restore (the request's fields) and where its report goes."""

    bucket: str
    archive_key: str  # as the user gave it: a file, a volume or a base name
    format: str  # zip | pst: the request type's
    report_prefix: str
    report_file_name: str  # FILE.restore-<token>
    selection: Selection = field(default_factory=Selection)
    target_folder: str = ""  # the destination puts everything under it (it was built with it)
    # Write report.csv and summary.json beside the archive. False for a read-only (purpose
    # source) bucket: the portal still serves both from its database.
    report_in_bucket: bool = True
    source_description: dict = field(default_factory=dict)  # goes into summary.json (no secrets!)

    def key(self, suffix: str) -> str:
        return object_key(self.report_prefix, self.report_file_name, suffix)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def user_message(exc: BaseException) -> str:
    if isinstance(exc, SourceError | S3Failure):
        return str(exc)
    return f"Internal error: {type(exc).__name__}: {exc}"


def ledger_id(entry: str) -> str:
    """The record's ``source_id`` for an archive entry: the entry itself when it fits the
    column, else a digest of it (the entry stays in the record's ``name``)."""
    return entry if len(entry) <= 200 else "sha1:" + hashlib.sha1(entry.encode()).hexdigest()


@dataclass
class _Pending:
    message: ArchivedMessage
    sha256: str
    size: int


class Restore:
    """One run of a restore (see the module docstring). Use ``run()`` once."""

    def __init__(self, open_reader: Callable[[list[str]], ArchiveReader], destination: Destination, s3_client,
                 spec: RestoreSpec, ledger: Ledger, tuning: Tuning | None = None) -> None:
        self.open_reader, self.dest, self.client, self.spec = open_reader, destination, s3_client, spec
        self.ledger = LedgerGuard(ledger)
        self.t = tuning or Tuning()
        self.progress = Progress()
        self.pacer = ExportPacer(self.ledger, self.t, lambda: dataclasses.replace(self.progress))
        self.stats: dict[str, FolderStats] = {}
        self.done: dict[str, set[str]] = {}  # folder -> ledger ids with a record
        self.accounted: dict[str, Counter] = {}  # folder -> sha256 of records (restored or skipped)
        self.targets: dict[str, str] = {}  # archive folder -> destination name
        self.unavailable: dict[str, str] = {}  # archive folder -> why the target will not hold it
        self.archives: list[ArchiveFile] = []
        self.volume_of: dict[str, int] = {}  # archive file key -> its number (report's archive column)
        self.resumed = False

    # ---- the run ------------------------------------------------------------------------------
    def run(self) -> ExportResult:
        t0 = time.monotonic()
        result = ExportResult(state=FAILED_STATE, started_at=now())
        try:
            self.pacer.check_cancel(force=True)
            keys = resolve_archive(self.client, self.spec.bucket, self.spec.archive_key, self.spec.format)
            self.archives = [ArchiveFile(k, _size(self.client, self.spec.bucket, k)) for k in keys]
            self.volume_of = {k: n for n, k in enumerate(keys, start=1)}
            self._load_ledger()
            self.progress.phase = "transferring"
            self.pacer.report(force=True)
            with self.open_reader(keys) as reader:
                self._restore(reader)
            result.timings = {"restore": round(time.monotonic() - t0, 3)}
            self.progress.phase = "finishing"
            self.pacer.report(force=True)
            return self._report(result)
        except Cancelled:
            result.state, result.error = CANCELLED, "Cancelled by the user."
        except (AuthenticationFailed, ConnectionFailed, SourceError, S3Failure) as exc:
            result.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the run ends failed with the reason; the ledger keeps what is done
            if self.ledger.failure is not None:  # the ledger is the truth: its own failure goes up unchanged
                raise
            log.exception("restore into %s failed", self.spec.key(""))
            result.error = user_message(exc)
        self.progress.phase = result.state
        self.pacer.report_final()
        result.archives = self.archives
        return result

    def _restore(self, reader: ArchiveReader) -> None:
        batch: list[_Pending] = []
        batch_bytes = 0
        for item in reader.messages(self.spec.selection):
            self.pacer.check_cancel()
            folder = item.folder
            stats = self._folder(folder)
            stats.source_count += 1
            self.progress.messages_total += 1
            entry_id = ledger_id(item.entry)
            if entry_id in self.done[folder]:
                self.progress.messages_done += 1
                self.resumed = True
                continue
            if batch and (batch[0].message.folder != folder or len(batch) >= BATCH_MESSAGES
                          or batch_bytes >= self.t.queue_bytes):
                self._flush(batch)
                batch, batch_bytes = [], 0
            if isinstance(item, ArchiveFailure):
                self._commit(folder, [self._record(folder, item.entry, item.status, error=item.error)])
                continue
            size = len(item.raw)
            batch.append(_Pending(item, hashlib.sha256(item.raw).hexdigest(), size))
            batch_bytes += size
            self.progress.bytes_done += size
            self.pacer.report()
        if batch:
            self._flush(batch)

    def _load_ledger(self) -> None:
        """What earlier runs of this restore committed, per folder (one pass over the records)."""
        for r in self.ledger.iter_records():
            if r.kind == MESSAGE:
                self.done.setdefault(r.folder, set()).add(r.source_id)
                if r.status in (EXPORTED, SKIPPED):
                    self.accounted.setdefault(r.folder, Counter())[r.sha256] += 1

    def _folder(self, folder: str) -> FolderStats:
        if folder not in self.stats:
            self.stats[folder] = FolderStats(folder)
            self.done.setdefault(folder, set())
            self.accounted.setdefault(folder, Counter())
            self.progress.folders_total += 1
        self.progress.current_folder = folder
        return self.stats[folder]

    def _target(self, folder: str) -> str:
        if folder in self.unavailable:
            raise FolderUnavailable(self.unavailable[folder])
        if folder not in self.targets:
            self.targets[folder] = self.dest.ensure_folder(folder)
        return self.targets[folder]

    def _flush(self, batch: Sequence[_Pending]) -> None:
        """Append the messages of one folder the target does not hold yet; commit every record."""
        folder = batch[0].message.folder
        try:
            target = self._target(folder)
        except FolderUnavailable as exc:  # this folder's messages fail with the reason; the others go on
            self.unavailable.setdefault(folder, f"The target folder could not be created: {exc}")
            self._commit(folder, [self._record(folder, p.message.entry, FAILED, message=p.message, size=p.size,
                                               sha256=p.sha256, error=self.unavailable[folder]) for p in batch])
            return
        limit = self.dest.size_limit()
        wanted = Counter((p.message.message_id, p.size, p.sha256) for p in batch)
        accounted = self.accounted[folder]
        # Ask for each message as often as this run's records and the batch could need it, so a
        # destination that caps its answer at the candidates' multiplicity still answers right.
        candidates = [key for key, n in wanted.items() for _ in range(n + accounted[key[2]])]
        held = Counter(self.dest.find_existing(target, candidates))
        spare = {key: max(0, held[key] - accounted[key[2]]) for key in wanted}
        records = []
        for p in batch:
            m = p.message
            key = (m.message_id, p.size, p.sha256)
            if spare[key] > 0:
                spare[key] -= 1
                records.append(self._record(folder, m.entry, SKIPPED, message=m, size=p.size, sha256=p.sha256,
                                            error=ALREADY_PRESENT))
                continue
            if limit is not None and p.size > limit:
                records.append(self._record(folder, m.entry, FAILED, message=m, size=p.size, sha256=p.sha256,
                                            error=f"The message ({p.size:,} bytes) is larger than the target "
                                                  f"server accepts ({limit:,} bytes)."))
                continue
            try:
                self.dest.append(target, m.raw, m.flags, m.internal_date or _header_date(m.raw))
            except MessageRejected as exc:
                records.append(self._record(folder, m.entry, FAILED, message=m, size=p.size, sha256=p.sha256,
                                            error=str(exc)))
                continue
            records.append(self._record(folder, m.entry, EXPORTED, message=m, size=p.size, sha256=p.sha256))
        self._commit(folder, records)

    def _commit(self, folder: str, records: list[EntryRecord]) -> None:
        self.ledger.commit_records(records)
        stats = self.stats[folder]
        for r in records:
            self.done[folder].add(r.source_id)
            if r.status in (EXPORTED, SKIPPED):
                self.accounted[folder][r.sha256] += 1
            stats.add(r)
            self.progress.messages_done += 1
            self.progress.messages_failed += r.status == FAILED
            self.progress.messages_skipped += r.status == SKIPPED
        self.pacer.report()

    def _record(self, folder: str, entry: str, status: str, *, message: ArchivedMessage | None = None,
                size: int = 0, sha256: str = "", error: str = "") -> EntryRecord:
        info = extract(message.raw) if message is not None else None
        return EntryRecord(
            kind=MESSAGE, folder=folder, source_id=ledger_id(entry), status=status, name=entry, size=size,
            sha256=sha256, error=error, volume=self.volume_of.get(entry.partition("!")[0], 1),
            message_id=(message.message_id or info.message_id) if message else "",
            date=info.date if info else "", from_=info.from_ if info else "", to=info.to if info else "",
            subject=info.subject if info else "", labels=tuple(message.labels) if message else ())

    # ---- report and summary -------------------------------------------------------------------
    def _report(self, result: ExportResult) -> ExportResult:
        """report.csv from the ledger's records (every run's), per-folder counts from the same
        records, the final state, summary.json."""
        stats: dict[str, FolderStats] = {path: FolderStats(path, source_count=s.source_count)
                                         for path, s in self.stats.items()}

        def counted(records: Iterable[EntryRecord]):
            for r in records:
                if r.kind == MESSAGE:
                    stats.setdefault(r.folder, FolderStats(r.folder)).add(r)
                yield r

        in_bucket = self.spec.report_in_bucket
        report_key = self.spec.key(".report.csv") if in_bucket else ""
        keys = {n: a.key for n, a in enumerate(self.archives, start=1)}
        if in_bucket:
            with tempfile.TemporaryFile(dir=self.t.tmp_dir) as out:
                write_report(counted(self.ledger.iter_records()), (), out, keys, status_names=REPORT_STATUS)
                put_file(self.client, self.spec.bucket, report_key, out, content_type="text/csv; charset=utf-8",
                         retry=self.t.retry)
        else:
            for _record in counted(self.ledger.iter_records()):
                pass
        folders = sorted(stats.values(), key=lambda s: s.folder.split("/"))
        reconciled = all(f.reconciles for f in folders)
        result.folders, result.totals, result.archives = folders, Totals.of(folders), self.archives
        result.report_key, result.summary_key = report_key, self.spec.key(".summary.json") if in_bucket else ""
        result.state = COMPLETED if result.totals.failed == 0 and reconciled else COMPLETED_WITH_ERRORS
        result.error = "" if reconciled else "Some folders' counts do not reconcile; see summary.json."
        result.resumed = self.resumed
        summary = Summary(file=self.spec.report_file_name, format=self.spec.format, state=result.state,
                          error=result.error, folders=folders, totals=result.totals,
                          timings={"started_at": result.started_at, "finished_at": now(), "resumed": self.resumed,
                                   **result.timings},
                          archives=self.archives, report_key=report_key,
                          source=dict(self.spec.source_description)).to_dict()
        summary["direction"] = "restore"
        summary["archive_key"] = self.spec.archive_key
        summary["target_folder"] = self.spec.target_folder
        summary["folder_mapping"] = dict(self.dest.mapped_folders())
        result.summary = summary
        if in_bucket:
            with tempfile.TemporaryFile(dir=self.t.tmp_dir) as out:
                out.write(json.dumps(summary, ensure_ascii=False, indent=2).encode("utf-8"))
                put_file(self.client, self.spec.bucket, result.summary_key, out, content_type="application/json",
                         retry=self.t.retry)
        self.progress.phase = "done"
        self.pacer.report(force=True)
        return result


def _size(client, bucket: str, key: str) -> int:
    try:
        return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except Exception:  # noqa: BLE001 - the size is informative only
        return 0


def _header_date(raw: bytes) -> dt.datetime | None:
    """An archive without recorded internal dates restores each message at its Date: header."""
    import email.utils

    text = extract(raw).date
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            return email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None


def run_restore(open_reader: Callable[[list[str]], ArchiveReader], destination: Destination, s3_client,
                spec: RestoreSpec, ledger: Ledger, tuning: Tuning | None = None) -> ExportResult:
    """Run (or resume) one restore to its end; never raises for restore failures (see
    ``result.state``), only what the ledger itself raises."""
    return Restore(open_reader, destination, s3_client, spec, ledger, tuning).run()

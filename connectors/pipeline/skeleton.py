"""The backup skeleton: one run of Source → archive → bucket, written once for every format.

``Backup.run()`` is the whole life of a run; a format's pipeline (``zip_backup``,
``pst_backup``) supplies ``write_archive`` — how messages become archive files in the bucket —
and the few hooks named below. Everything else happens here, the same way for ZIP and PST:

1. the publication a killed or failed run left is finished (``archivekeys``);
2. folders are listed, filtered and counted before any S3 object exists (a wrong password or an
   unreadable mailbox then leaves nothing behind); the ids listed are the ones fetched;
3. ``write_archive(folders)``: each folder's ids (``folder_todo``) and messages
   (``fetched``: exactly one Message or MessageFailure per id) go into the archive, whose
   records reach the ledger through ``commit_records`` only;
4. the commit: every file in place, the previous archive's other files deleted;
5. ``report.csv`` from the ledger's records and ``summary.json``, with each folder reconciled
   (source count at start = exported + failed + skipped) and the final state.

A run of an incremental series (``spec.series``, see ``connectors.pipeline.series``) plans
each folder once while listing (the source's ``series_plan``, or ``full_listing_plan`` for a
source without cursors) and fetches only the plan's ids; its result and summary carry the
series, the parent archive and the cursors to commit. A series run with nothing new writes no
archive: only its report and summary ("0 new").

Invariants:
- An exception raised by the Ledger itself (``LedgerGuard``) propagates out of ``run``
  unchanged, after the workers stop, with the upload and the ledger untouched: the ledger is
  the truth, and if it cannot be written, or says another worker owns the run, nothing may be
  cleaned up.
- Every ending but a kill leaves no incomplete multipart upload and no partial archive:
  completed → committed; failed or cancelled before the commit → the upload aborted, the files
  this run completed deleted, the ledger reset (``_clean_up``); the previous archive is
  untouched. From the commit on nothing is cleaned up: a failure there keeps the archive and
  the ledger, and says what a retry does.
- A message that could not be read, a folder that could not be listed or counts that do not
  reconcile make the result ``completed_with_errors``, never ``completed``.
- All Ledger methods are called from the thread that called ``run`` (Django's database
  connections are per thread).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence

from connectors.archives import ArchiveFormat
from connectors.folderfilter import FolderFilter, check_includes, nothing_matched
from connectors.model import (
    AuthenticationFailed,
    ConnectionFailed,
    Folder,
    FolderUnavailable,
    Message,
    MessageFailure,
    SourceError,
)
from connectors.naming import ArchiveFolders, clean_file_name
from connectors.pipeline.archivekeys import (
    ArchiveNames,
    commit_archive,
    final_key,
    finish_publication,
    remove_leftovers,
)
from connectors.pipeline.ledger import (
    DIRECTORY,
    MESSAGE,
    EntryRecord,
    Ledger,
    PartRecord,
    Progress,
    UploadState,
)
from connectors.pipeline.pacing import Cancelled, ExportPacer
from connectors.pipeline.report import (
    ArchiveFile,
    FolderError,
    FolderStats,
    Summary,
    Totals,
    write_report,
)
from connectors.pipeline.series import FolderPlan, full_listing_plan
from connectors.pipeline.spec import (
    CANCELLED,
    COMPLETED,
    COMPLETED_WITH_ERRORS,
    FAILED_STATE,
    ExportResult,
    ExportSpec,
    Tuning,
)
from connectors.sources import Source
from connectors.storage.s3.sink import MultipartSink, S3Failure, UploadConflict, put_file

log = logging.getLogger(__name__)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def user_message(exc: BaseException) -> str:
    """What the portal shows for a failure: a source's or S3's own words, else the exception's type."""
    if isinstance(exc, AuthenticationFailed | ConnectionFailed | SourceError | S3Failure):
        return str(exc)
    return f"Internal error: {type(exc).__name__}: {exc}"


def unique_paths(folders: Iterable[Folder]) -> list[Folder]:
    """Folders with distinct paths: a source that maps two names to one path gets " (2)", " (3)"...
    for the second, never a path another folder of the listing has. (The ledger, report and
    filters know a folder by this path; ``ArchiveFolders`` then names it in the archive.)"""
    listed = list(folders)
    taken = {f.path for f in listed}
    used: set[str] = set()
    out = []
    for f in listed:
        if f.path in used:
            number = 2
            while f"{f.path} ({number})" in taken or f"{f.path} ({number})" in used:
                number += 1
            f = dataclasses.replace(f, path=f"{f.path} ({number})")
        used.add(f.path)
        out.append(f)
    return out


class LedgerGuard:
    """Passes every call to the real ledger and remembers the first exception one raised.

    A ledger that fails (database down, or the portal's "another worker owns this request now")
    is the one thing the engine must not clean up after: it stops its threads, leaves the
    upload and the ledger alone, and re-raises the ledger's own exception to its caller.
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.failure: BaseException | None = None

    def __getattr__(self, name: str):
        attr = getattr(self._ledger, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            try:
                result = attr(*args, **kwargs)
            except Exception as exc:
                self.failure = self.failure or exc
                raise
            return self._guard_iterator(result) if name == "iter_records" else result

        return call

    def _guard_iterator(self, records):
        try:
            yield from records
        except Exception as exc:
            self.failure = self.failure or exc
            raise


class Backup(ABC):
    """One run of a backup (see the module docstring). Use ``run()`` once.

    A subclass sets ``format`` and ``resumes`` (whether a rerun after a kill continues from what
    the ledger committed, or starts afresh) and implements ``write_archive``; it may override
    ``stop_workers``, ``after_commit``, ``progress_snapshot``, ``close`` and ``parts_uploaded``.
    """

    format: ArchiveFormat
    resumes: bool = False

    def __init__(self, source: Source, s3_client, spec: ExportSpec, ledger: Ledger,
                 tuning: Tuning | None = None) -> None:
        self.source, self.client, self.spec = source, s3_client, spec
        self.ledger = LedgerGuard(ledger)
        self.t = tuning or Tuning()
        self.names = self.archive_names(())
        self.progress = Progress()
        self.stats: dict[str, FolderStats] = {}  # per folder: source count and error (this run's listing)
        self.listed: dict[str, list[str]] = {}  # per folder: the ids listed, until folder_todo takes them
        self.folder_errors: list[FolderError] = []
        self.folder_names = ArchiveFolders()  # source folder path -> its path in the archive
        self.pacer = ExportPacer(self.ledger, self.t, self.progress_snapshot)
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.sink: MultipartSink | None = None  # the upload this run is sending
        self.resumed = False
        self.archive_done = False  # every file is complete and in the ledger
        self.committing = ""  # "publish" or "report": the archive is committed, nothing is cleaned up
        self.conflict = False  # the store refused our parts: ``run_backup`` starts afresh once
        self.plans: dict[str, FolderPlan] = {}  # series runs: per folder path, what this run fetches
        self.plan_errors: dict[str, str] = {}  # series runs: folders that could not be planned

    # ---- what a format supplies ---------------------------------------------------------------
    @abstractmethod
    def write_archive(self, folders: list[Folder]) -> list[tuple[str, int]]:
        """Write every folder's messages into the archive's files in the bucket and complete
        them; return each file's (write key, size), in volume order. A format that resumes sets
        ``archive_done`` once every file is complete and in the ledger: a failure from then on
        keeps the archive for a retry to finish."""

    def stop_workers(self) -> None:
        """Stop every thread and upload of this run (before a clean-up, or a ledger failure)."""
        if self.sink is not None:
            self.sink.stop_uploads()

    def after_commit(self) -> None:  # noqa: B027 - optional hook
        """Once the archive is committed, before the report (PST: its records to the ledger)."""

    def progress_snapshot(self) -> Progress:
        """The Progress to report (a copy: the ledger may keep it)."""
        return dataclasses.replace(self.progress)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release local resources, whatever the ending."""

    def parts_uploaded(self) -> int:
        """The parts the result reports (a format that does not count them: 0)."""
        return 0

    @property
    def can_split(self) -> bool:
        return bool(self.spec.split_bytes)

    def archive_names(self, previous: Iterable[str]) -> ArchiveNames:
        return ArchiveNames.of(self.spec.prefix, self.spec.file_name, self.format.extension, previous,
                               can_split=self.can_split)

    # ---- the run ------------------------------------------------------------------------------
    def run(self) -> ExportResult:
        t0 = time.monotonic()
        result = ExportResult(state=FAILED_STATE, started_at=now())
        try:
            self._finish_publication()
            self.pacer.check_cancel(force=True)
            folders = self._list_and_count()
            self.timings["listing"] = time.monotonic() - t0
            if self._nothing_new():
                t1 = time.monotonic()
                self.phase("finishing")
                for folder in folders:
                    self.folder_todo(folder)
                result = self._report(result, [])
            else:
                written = self.write_archive(folders)
                t1 = time.monotonic()
                self.phase("finishing")
                self._commit_archive(written)
                self.after_commit()
                result = self._report(result, [ArchiveFile(final_key(key), size) for key, size in written])
            self.timings["finishing"] = time.monotonic() - t1
        except UploadConflict as exc:
            log.warning("%s: %s; starting the upload afresh", self.spec.key(""), exc)
            self.conflict = True
            self._clean_up()
            result.state, result.error = FAILED_STATE, user_message(exc)
        except Cancelled:  # never raised while committing (no cancel check from there on)
            self._clean_up()
            result.state, result.error = CANCELLED, "The export was cancelled."
            self._report_final_progress(result)
        except Exception as exc:  # noqa: BLE001 - every failure ends the same, cleanly
            if exc is self.ledger.failure:
                log.warning("the ledger of %s failed (%s); stopping, upload and ledger untouched",
                            self.spec.key(""), exc)
                self.stop_workers()
                raise
            if isinstance(exc, SourceError | S3Failure):
                log.warning("%s export of %s failed: %s", self.format.name, self.spec.key(""), exc)
            else:
                log.exception("%s export of %s failed", self.format.name, self.spec.key(""))
            result.state, result.error = FAILED_STATE, user_message(exc)
            if self.archive_done or self.committing:
                # The archive is complete and recorded; only putting it in place or the report
                # failed. The ledger is kept: a retry finishes it (or, a format that does not
                # resume, exports again and replaces it only at its own commit).
                what = "it could not be put in place" if self.committing == "publish" else \
                    "its report could not be written"
                retry = "retry to finish it." if self.resumes else "retry to export it again."
                result.error = f"The archive {self.spec.key('')}.* is complete, but {what} ({result.error}); {retry}"
            else:
                self._clean_up()
            self._report_final_progress(result)
        finally:
            self.close()
        result.finished_at = now()
        self.timings["total"] = time.monotonic() - t0
        result.timings = {k: round(v, 3) for k, v in self.timings.items()}
        result.progress = self.progress
        result.resumed = self.resumed
        result.parts = self.parts_uploaded()
        return result

    # ---- 1. the previous run's publication ----------------------------------------------------
    def _finish_publication(self) -> None:
        """Before anything else: the previous archive's names, and the publication of a commit
        a killed or failed run left, finished (a failure leaves everything as it is)."""
        self.names = self.archive_names(self.ledger.archive_keys())
        self.committing = "publish"
        self.warnings.append(finish_publication(self.ledger, self.client, self.spec.bucket, retry=self.t.retry))
        self.committing = ""

    # ---- 2. listing ---------------------------------------------------------------------------
    def _list_and_count(self) -> list[Folder]:
        """The request's folders (filtered, with distinct paths), each counted for the progress
        bar; a resumed run counts its committed messages as done."""
        flt = FolderFilter(self.spec.include, self.spec.exclude)
        listed = self.source.list_folders()
        check_includes(self.spec.include, [f.path for f in listed])
        folders = unique_paths(f for f in listed if flt.accepts(f.path))
        self.progress.folders_total = len(folders)
        for folder in folders:
            self.pacer.check_cancel()
            try:
                if self.spec.series is not None:
                    ids = self._plan(folder).ids
                else:
                    ids = self.source.list_message_ids(folder, since=self.spec.since, before=self.spec.before)
            except FolderUnavailable as exc:
                if self.spec.series is not None:
                    self.plan_errors[folder.path] = str(exc)
                continue  # reported when the transfer reaches it (it may have come back)
            self.listed[folder.path] = ids
            committed = self.ledger.committed_source_ids(folder.path) - {""} if self.resumes else set()
            self.progress.folder_counts[folder.path] = len(set(ids) | committed)
            self.progress.messages_total += self.progress.folder_counts[folder.path]
            self.progress.messages_done += len(committed)
        spec = self.spec
        # (An incremental run with nothing new is normal: no warning there.)
        if not self.progress.messages_total and (flt or spec.since or spec.before) and spec.series is None:
            self.warnings.append(nothing_matched(spec.include, spec.exclude, spec.since, spec.before))
        self.pacer.report(force=True)
        return folders

    def _plan(self, folder: Folder) -> FolderPlan:
        """(series runs) The folder's plan, made once: by the source when it keeps cursors,
        else a full listing without what the series archived."""
        series = self.spec.series
        previous = series.cursors.get(folder.path)
        planner = getattr(self.source, "series_plan", None)
        if planner is not None:
            plan = planner(folder, previous, series.archived, since=self.spec.since, before=self.spec.before)
        else:
            ids = self.source.list_message_ids(folder, since=self.spec.since, before=self.spec.before) \
                if folder.selectable else []
            plan = full_listing_plan(ids, series.archived(folder.path) if series.run > 1 else ())
        self.plans[folder.path] = plan
        return plan

    def _nothing_new(self) -> bool:
        """A series run that found nothing to fetch and has nothing committed: no archive."""
        return (self.spec.series is not None and not any(p.ids for p in self.plans.values())
                and self.ledger.load_upload() is None)

    # ---- 3. what the format's write_archive uses ----------------------------------------------
    def folder_todo(self, folder: Folder, committed: set[str] = frozenset()) -> list[str] | None:
        """The ids of ``folder`` still to fetch (those in ``committed`` left out), with its source
        count recorded; None when the folder cannot be read (reported as a folder error). A series
        run uses its plan; otherwise the first call per folder uses the listing's ids (a folder is
        listed once per run, not once to count and again to fetch) and a later one (the next
        volume's pass) lists it again. May run on a worker thread: it makes no ledger call."""
        stats = self.stats.setdefault(folder.path, FolderStats(folder.path))
        ids: list[str] = []
        if self.spec.series is not None and folder.path in self.plan_errors:
            stats.error = self.plan_errors[folder.path]
            self.folder_errors.append(FolderError(folder.path, stats.error))
            return None
        listed = self.listed.pop(folder.path, None)
        if self.spec.series is not None and folder.path in self.plans:
            ids = self.plans[folder.path].ids
        elif listed is not None:
            ids = listed
        elif folder.selectable:
            try:
                ids = self.source.list_message_ids(folder, since=self.spec.since, before=self.spec.before)
            except FolderUnavailable as exc:
                stats.error = str(exc)
                self.folder_errors.append(FolderError(folder.path, str(exc)))
                return None
        stats.source_count = len(set(ids) | committed)
        return [i for i in ids if i not in committed]

    def fetched(self, folder: Folder, todo: Sequence[str]) -> Iterator[Message | MessageFailure]:
        """Exactly one Message or MessageFailure per id of ``todo``, in the source's order: an id
        served twice or not asked for is dropped (never stored twice), and every id the source
        did not serve is reported as failed, with the reason (it did not return it, or the
        folder became unreadable mid-way)."""
        expected = set(todo)
        reason = "The source did not return this message."
        try:
            for item in self.source.fetch_messages(folder, todo):
                if item.source_id not in expected:
                    continue
                expected.discard(item.source_id)
                yield item
                del item  # not held while the next one is fetched
        except FolderUnavailable as exc:  # the folder went away mid-way: the rest is reported
            reason = f"The folder became unreadable during the export: {exc}"
        for missing in dict.fromkeys(i for i in todo if i in expected):  # an id listed twice is one message
            yield MessageFailure(folder.path, missing, reason)

    def commit_records(self, records: Sequence[EntryRecord] | Iterable[EntryRecord],
                       part: PartRecord | None = None) -> None:
        """The one way records reach the ledger: with the part whose bytes hold their messages
        (one transaction, parts in order: exactly once across kills), or, for a format that
        uploads whole files, all at once after the commit."""
        if part is not None:
            self.ledger.commit_part(part, records)
        else:
            self.ledger.commit_records(records)

    def phase(self, phase: str) -> None:
        self.progress.phase = phase
        self.pacer.report(force=True)

    # ---- 4. the commit ------------------------------------------------------------------------
    def _commit_archive(self, written: list[tuple[str, int]]) -> None:
        """Every file is complete: put them in place, delete the previous archive's files this
        one does not reuse (``archivekeys.commit_archive``; a file that cannot be deleted is a
        warning in the result, the state stays)."""
        self.committing = "publish"
        self.warnings.append(commit_archive(self.ledger, self.client, self.spec.bucket, written,
                                            retry=self.t.retry)[1])
        self.committing = "report"

    # ---- 5. report and summary ----------------------------------------------------------------
    def _report(self, result: ExportResult, archives: list[ArchiveFile]) -> ExportResult:
        """report.csv from the ledger's records, the folders' counts from the same records, the
        final state, summary.json."""
        stats = {path: FolderStats(path, source_count=s.source_count, error=s.error)
                 for path, s in self.stats.items()}
        seen_in_run = set(stats)

        def counted(records: Iterable[EntryRecord]) -> Iterator[EntryRecord]:
            for r in records:
                if r.kind in (MESSAGE, DIRECTORY):
                    stats.setdefault(r.folder, FolderStats(r.folder)).add(r)
                yield r

        report_key = self.spec.key(".report.csv")
        archive_keys = {number: a.key for number, a in enumerate(archives, start=1)}
        with tempfile.TemporaryFile(dir=self.t.tmp_dir) as out:
            write_report(counted(self.ledger.iter_records()), self.folder_errors, out, archive_keys)
            put_file(self.client, self.spec.bucket, report_key, out, content_type="text/csv; charset=utf-8",
                     retry=self.t.retry)
        for path, s in stats.items():
            if path not in seen_in_run:  # resumed after the transfer finished: counts are final
                s.source_count = s.exported + s.failed + s.skipped
        folders = sorted(stats.values(), key=lambda s: s.folder.split("/"))
        result.folders, result.totals, result.archives = folders, Totals.of(folders), archives
        result.report_key, result.summary_key = report_key, self.spec.key(".summary.json")
        reconciled = all(f.reconciles for f in folders)
        clean = (result.totals.failed == 0 and result.totals.skipped == 0
                 and not self.folder_errors and reconciled)
        result.state = COMPLETED if clean else COMPLETED_WITH_ERRORS
        result.error = " ".join(filter(None, (
            "" if reconciled else "Some folders' counts do not reconcile; see summary.json.", *self.warnings)))
        if self.spec.series is not None:
            result.series = self._series_result(folders)
        self._put_summary(result)
        self.progress.phase = "done"
        self.pacer.report(force=True)
        return result

    def _put_summary(self, result: ExportResult) -> None:
        timings = {k: round(v, 3) for k, v in self.timings.items()}
        summary = Summary(file=clean_file_name(self.spec.file_name, self.format.extension), format=self.format.name,
                          state=result.state, error=result.error, folders=result.folders,
                          totals=result.totals,
                          timings={"started_at": result.started_at, "finished_at": now(),
                                   "resumed": self.resumed, **timings},
                          archives=result.archives, report_key=result.report_key,
                          source=dict(self.spec.source_description), series=result.series)
        result.summary = summary.to_dict()
        with tempfile.TemporaryFile(dir=self.t.tmp_dir) as out:
            out.write(summary.to_json())
            put_file(self.client, self.spec.bucket, result.summary_key, out,
                     content_type="application/json", retry=self.t.retry)

    def _series_result(self, folders: list[FolderStats]) -> dict:
        """The series part of the result and summary: where this run resumed from, the cursor it
        commits (every folder planned now; the previous cursor of any other, so a folder that
        could not be read moves nothing), what was new and what disappeared. The ids that
        failed are kept in the cursor (``retry_ids``) for the next run to fetch again."""
        series = self.spec.series
        failed: dict[str, list[str]] = {}
        for r in self.ledger.iter_records():
            if r.kind == MESSAGE and r.status == "failed" and r.source_id:
                failed.setdefault(r.folder, []).append(r.source_id)
        cursor = {path: dict(c) for path, c in series.cursors.items()}
        per_folder = {}
        for path, plan in self.plans.items():
            if path in self.plan_errors:
                continue
            cursor[path] = {**plan.cursor, "retry_ids": failed.get(path, [])} if plan.cursor else {}
            if not cursor[path]:
                cursor.pop(path)
            per_folder[path] = plan.to_json()
        new = sum(f.exported for f in folders)
        expunged = sum(p.expunged for p in self.plans.values())
        return {**series.describe(), "cursor": cursor, "folders": per_folder, "new": new,
                "expunged": expunged, "unchanged": sum(p.mode == "unchanged" for p in self.plans.values()),
                "note": f"{new} new, {expunged} expunged at the source since the previous run"}

    def _report_final_progress(self, result: ExportResult) -> None:
        """A failed or cancelled export writes no report or summary object (there is no archive
        they could describe); its result (state, error) goes to the portal."""
        self.progress.phase = result.state
        self.pacer.report_final()

    # ---- clean-up -----------------------------------------------------------------------------
    def _clean_up(self) -> None:
        """Stop the workers, forget the run in the ledger, then remove what it wrote: abort the
        recorded upload, delete the files it completed (this run's, or a killed run's not yet
        forgotten), abort an upload this run created but had not recorded yet.

        The ledger goes first: if it refuses (another worker owns the export now, or the
        database is down) the bucket is left alone rather than pulled from under its owner.
        """
        self.stop_workers()
        try:
            state = self.ledger.load_upload()
            self.ledger.reset()
        except Exception:  # noqa: BLE001 - report the original failure, log this one
            log.warning("could not reset the ledger of %s; its upload is left alone", self.spec.key(""),
                        exc_info=True)
            return
        if state is not None:
            remove_leftovers(self.client, self.spec.bucket, state, self.names, retry=self.t.retry)
        sink = self.sink
        if sink is not None and sink.upload_id and (state is None or sink.upload_id != state.upload_id):
            try:  # created by this run but not yet recorded
                sink.abort()
            except Exception:  # noqa: BLE001
                log.warning("could not abort the upload of %s", sink.key, exc_info=True)

    def discard(self, state: UploadState) -> None:
        """Start afresh from a killed run's ``state``: the ledger first (see ``_clean_up``), then
        the bucket."""
        self.ledger.reset()
        remove_leftovers(self.client, self.spec.bucket, state, self.names, retry=self.t.retry)

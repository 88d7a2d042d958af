"""PST exports: Source → ``connectors.pst.SplittingPstWriter`` (local temp files) → S3.

A PST's header and B-trees are written last, so the file cannot be streamed part by part
like a ZIP: it is built in a temp directory (needs free disk about the mailbox's size), then
each file is uploaded as its own multipart upload to ``PREFIX/FILE.pst`` (``FILE.partNNN.pst``
when split), followed by the report and summary.

Records: each message's record goes to a local file while the PST is written; once every file
is uploaded they are committed to the ledger (``Ledger.commit_records``) and the report is
written from the ledger, so the portal's report and the bucket's ``report.csv`` are one.
Folders are named as in a ZIP (``connectors.naming.ArchiveFolders``): distinct source folders
are distinct PST folders, whatever their names.

Crash safety: a killed worker restarts a PST export from scratch — the ledger holds the upload
in progress and the files already completed (``begin_volume``; and, once every file is
complete, the records), which the next run aborts, deletes and forgets before starting over.
Exactly-once holds because a run either completes every file or leaves nothing its successor
would keep.
Files are written under their write keys (``connectors.archivekeys``): a staging key when the
final key holds a file of the request's previous archive, so nothing of it is replaced before
the commit. Failed or cancelled before the commit: the current upload is aborted, files this
run completed are deleted, the ledger is reset; no incomplete multipart upload and no partial
archive remain, the previous archive is untouched. Completed: the commit moves staged files
into place and deletes the previous archive's files this one does not reuse (a warning in the
result if some remain), then the records and the report are written; from the commit on
nothing is cleaned up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from connectors import mimeinfo
from connectors.archivekeys import (
    ArchiveNames,
    commit_archive,
    finish_publication,
    leftover_keys,
    orphan_upload_keys,
)
from connectors.base import FolderUnavailable, Message, MessageFailure, Source, SourceError
from connectors.export import (
    CANCELLED,
    COMPLETED,
    COMPLETED_WITH_ERRORS,
    FAILED_STATE,
    ExportResult,
    ExportSpec,
    LedgerGuard,
    Tuning,
    _now,
    _user_message,
    unique_paths,
)
from connectors.exportprogress import Cancelled, ExportPacer
from connectors.folderfilter import FolderFilter
from connectors.growingupload import GrowingFileUpload, SentPartChanged
from connectors.ledger import (
    EXPORTED,
    FAILED,
    MESSAGE,
    SKIPPED,
    EntryRecord,
    Ledger,
    Progress,
    Volume,
)
from connectors.naming import ArchiveFolders, clean_file_name
from connectors.prefetch import prefetched
from connectors.pst.mime import ParsedMessage
from connectors.pst.parseworker import ParseWorker
from connectors.report import ArchiveFile, FolderError, FolderStats, Summary, Totals, write_report
from connectors.s3sink import (
    MultipartSink,
    S3Failure,
    abort_incomplete_uploads,
    put_file,
)

log = logging.getLogger(__name__)

NO_SPLIT = 1 << 62
PARSE_BATCH_BYTES = 2 * 1024 * 1024  # messages sent to the parsing process at a time
PARSE_BATCH_COUNT = 64


def _message_size(item) -> int:
    return len(item.raw) if isinstance(item, Message) else 1024


def _fetched_size(prepared) -> int:
    return _message_size(prepared[0])


def _prepared(items: Iterable[Message | MessageFailure], parser: ParseWorker,
              ) -> Iterator[tuple[Message | MessageFailure, str, ParsedMessage | None]]:
    """Each fetched item with its message's SHA-256 and MIME parse, made by the ``ParseWorker``
    process beside the conversion, a few MB of messages at a time (see ``parseworker``)."""
    iterator = iter(items)
    batch: list = []
    size = 0
    try:
        for item in iterator:
            batch.append(item)
            size += len(item.raw) if isinstance(item, Message) else 0
            if size >= PARSE_BATCH_BYTES or len(batch) >= PARSE_BATCH_COUNT:
                yield from _parse_batch(batch, parser)
                batch, size = [], 0
        yield from _parse_batch(batch, parser)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _parse_batch(batch: list, parser: ParseWorker):
    messages = [item for item in batch if isinstance(item, Message)]
    prepared = iter(parser.parse_batch([m.raw for m in messages]))
    for item in batch:
        if isinstance(item, Message):
            digest, parsed = next(prepared)
            yield item, digest, parsed
        else:
            yield item, "", None


def _record_line(record: EntryRecord) -> str:
    """A record as one JSON line (its fields are flat: ``asdict``'s deep copy took 0.3 s of the
    bench export for the same text)."""
    return json.dumps(vars(record), ensure_ascii=False) + "\n"


class PstExport:
    def __init__(self, source: Source, s3_client, spec: ExportSpec, ledger: Ledger, tuning: Tuning) -> None:
        self.source, self.client, self.spec, self.t = source, s3_client, spec, tuning
        self.ledger = LedgerGuard(ledger)
        self.name = clean_file_name(spec.file_name, "pst")
        self.progress = Progress()
        self.stats: dict[str, FolderStats] = {}
        self.folder_errors: list[FolderError] = []
        self.completed: list[Volume] = []  # files completed, under their write keys
        self.names = ArchiveNames.of(spec.prefix, spec.file_name, "pst", can_split=True)
        self._recorded = 0  # the volume whose upload the ledger holds
        self.committing = ""  # "publish" or "report": the archive is committed, nothing is cleaned up
        self.warnings: list[str] = []
        self.sink: MultipartSink | None = None
        self.upload: GrowingFileUpload | None = None
        self._volume = None  # the PstWriter whose file self.upload sends
        self._closed_volumes: list = []  # (PstWriter, Path) finished by the writer, not yet uploaded
        self.archives: list[ArchiveFile] = []
        self._timings: dict[str, float] = {}
        self.pacer = ExportPacer(self.ledger, self.t, self._progress_snapshot)
        self._parser: ParseWorker | None = None  # while the PST is written (``_write_pst``)
        self.folder_names = ArchiveFolders()  # source folder path -> PST folder path
        self._records_committed = False  # the ledger holds the records: no outcomes in progress

    def key_for(self, path: Path) -> str:
        """The final key of the local file ``path``."""
        return self.spec.key(path.name[len(self.name):])  # ".pst" or ".part002.pst"

    def write_key_for(self, path: Path) -> str:
        return self.names.write_key(self.key_for(path))

    def _number(self, path: Path) -> int:
        suffix = path.name[len(self.name):]
        return int(suffix[5:-4]) if suffix.startswith(".part") else 1

    def run(self) -> ExportResult:
        t0 = time.monotonic()
        result = ExportResult(state=FAILED_STATE, started_at=_now())
        try:
            with tempfile.TemporaryDirectory(prefix="pst-", dir=self.t.tmp_dir) as work:
                self._finish_publication()
                self.pacer.check_cancel(force=True)
                folders = self._list_and_count()
                self._forget_previous_run()
                t1 = time.monotonic()
                self._timings["listing"] = t1 - t0
                paths, records_path = self._write_pst(folders, Path(work))
                self._commit_archive()
                result = self._report(result, self.archives, records_path, paths,
                                      " ".join(filter(None, self.warnings)))
        except Cancelled:  # never raised while committing (no cancel check from there on)
            self._clean_up()
            result.state, result.error = CANCELLED, "The export was cancelled."
        except Exception as exc:  # noqa: BLE001 - every failure ends the same, cleanly
            if exc is self.ledger.failure:  # see connectors.export: touch nothing, re-raise
                if self.sink is not None:
                    self.sink.stop_uploads()
                raise
            if isinstance(exc, SourceError | S3Failure):
                log.warning("PST export %s failed: %s", self.name, exc)
            else:
                log.exception("PST export %s failed", self.name)
            result.state, result.error = FAILED_STATE, _user_message(exc)
            if self.committing:  # the archive is complete: keep it and what the ledger knows
                what = "it could not be put in place" if self.committing == "publish" else \
                    "its report could not be written"
                result.error = (f"The archive {self.spec.key('')}.* is complete, but {what} ({result.error}); "
                                "retry to export it again.")
            else:
                self._clean_up()
        if result.state in (FAILED_STATE, CANCELLED):
            self.progress.phase = result.state
            self.pacer.report_final()
        result.finished_at = _now()
        self._timings["total"] = time.monotonic() - t0
        result.timings = {k: round(v, 3) for k, v in self._timings.items()}
        result.progress = self.progress
        return result

    # ---- steps ------------------------------------------------------------------------------
    def _list_and_count(self):
        flt = FolderFilter(self.spec.include, self.spec.exclude)
        folders = unique_paths(f for f in self.source.list_folders() if flt.accepts(f.path))
        self.progress.folders_total = len(folders)
        for folder in folders:
            self.pacer.check_cancel()
            try:
                ids = self.source.list_message_ids(folder, since=self.spec.since, before=self.spec.before)
            except FolderUnavailable:
                continue
            self.progress.folder_counts[folder.path] = len(ids)
            self.progress.messages_total += len(ids)
        self.pacer.report(force=True)
        return folders

    def _finish_publication(self) -> None:
        """Before anything else: the previous archive's names, and the publication of a commit
        a killed or failed run left, finished (a failure leaves everything as it is)."""
        self.names = ArchiveNames.of(self.spec.prefix, self.spec.file_name, "pst", self.ledger.archive_keys(),
                                     can_split=True)
        self.committing = "publish"
        self.warnings.append(finish_publication(self.ledger, self.client, self.spec.bucket, retry=self.t.retry))
        self.committing = ""

    def _forget_previous_run(self) -> None:
        """What a killed run left (the upload in progress, the files it completed) is removed:
        start afresh. Only keys its ledger recorded, or that it was creating when killed."""
        state = self.ledger.load_upload()
        if state is not None:
            self.ledger.reset()
            self._remove(state)
        for key in orphan_upload_keys(state, self.names):  # created, then killed before recorded
            abort_incomplete_uploads(self.client, self.spec.bucket, key, retry=self.t.retry)

    def _remove(self, state) -> None:
        """Abort ``state``'s upload and delete the files it completed (never the previous archive's)."""
        if not state.archive_complete:
            try:
                MultipartSink(self.client, self.spec.bucket, state.key, upload_id=state.upload_id,
                              retry=self.t.retry).abort()
            except Exception:  # noqa: BLE001 - the bucket's lifecycle rule is the backstop
                log.warning("could not abort the upload of %s", state.key, exc_info=True)
        for key in leftover_keys(state, self.names):
            try:
                self.client.delete_object(Bucket=self.spec.bucket, Key=key)
            except Exception:  # noqa: BLE001
                log.warning("could not delete %s", key, exc_info=True)

    def _write_pst(self, folders, work: Path) -> tuple[list[Path], Path]:
        from connectors.pst import SplittingPstWriter

        t0 = time.monotonic()
        self.progress.phase = "transferring"
        records_path = work / "records.jsonl"
        # Not durable: the files live only until they are uploaded, and a crash starts over.
        writer = SplittingPstWriter(work / f"{self.name}.pst", split_bytes=self.spec.split_bytes or NO_SPLIT,
                                    display_name=self.spec.display_name or self.name, durable=False,
                                    on_part_closed=lambda *closed: self._closed_volumes.append(closed))
        with ParseWorker() as self._parser, writer, open(records_path, "w", encoding="utf-8") as records:
            for folder in folders:
                writer.add_folder(self.folder_names.path(folder.path))
            self._start_volume(writer.current, writer.paths[-1])
            for folder in folders:
                self.progress.current_folder = folder.path
                stats = self.stats.setdefault(folder.path, FolderStats(folder.path))
                if folder.selectable:
                    try:
                        ids = self.source.list_message_ids(folder, since=self.spec.since,
                                                           before=self.spec.before)
                    except FolderUnavailable as exc:
                        stats.error = str(exc)
                        self.folder_errors.append(FolderError(folder.path, str(exc)))
                        continue
                    stats.source_count = len(ids)
                    self._write_folder(writer, folder, ids, stats, records)
                self.progress.folders_done += 1
        t1 = time.monotonic()
        self._timings["writing"] = t1 - t0
        self.progress.phase = "uploading"
        self._finish_volume(writer.current, writer.paths[-1])
        self._timings["upload"] = time.monotonic() - t1  # what was left after the writing
        return writer.paths, records_path

    def _write_folder(self, writer, folder, ids: list[str], stats: FolderStats, records) -> None:
        expected = set(ids)
        # The next batch is fetched while this one is converted (a bounded number of bytes
        # ahead); closing stops the fetching thread before the source is used again.
        # Two stages, each on its own thread: IMAP fetches the next batches while the parsing
        # process works on the current ones (one thread doing both left the converter waiting
        # 0.7 s per 3,000 messages); each stage holds half of ``queue_bytes``.
        fetching = prefetched(self.source.fetch_messages(folder, ids), max_bytes=self.t.queue_bytes // 2,
                              size=_message_size, name="pst-fetch")
        fetched = prefetched(_prepared(fetching, self._parser), max_bytes=self.t.queue_bytes // 2,
                             size=_fetched_size, name="pst-parse")
        with contextlib.closing(fetched):
            for item, digest, parsed in fetched:
                if item.source_id not in expected:
                    continue
                expected.discard(item.source_id)
                record = self._add(writer, item, digest, parsed)
                records.write(_record_line(record))
                stats.add(record)
                self._keep_uploading(writer)
                self.pacer.check_cancel()
                self.pacer.report()
        for missing in [i for i in ids if i in expected]:
            record = EntryRecord(MESSAGE, folder.path, missing, FAILED,
                                 error="The source did not return this message.")
            records.write(_record_line(record))
            stats.add(record)

    def _add(self, writer, item: Message | MessageFailure, digest: str,
             parsed: ParsedMessage | None) -> EntryRecord:
        self.progress.messages_done += 1
        if isinstance(item, MessageFailure):
            status = SKIPPED if item.status == SKIPPED else FAILED
            self.progress.messages_failed += status == FAILED
            self.progress.messages_skipped += status == SKIPPED
            return EntryRecord(MESSAGE, item.folder, item.source_id, status, error=item.error)
        info = mimeinfo.extract(item.raw)
        record = EntryRecord(MESSAGE, item.folder, item.source_id, EXPORTED, size=len(item.raw),
                             message_id=info.message_id, date=info.date, from_=info.from_,
                             to=info.to, subject=info.subject, labels=tuple(item.labels), sha256=digest)
        try:
            writer.add_message(dataclasses.replace(item, folder=self.folder_names.path(item.folder)), parsed)
        except Exception as exc:  # noqa: BLE001 - one unconvertible message must not sink the rest
            log.warning("PST conversion of %s failed: %s", item.source_id, exc)
            record.status, record.error = FAILED, f"could not be converted to PST: {exc}"
            self.progress.messages_failed += 1
            return record
        record.volume = len(writer.paths)
        if parsed is not None and parsed.differences:  # exported, but not quite as the source
            record.error = "; ".join(parsed.differences)
        self.progress.bytes_done += len(item.raw)
        return record

    # ---- upload while writing (connectors.growingupload) -----------------------------------
    def _start_volume(self, volume, path: Path) -> None:
        """Open the multipart upload of the PST file being started, and record it: file 1 as a
        new upload, a later one with the file before it (``begin_volume``), so that a rerun
        after a kill knows every file this run completed."""
        key, number = self.write_key_for(path), self._number(path)
        self.sink = MultipartSink(self.client, self.spec.bucket, key, threads=self.t.upload_threads,
                                  retry=self.t.retry, content_md5=self.t.content_md5,
                                  content_type="application/vnd.ms-outlook")
        upload_id = self.sink.create()
        if number == 1:
            self.ledger.begin_upload(key, upload_id, "pst")
        elif number == self._recorded + 1:
            self.ledger.begin_volume(self.completed[-1], key, upload_id)
        # else: file ``number`` sent again (SentPartChanged); the ledger keeps its first upload, and
        # a rerun aborts this one by its key (``orphan_upload_keys``)
        self._recorded = number
        self.upload = GrowingFileUpload(self.sink, path, part_bytes=max(self.t.part_bytes, self.t.min_part_bytes),
                                        in_flight=self.t.upload_threads, max_ahead=self.t.max_ahead_bytes,
                                        watch=volume.watch_rewrites,
                                        deferred=volume.written_at_close, on_part=self._part_sent)
        self._volume = volume

    def _keep_uploading(self, writer) -> None:
        """After each message: finish a volume the writer closed, send what has settled."""
        if self._closed_volumes:
            while self._closed_volumes:
                self._finish_volume(*self._closed_volumes.pop(0))
            self.pacer.check_cancel(force=True)  # a cancel then must not wait for the next file
        if self._volume is not writer.current:
            self._start_volume(writer.current, writer.paths[-1])
        volume = writer.current
        if volume.allocated_bytes - volume.SETTLED_LAG >= self.upload.next_part_end:
            self.upload.send_settled(volume.settled_bytes())

    def _finish_volume(self, volume, path: Path) -> None:
        """Send the rest of a closed PST file, complete its upload and delete the local copy."""
        key, size = self.write_key_for(path), path.stat().st_size
        if key != self.sink.key:  # the first file became FILE.part001.pst when the second began
            self._restart_upload(volume, path)
        try:
            parts = self.upload.finish(size, volume.rewrites)
        except SentPartChanged as exc:  # never seen; the file is sent again rather than wrong
            log.warning("PST %s: %s; uploading the finished file afresh", key, exc)
            self._restart_upload(volume, path)
            parts = self.upload.finish(size, [])
        etag = self.sink.complete(parts)
        self.ledger.mark_archive_complete(size, etag)
        self.sink.close()
        self.sink = None
        self.completed.append(Volume(self._number(path), key, size))
        self.archives.append(ArchiveFile(self.key_for(path), size))
        path.unlink()  # a split export holds one file at a time on disk
        self.pacer.report()

    def _restart_upload(self, volume, path: Path) -> None:
        """Abort what was sent of ``path`` and begin a new upload that sends it whole."""
        self.sink.abort()
        self.progress.archive_bytes -= sum(p.size for p in self.upload.parts.values())
        self._start_volume(volume, path)

    def _part_sent(self, part) -> None:
        """The bytes sent go out with the next progress report (at most one per
        ``progress_interval``: a forced one per part cost the converting thread 0.2 s of ledger
        writes per 450 MB)."""
        self.progress.archive_bytes += part.size
        self.pacer.report()

    def _commit_archive(self) -> None:
        """Every file is complete: put them in place and delete the previous archive's files
        this one does not reuse (a split one now fits in one file, or the reverse)."""
        self.committing = "publish"
        self.warnings.append(commit_archive(self.ledger, self.client, self.spec.bucket,
                                            [(v.key, v.size) for v in self.completed], retry=self.t.retry)[1])
        self.committing = "report"

    def _report(self, result: ExportResult, archives, records_path: Path, paths: list[Path],
                warning: str = "") -> ExportResult:
        self.progress.phase = "finishing"
        keys = {i + 1: self.key_for(p) for i, p in enumerate(paths)}

        def records():
            with open(records_path, encoding="utf-8") as fh:
                for line in fh:
                    data = json.loads(line)
                    data["labels"] = tuple(data["labels"])
                    record = EntryRecord(**data)
                    if record.status == EXPORTED:
                        record.name = keys.get(record.volume, "")
                    yield record

        # The outcomes in progress reports stand for records the ledger does not hold yet: they
        # stop before the records arrive, so the live table never counts a message twice.
        self._records_committed = True
        self.pacer.report(force=True)
        self.ledger.commit_records(records())
        report_key = self.spec.key(".report.csv")
        with tempfile.TemporaryFile(dir=self.t.tmp_dir) as out:
            write_report(self.ledger.iter_records(), self.folder_errors, out, keys)
            put_file(self.client, self.spec.bucket, report_key, out, content_type="text/csv; charset=utf-8",
                     retry=self.t.retry)
        folders = sorted(self.stats.values(), key=lambda s: s.folder.split("/"))
        result.folders, result.totals, result.archives = folders, Totals.of(folders), archives
        result.report_key, result.summary_key = report_key, self.spec.key(".summary.json")
        clean = (result.totals.failed == 0 and result.totals.skipped == 0 and not self.folder_errors
                 and all(f.reconciles for f in folders))
        result.state = COMPLETED if clean else COMPLETED_WITH_ERRORS
        result.error = warning
        summary = Summary(file=self.name, format="pst", state=result.state, error=result.error, folders=folders,
                          totals=result.totals, archives=archives, report_key=report_key,
                          timings={"started_at": result.started_at, "finished_at": _now(),
                                   **{k: round(v, 3) for k, v in self._timings.items()}},
                          source=dict(self.spec.source_description))
        result.summary = summary.to_dict()
        with tempfile.TemporaryFile(dir=self.t.tmp_dir) as out:
            out.write(summary.to_json())
            put_file(self.client, self.spec.bucket, result.summary_key, out,
                     content_type="application/json", retry=self.t.retry)
        self.progress.phase = "done"
        self.pacer.report(force=True)
        return result

    # ---- control ----------------------------------------------------------------------------
    def _clean_up(self) -> None:
        """Ledger first (it may say the export is no longer ours), then the bucket: the recorded
        upload and files (this run's, or a killed run's not yet forgotten), and an upload this
        run created but had not recorded yet."""
        if self.sink is not None:
            self.sink.stop_uploads()
        try:
            state = self.ledger.load_upload()
            self.ledger.reset()
        except Exception:  # noqa: BLE001
            log.warning("could not reset the ledger; the upload is left alone", exc_info=True)
            return
        if state is not None:
            self._remove(state)
        if self.sink is not None and self.sink.upload_id and (state is None or self.sink.upload_id != state.upload_id):
            try:
                self.sink.abort()
            except Exception:  # noqa: BLE001
                log.warning("could not abort the upload of %s", self.name, exc_info=True)

    def _progress_snapshot(self) -> Progress:
        # The records stay in a local file until the end: the per-folder outcomes travel with
        # the counters (one pass over the folders per report, nothing per message).
        outcomes = {} if self._records_committed else {
            path: [s.exported, s.failed, s.skipped, s.bytes] for path, s in self.stats.items()}
        return dataclasses.replace(self.progress, folder_outcomes=outcomes)


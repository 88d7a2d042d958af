"""The export engine: Source → ZIP (or PST) → S3, reported to a Ledger, exactly once.

    result = run_export(source, s3_client, ExportSpec(bucket=..., prefix=..., file_name=...),
                        ledger)

ZIP pipeline (threads; memory bounded by bytes, never by the mailbox size):

    fetcher ──messages──► compress pool (isal deflate, sha256, headers) ──► assembler
    (Source, 1 thread)    (``compress_threads``)                            (ZIP entries → parts)
        ▲ bounded by ``queue_bytes``                                            │ parts ≥ 5 MiB
        │                                                                       ▼
    coordinator (the calling thread) ◄──uploaded── upload pool (``upload_threads`` UploadPart)
      commits parts in order to the Ledger, reports progress, polls cancel, builds the last part
      (rest of the entries + labels.csv + central directory), completes, writes the report.

Invariants:
- An exception raised by the Ledger itself propagates out of ``run_export`` unchanged, after
  the threads stop and with the upload and the ledger untouched (the ledger is the truth; if it
  cannot be written, or says another worker owns the export, nothing may be cleaned up).
- Parts are cut at entry boundaries: every part holds whole ZIP entries. Every part but the
  last is at least ``part_bytes`` (≥ 5 MiB on S3) and the target doubles every 1,000 parts, so
  10,000 parts reach ~8 TB; a part bigger than ``spill_bytes`` lives in a temp file.
- After part N is uploaded, ONE ``ledger.commit_part`` stores it with the records of every
  entry whose bytes it holds (and of failures noted meanwhile); N is committed only after N-1.
- A rerun with the same ledger after a kill (SIGKILL anywhere) reuses the upload id and the
  committed parts, rebuilds the ZIP offset and central directory from committed records,
  skips committed source ids and produces everything else again (an uploaded but uncommitted
  part is simply overwritten under the same number). See ``ZipExport._resume``.
- Every ending but a kill leaves no incomplete multipart upload: completed → completed;
  failed or cancelled → aborted, and the ledger is reset so a retry starts cleanly (a failed
  export's partial archive cannot be trusted to match a later listing, and keeping an upload
  nobody resumes would cost the customer storage).
- Per folder: source count at start = exported + failed + skipped; a message that could not be
  read makes the result ``completed_with_errors``, never ``completed``.
- All Ledger methods are called from the thread that called ``run_export``.

Split into volumes (``spec.split_bytes``; see ``connectors.archives.zip.volumes`` and ``ZipExport._close_volume``):
- Each volume is a standalone ZIP with its own multipart upload, offsets and central directory;
  entry names (and their per-folder numbers) run on across volumes, so extracting every volume
  into one directory gives the whole mailbox. A folder's directory entry is in the volume
  where the folder starts; each volume's labels are in its own ``labels.partNNN.csv``.
- Before an entry that would take a volume already holding a message beyond ``split_bytes``,
  the assembler stops; the coordinator writes that volume's last part (labels.csv of its own
  messages, central directory) with ``next_volume``, completes it, and starts the next one.
- Names as PST's: ``FILE.zip`` while one volume suffices; at the first split the completed
  first volume is renamed (server-side copy + delete) to ``FILE.part001.zip`` and the next
  ones are ``FILE.part002.zip``... Only then is the next upload recorded (``begin_volume``).
  Each file is written under its write key (``connectors.pipeline.archivekeys``): a staging key when
  its final key holds a file of the request's previous archive.
- Every step between "last part committed" and "next volume recorded" is repeatable, so a
  rerun after a kill anywhere in it finishes the step (``_settle_volume``) and goes on.
- Failed or cancelled before the commit: the current upload is aborted and every volume this
  run completed deleted; the previous archive is untouched.
- Completed: the commit (``archivekeys.commit_archive``) moves staged volumes into place and
  deletes the previous archive's files this one does not reuse (fewer volumes, or one
  ``FILE.zip``), then the report is written; a file that cannot be deleted goes into the
  result's error as a warning, the state stays. From the commit on, nothing is cleaned up.

PST: see ``connectors.pipeline.pst_backup`` (written locally, uploaded at the end, restarts from scratch
after a kill).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import logging
import queue
import tempfile
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import accumulate, chain

from connectors import mimeinfo
from connectors.archives.zip import writer as zipwriter
from connectors.archives.zip.volumes import VolumeBudget, labels_row_bound
from connectors.folderfilter import FolderFilter
from connectors.memtune import tune_malloc
from connectors.model import (
    AuthenticationFailed,
    ConnectionFailed,
    Folder,
    FolderUnavailable,
    Message,
    MessageFailure,
    SourceError,
)
from connectors.naming import (
    ArchiveFolders,
    clean_file_name,
    message_entry_name,
    object_key,
)
from connectors.pipeline.archivekeys import (
    ArchiveNames,
    commit_archive,
    final_key,
    finish_publication,
    leftover_keys,
)
from connectors.pipeline.ledger import (
    DIRECTORY,
    EXPORTED,
    FAILED,
    MANIFEST,
    MESSAGE,
    SKIPPED,
    EntryRecord,
    Ledger,
    MemoryLedger,
    PartRecord,
    Progress,
    SqliteLedger,
    UploadState,
    Volume,
)
from connectors.pipeline.pacing import Cancelled, ExportPacer
from connectors.pipeline.report import (
    ArchiveFile,
    FolderError,
    FolderStats,
    Summary,
    Totals,
    labels_manifest,
    write_report,
)
from connectors.sources import Source
from connectors.storage.s3.growing import IN_ORDER_SAFE_AHEAD
from connectors.storage.s3.move import move_object
from connectors.storage.s3.sink import (
    MAX_PARTS,
    MIN_PART_BYTES,
    MultipartSink,
    RetryPolicy,
    S3Failure,
    UploadConflict,
    UploadedPart,
    UploadGone,
    abort_incomplete_uploads,
    completed_object_etag,
    put_file,
    with_retries,
)

__all__ = [
    "COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED_STATE", "CANCELLED", "EntryRecord", "ExportResult",
    "ExportSpec", "Ledger", "MemoryLedger", "PartRecord", "Progress", "SqliteLedger", "Tuning",
    "UploadState", "run_export",
]

log = logging.getLogger(__name__)

MAX_UNCOMMITTED_PARTS = 64  # a part stuck in retries holds back commits, not memory
COMPLETED, COMPLETED_WITH_ERRORS, FAILED_STATE, CANCELLED = (
    "completed", "completed_with_errors", "failed", "cancelled")


@dataclass
class ExportSpec:
    """What to export and where (the request's fields)."""

    bucket: str
    file_name: str
    prefix: str = ""
    format: str = "zip"  # "zip" | "pst"
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    since: dt.date | None = None
    before: dt.date | None = None
    split_bytes: int | None = None  # start a new .partNNN.zip / .partNNN.pst beyond this size
    display_name: str = ""  # PST store name
    source_description: dict = field(default_factory=dict)  # goes into summary.json (no secrets!)

    def key(self, suffix: str) -> str:
        ext = "pst" if self.format == "pst" else "zip"
        return object_key(self.prefix, clean_file_name(self.file_name, ext), suffix)


@dataclass
class Tuning:
    """Engine knobs; defaults measured with bench/zip_bench.py on 2 cores (see its docstring)."""

    compress_threads: int = 2
    upload_threads: int = 3
    queue_bytes: int = 16 * 1024 * 1024  # messages fetched but not yet in a part (24 MB: no faster, +10 MB RSS)
    part_bytes: int = 8 * 1024 * 1024  # first parts' target size; doubles every 1,000 parts
    min_part_bytes: int = MIN_PART_BYTES  # S3's floor; tests against rclone lower it
    spill_bytes: int = 16 * 1024 * 1024  # a part buffer bigger than this goes to a temp file
    deflate_level: int = zipwriter.DEFAULT_LEVEL
    progress_interval: float = 1.0
    cancel_interval: float = 0.5
    content_md5: bool = False  # TLS already guards transit; MD5 costs ~1 s CPU per 500 MB
    max_ahead_bytes: int = IN_ORDER_SAFE_AHEAD  # sent before part 1 of a PST (growingupload.default_max_ahead)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tmp_dir: str | None = None

    def part_target(self, number: int) -> int:
        return max(self.part_bytes, self.min_part_bytes) * 2 ** ((number - 1) // 1000)


@dataclass
class ExportResult:
    state: str  # completed | completed_with_errors | failed | cancelled
    error: str = ""
    folders: list[FolderStats] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    archives: list[ArchiveFile] = field(default_factory=list)
    report_key: str = ""
    summary_key: str = ""
    started_at: str = ""
    finished_at: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    resumed: bool = False
    parts: int = 0
    summary: dict = field(default_factory=dict)  # summary.json as uploaded (completed runs)


class _Stopped(Exception):
    """A worker thread noticed the stop flag."""


# ---- small building blocks ----------------------------------------------------------------------

class ByteBudget:
    """Blocks producers while more than ``limit`` bytes are in flight (one oversized item may
    pass alone, so a 30 MB message never deadlocks a 24 MB budget)."""

    def __init__(self, limit: int, stop: threading.Event) -> None:
        self.limit, self.used, self.peak = limit, 0, 0
        self._cond = threading.Condition()
        self._stop = stop

    def acquire(self, n: int) -> None:
        with self._cond:
            while self.used and self.used + n > self.limit:
                if self._stop.is_set():
                    raise _Stopped()
                self._cond.wait(0.2)
            self.used += n
            self.peak = max(self.peak, self.used)

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class PartBuffer:
    """The bytes of one part being assembled and the records of everything in it.

    Small parts are a list of the entries' own bytes objects (no copying while assembling);
    past ``spill_bytes`` everything moves to a temp file, so a 30 MB message or a 100 MB
    central directory never sits in memory twice.
    """

    def __init__(self, number: int, spill_bytes: int, tmp_dir: str | None) -> None:
        self.number = number
        self.size = 0
        self.records: list[EntryRecord] = []
        self._chunks: list[bytes] = []
        self._file = None
        self._spill_bytes, self._tmp_dir = spill_bytes, tmp_dir

    def write(self, data: bytes) -> None:
        if self._file is None and self.size + len(data) > self._spill_bytes:
            self._file = tempfile.TemporaryFile(dir=self._tmp_dir)
            for chunk in self._chunks:
                self._file.write(chunk)
            self._chunks = []
        if self._file is not None:
            self._file.write(data)
        else:
            self._chunks.append(data)
        self.size += len(data)

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def body(self):
        """What to upload: a reader over the chunks (no joined copy), or the temp file."""
        if self._file is not None:
            self._file.flush()
            self._file.seek(0)
            return self._file
        return ChunksReader(self._chunks)

    def close(self) -> None:
        self._chunks = []
        if self._file is not None:
            self._file.close()


class ChunksReader(io.RawIOBase):
    """A seekable read-only file over a list of bytes objects, reading without copying them
    into one buffer first (an 8 MB part would otherwise exist twice while it is uploaded)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks
        self._starts = list(accumulate((len(c) for c in chunks), initial=0))
        self._size = self._starts[-1]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = min(max(0, base + offset), self._size)
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        written = 0
        while written < len(view) and self._pos < self._size:
            index = bisect_right(self._starts, self._pos) - 1
            chunk = self._chunks[index]
            start = self._pos - self._starts[index]
            n = min(len(chunk) - start, len(view) - written)
            view[written:written + n] = chunk[start:start + n]
            written += n
            self._pos += n
        return written

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        if self._pos < self._size:  # within one chunk: a slice, one copy of just what is asked
            index = bisect_right(self._starts, self._pos) - 1
            start = self._pos - self._starts[index]
            chunk = self._chunks[index]
            if start + size <= len(chunk):
                self._pos += size
                return chunk[start:start + size]
        return super().read(size)


@dataclass
class Prepared:
    """A message after the compress pool: everything but its place in the archive."""

    folder: str
    source_id: str
    method: int
    crc32: int
    payload: bytes
    size: int
    sha256: str
    info: mimeinfo.HeaderInfo
    when: dt.datetime | None
    labels: tuple[str, ...]


def prepare_message(msg: Message, level: int) -> Prepared:
    raw = msg.raw
    digest = hashlib.sha256(raw).hexdigest()
    method, crc, payload = zipwriter.compress_entry(raw, level)
    return Prepared(msg.folder, msg.source_id, method, crc, payload, len(raw), digest,
                    mimeinfo.extract(raw), msg.internal_date, tuple(msg.labels))


@dataclass
class _FolderStart:
    folder: Folder
    last_sequence: int
    needs_directory: bool


@dataclass
class _FolderEnd:
    folder: Folder


@dataclass
class _Queued:
    future: Future
    size: int


@dataclass
class _FolderFailed:
    folder: Folder
    error: str


_END = object()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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


# ---- the ZIP export ---------------------------------------------------------------------------

class ZipExport:
    """One run of a ZIP export (see the module docstring). Use ``run()`` once."""

    def __init__(self, source: Source, s3_client, spec: ExportSpec, ledger: Ledger,
                 tuning: Tuning | None = None) -> None:
        self.source, self.client, self.spec = source, s3_client, spec
        self.ledger = LedgerGuard(ledger)
        self.t = tuning or Tuning()
        self._set_names(())
        self.volume = 1
        self.volumes: list[Volume] = []  # completed volumes before the current one
        self.volume_budget = self._new_volume_budget()
        self.volume_complete = False  # the current volume's CompleteMultipartUpload is in the ledger
        self.stop = threading.Event()
        self.events: queue.Queue = queue.Queue()
        self.items: queue.Queue = queue.Queue(maxsize=100_000)
        self.budget = ByteBudget(self.t.queue_bytes, self.stop)
        # parts whose bytes are in memory/temp files waiting for or in an upload...
        self.part_slots = threading.Semaphore(self.t.upload_threads)
        # ...and parts uploaded but not yet committed (records only; bounded all the same)
        self.uncommitted = threading.Semaphore(MAX_UNCOMMITTED_PARTS)
        self.progress = Progress()
        self.stats: dict[str, FolderStats] = {}
        self.folder_errors: list[FolderError] = []
        self.parts: list[PartRecord] = []
        self.sink: MultipartSink | None = None
        self.compress_pool: ThreadPoolExecutor | None = None
        self.threads: list[threading.Thread] = []
        self.open_parts: dict[int, PartBuffer] = {}
        self.offset = 0
        self.resumed = False
        self._timings: dict[str, float] = {}
        self.pacer = ExportPacer(self.ledger, self.t, lambda: dataclasses.replace(self.progress))
        self._processed = 0
        self.folder_names = ArchiveFolders()  # source folder path -> its path in the archive
        self.conflict = False  # the store refused our parts: run_export starts afresh once
        self.archive_done = False  # the last volume is complete and in the ledger
        self.committing = ""  # "publish" or "report": the archive is committed, nothing is cleaned up
        self.warnings: list[str] = []

    def _set_names(self, previous) -> None:
        """The archive's keys, given the final keys of the request's previous archive."""
        self.names = ArchiveNames.of(self.spec.prefix, self.spec.file_name, "zip", previous,
                                     can_split=bool(self.spec.split_bytes))
        self.base_key = self.names.write(1, split=False)  # volume 1 while it is the only one
        self.key = self.base_key  # the current volume's write key

    # ---- driver -------------------------------------------------------------------------------
    def run(self) -> ExportResult:
        started, t0 = _now(), time.monotonic()
        result = ExportResult(state=FAILED_STATE, started_at=started)
        try:
            self._finish_publication()
            self.pacer.check_cancel(force=True)
            folders = self._list_and_count()
            self._timings["listing"] = time.monotonic() - t0
            self._resume_or_create()
            self._name_folders(folders)
            t1 = time.monotonic()
            while not self.archive_done:
                if self.parts and self.parts[-1].final:
                    self._settle_volume()
                else:
                    self._transfer(folders)
            self._timings["transfer"] = time.monotonic() - t1
            t2 = time.monotonic()
            self._phase("finishing")
            self._commit_archive()
            result = self._write_report_and_summary(result, " ".join(filter(None, self.warnings)))
            self._timings["finishing"] = time.monotonic() - t2
        except UploadConflict as exc:
            log.warning("%s: %s; starting the upload afresh", self.key, exc)
            self.conflict = True
            self._shutdown_and_abort()
            result.state, result.error = FAILED_STATE, _user_message(exc)
        except Cancelled:
            self._shutdown_and_abort()
            result.state, result.error = CANCELLED, "The export was cancelled."
            self._report_final_progress(result)
        except Exception as exc:  # noqa: BLE001 - every failure ends the same, cleanly
            if exc is self.ledger.failure:
                log.warning("the ledger of %s failed (%s); stopping, upload and ledger untouched",
                            self.key, exc)
                self._stop_workers()
                raise
            if isinstance(exc, SourceError | S3Failure):
                log.warning("export of %s failed: %s", self.key, exc)
            else:
                log.exception("export of %s failed", self.key)
            result.state, result.error = FAILED_STATE, _user_message(exc)
            if self.archive_done or self.committing:
                # The archive is complete and recorded; only putting it in place or the
                # report/summary failed. Keep the ledger so that a retry finishes without
                # exporting again.
                what = "it could not be put in place" if self.committing == "publish" else \
                    "its report could not be written"
                result.error = (f"The archive {self.spec.key('')}.* is complete, but {what} ({result.error}); "
                                "retry to finish it.")
            else:
                self._shutdown_and_abort()
            self._report_final_progress(result)
        finally:
            self.stop.set()
            self._close_parts()
        result.finished_at = _now()
        self._timings["total"] = time.monotonic() - t0
        result.timings = {k: round(v, 3) for k, v in self._timings.items()}
        result.progress = self.progress
        result.resumed = self.resumed
        result.parts = sum(v.parts for v in self.volumes) + len(self.parts)
        return result

    # ---- phase 1: listing ---------------------------------------------------------------------
    def _list_and_count(self) -> list[Folder]:
        """List folders and count messages before any S3 object exists (a wrong password or an
        unreadable mailbox then leaves nothing behind)."""
        flt = FolderFilter(self.spec.include, self.spec.exclude)
        folders = unique_paths(f for f in self.source.list_folders() if flt.accepts(f.path))
        self.progress.folders_total = len(folders)
        for folder in folders:
            self.pacer.check_cancel()
            try:
                ids = self.source.list_message_ids(folder, since=self.spec.since, before=self.spec.before)
            except FolderUnavailable:
                continue  # reported when the transfer reaches it (it may have come back)
            committed = self.ledger.committed_source_ids(folder.path)
            self.progress.folder_counts[folder.path] = len(set(ids) | (committed - {""}))
            self.progress.messages_total += self.progress.folder_counts[folder.path]
            self.progress.messages_done += len(committed - {""})
        self.pacer.report(force=True)
        return folders

    def _name_folders(self, folders: list[Folder]) -> None:
        """Every folder's archive path, before the assembler makes any entry: first those the
        committed directory entries of a resumed export hold (its folders keep their
        directories, and no other folder can take one), then the rest in listing order."""
        if self.resumed:
            for r in self.ledger.iter_records():
                if r.kind == DIRECTORY and not self.folder_names.keep(r.folder, r.name.rstrip("/")):
                    log.warning("%s: the committed folder %r (%r) is named afresh", self.key, r.folder, r.name)
        for folder in folders:
            self.folder_names.path(folder.path)

    # ---- phase 2: the upload ------------------------------------------------------------------
    def _new_sink(self, key: str, upload_id: str | None) -> MultipartSink:
        return MultipartSink(self.client, self.spec.bucket, key, upload_id=upload_id,
                             threads=self.t.upload_threads, retry=self.t.retry,
                             content_md5=self.t.content_md5)

    def _volume_key(self, number: int, *, split: bool) -> str:
        return self.names.write(number, split=split)

    def _new_volume_budget(self) -> VolumeBudget | None:
        return VolumeBudget(self.spec.split_bytes) if self.spec.split_bytes else None

    def _finish_publication(self) -> None:
        """Before anything else: the previous archive's names, and the publication of a commit
        a killed or failed run left, finished (a failure leaves everything as it is)."""
        self._set_names(self.ledger.archive_keys())
        self.committing = "publish"
        self.warnings.append(finish_publication(self.ledger, self.client, self.spec.bucket, retry=self.t.retry))
        self.committing = ""

    def _resume_or_create(self) -> None:
        state = self.ledger.load_upload()
        # by final key: a staged or in-place upload of the same volume is this export's own
        if state is not None and (state.format != "zip" or final_key(state.key) != self.names.final(
                state.volume, split=state.volume > 1)):
            log.warning("ledger holds an upload of %s; starting %s afresh", state.key, self.base_key)
            self._discard(state)
            state = None
        if state is not None and self._resume(state):
            self.resumed = True
            return
        if state is not None:
            self._discard(state)
            self._reset_to_first_volume()
        abort_incomplete_uploads(self.client, self.spec.bucket, self.base_key, retry=self.t.retry)
        self.sink = self._new_sink(self.base_key, None)
        upload_id = self.sink.create()
        self.ledger.begin_upload(self.base_key, upload_id, "zip")

    def _reset_to_first_volume(self) -> None:
        self.volume, self.volumes, self.key = 1, [], self.base_key
        self.parts, self.offset, self.volume_complete = [], 0, False
        self.volume_budget = self._new_volume_budget()
        self.progress.archive_bytes = 0

    def _resume(self, state: UploadState) -> bool:
        """Pick up a killed run's upload; False when it cannot be trusted (start afresh)."""
        self.volume, self.volumes, self.key = state.volume, list(state.volumes), state.key
        self.sink = self._new_sink(self.key, state.upload_id)
        self.parts = list(state.parts)
        self.offset = sum(p.size for p in self.parts)
        self.volume_complete = state.archive_complete
        self.progress.archive_bytes = sum(v.size for v in self.volumes) + self.offset
        if state.archive_complete or (self.parts and self.parts[-1].final):
            return True  # nothing left to upload in this volume; _settle_volume finishes it
        try:
            on_server = self.sink.parts_on_server()
        except UploadGone:
            log.warning("upload %s of %s is gone; starting afresh", state.upload_id, self.key)
            self.sink.close()
            return False
        for part in self.parts:
            found = on_server.get(part.number)
            if found is None or found.etag.strip('"') != part.etag.strip('"'):
                log.warning("committed part %d of %s is missing on S3; starting afresh", part.number, self.key)
                self.sink.abort()
                return False
        abort_incomplete_uploads(self.client, self.spec.bucket, self.key, keep=state.upload_id,
                                 retry=self.t.retry)
        self._rebuild_volume_budget()
        log.info("resuming %s: %d parts, %d bytes committed", self.key, len(self.parts), self.offset)
        return True

    def _rebuild_volume_budget(self) -> None:
        """The current volume's directory and labels so far, from its committed records."""
        if self.volume_budget is None:
            return
        for r in self.ledger.iter_records(volume=self.volume):
            if r.name:
                self.volume_budget.add(_entry_from_record(r), self._label_row(r.name, r.folder, r.source_id, r.labels),
                                       message=r.kind == MESSAGE)

    def _label_row(self, name: str, folder: str, source_id: str, labels: Sequence[str]) -> int:
        if self.volume_budget is None or not labels:
            return 0
        return labels_row_bound(name, folder, source_id, labels)

    def _transfer(self, folders: list[Folder]) -> None:
        self._phase("transferring")
        self.compress_pool = ThreadPoolExecutor(self.t.compress_threads, thread_name_prefix="deflate")
        first_part = len(self.parts) + 1
        self.threads = [
            threading.Thread(target=self._fetch_loop, args=(folders,), name="fetch", daemon=True),
            threading.Thread(target=self._assemble_loop, args=(first_part,), name="assemble", daemon=True),
        ]
        for thread in self.threads:
            thread.start()
        waiting: dict[int, tuple[PartBuffer, UploadedPart]] = {}
        next_commit, final_part, full = first_part, None, None
        while True:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                event = None
            if event is not None:
                kind = event[0]
                if kind == "call":
                    event[1].run()
                elif kind == "uploaded":
                    part, future = event[1], event[2]
                    if future.exception() is not None:
                        raise future.exception()
                    part.close()  # its bytes are on S3; only its records wait for the commit
                    self.part_slots.release()
                    waiting[part.number] = (part, future.result())
                elif kind == "final":
                    final_part = event[1]
                elif kind == "volume_full":
                    full = event[1]
                elif kind == "error":
                    raise event[1]
            while next_commit in waiting:
                part, uploaded = waiting.pop(next_commit)
                self._commit(part, uploaded, final=False)
                self.uncommitted.release()
                next_commit += 1
            if full is not None and next_commit == full.part.number:
                self._close_volume(full.part)
                full.done.set()  # the assembler goes on with part 1 of the next volume
                full, next_commit = None, 1
            self.pacer.report()
            self.pacer.check_cancel()
            if final_part is not None and next_commit == final_part.number:
                break
        for thread in self.threads:
            thread.join()
        self.compress_pool.shutdown(wait=True)
        self.pacer.check_cancel(force=True)
        self._phase("finishing")
        self._finish_final_part(final_part)

    def _close_volume(self, part: PartBuffer) -> None:
        """The assembler found the current volume full and waits: write its last part, complete
        it, start the next one (every earlier part of it is committed)."""
        self.pacer.check_cancel(force=True)
        self._finish_final_part(part, next_volume=True)
        self._settle_volume()

    def _commit(self, part: PartBuffer, uploaded: UploadedPart, *, final: bool,
                next_volume: bool = False) -> None:
        record = PartRecord(part.number, uploaded.etag, part.size, final, next_volume)
        self.ledger.commit_part(record, part.records)
        self.parts.append(record)
        self.progress.archive_bytes += part.size
        for r in part.records:
            if r.kind == MESSAGE:
                self.progress.messages_done += 1
                self.progress.messages_failed += r.status == FAILED
                self.progress.messages_skipped += r.status == SKIPPED
        part.close()
        self.open_parts.pop(part.number, None)

    # ---- worker threads -----------------------------------------------------------------------
    def _in_main(self, fn: Callable, *args):
        call = _MainCall(fn, args)
        self.events.put(("call", call))
        return call.wait(self.stop)

    def _fetch_loop(self, folders: list[Folder]) -> None:
        try:
            for folder in folders:
                if self.stop.is_set():
                    return
                self._fetch_folder(folder)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the coordinator
            self.events.put(("error", exc))
        finally:
            self.items.put(_END)

    def _fetch_folder(self, folder: Folder) -> None:
        committed = self._in_main(self.ledger.committed_source_ids, folder.path)
        last_sequence = self._in_main(self.ledger.last_sequence, folder.path)
        self.items.put(_FolderStart(folder, last_sequence, "" not in committed))
        committed.discard("")
        stats = self.stats.setdefault(folder.path, FolderStats(folder.path))
        ids: list[str] = []
        if folder.selectable:
            try:
                ids = self.source.list_message_ids(folder, since=self.spec.since, before=self.spec.before)
            except FolderUnavailable as exc:
                self.items.put(_FolderFailed(folder, str(exc)))
                self.items.put(_FolderEnd(folder))
                return
        stats.source_count = len(set(ids) | committed)
        todo = [i for i in ids if i not in committed]
        del committed
        expected = set(todo)
        reason = "The source did not return this message."
        try:
            for item in self.source.fetch_messages(folder, todo):
                if self.stop.is_set():
                    raise _Stopped()
                if item.source_id not in expected:
                    continue  # a duplicate or an id we did not ask for: never store twice
                expected.discard(item.source_id)
                if isinstance(item, Message):
                    size = len(item.raw)
                    self.budget.acquire(size)
                    future = self.compress_pool.submit(prepare_message, item, self.t.deflate_level)
                    self.progress.bytes_done += size
                    self.items.put(_Queued(future, size))
                else:
                    self.items.put(item)
                del item
        except FolderUnavailable as exc:  # the folder went away mid-way: the rest is reported
            reason = f"The folder became unreadable during the export: {exc}"
        for missing in [i for i in todo if i in expected]:
            self.items.put(MessageFailure(folder.path, missing, reason))
        self.items.put(_FolderEnd(folder))

    def _assemble_loop(self, first_part: int) -> None:
        try:
            part = self._new_part(first_part)
            sequence = 0
            while True:
                item = self.items.get()
                if item is _END:
                    break
                if isinstance(item, _FolderStart):
                    sequence = item.last_sequence
                    self.progress.current_folder = item.folder.path
                    if item.needs_directory:
                        part = self._add_directory(part, item.folder)
                elif isinstance(item, _Queued):
                    prepared = item.future.result()
                    sequence += 1
                    part = self._add_message(part, prepared, sequence)
                    self.budget.release(item.size)
                    self._processed += 1
                elif isinstance(item, MessageFailure):
                    status = SKIPPED if item.status == SKIPPED else FAILED
                    part.records.append(EntryRecord(MESSAGE, item.folder, item.source_id, status,
                                                    error=item.error, volume=self.volume))
                    self._processed += 1
                elif isinstance(item, _FolderFailed):
                    self.folder_errors.append(FolderError(item.folder.path, item.error))
                    self.stats.setdefault(item.folder.path, FolderStats(item.folder.path)).error = item.error
                elif isinstance(item, _FolderEnd):
                    self.progress.folders_done += 1
                if part.size >= self.t.part_target(part.number) and part.number < MAX_PARTS:
                    self._ship(part)
                    part = self._new_part(part.number + 1)
            if self.stop.is_set():
                return
            self.events.put(("final", part))
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the coordinator
            self.events.put(("error", exc))

    def _new_part(self, number: int) -> PartBuffer:
        part = PartBuffer(number, self.t.spill_bytes, self.t.tmp_dir)
        self.open_parts[number] = part
        return part

    def _add_directory(self, part: PartBuffer, folder: Folder) -> PartBuffer:
        name = self.folder_names.path(folder.path) + "/"
        entry = zipwriter.directory_entry(name, self.offset)
        if self.volume_budget is not None and self.volume_budget.must_split_before(entry):
            part = self._wait_for_next_volume(part)
            entry = zipwriter.directory_entry(name, self.offset)
        header = zipwriter.local_header(entry)
        part.write(header)
        self.offset += len(header)
        part.records.append(_record_from_entry(entry, DIRECTORY, folder.path, self.volume))
        if self.volume_budget is not None:
            self.volume_budget.add(entry, message=False)
        return part

    def _message_entry(self, p: Prepared, sequence: int) -> zipwriter.ZipEntry:
        dos_time, dos_date = zipwriter.dos_datetime(p.when)
        return zipwriter.ZipEntry(message_entry_name(self.folder_names.path(p.folder), sequence, p.info.subject),
                                  self.offset, p.crc32, len(p.payload), p.size, p.method,
                                  dos_time, dos_date)

    def _add_message(self, part: PartBuffer, p: Prepared, sequence: int) -> PartBuffer:
        entry = self._message_entry(p, sequence)
        label_row = self._label_row(entry.name, p.folder, p.source_id, p.labels)
        if self.volume_budget is not None and self.volume_budget.must_split_before(entry, label_row):
            part = self._wait_for_next_volume(part)
            entry = self._message_entry(p, sequence)  # at the start of the new volume
        header = zipwriter.local_header(entry)
        part.write(header)
        part.write(p.payload)
        self.offset += len(header) + len(p.payload)
        record = _record_from_entry(entry, MESSAGE, p.folder, self.volume)
        record.source_id, record.sequence, record.sha256, record.labels = (
            p.source_id, sequence, p.sha256, p.labels)
        record.message_id, record.date, record.from_, record.to, record.subject = (
            p.info.message_id, p.info.date, p.info.from_, p.info.to, p.info.subject)
        part.records.append(record)
        if self.volume_budget is not None:
            self.volume_budget.add(entry, label_row, message=True)
        return part

    def _wait_for_next_volume(self, part: PartBuffer) -> PartBuffer:
        """(assembler) Hand the full volume's last part to the coordinator; once it has closed
        that volume and started the next (offset 0, no parts), go on with its first part."""
        full = _VolumeFull(part)
        self.events.put(("volume_full", full))
        while not full.done.wait(0.2):
            if self.stop.is_set():
                raise _Stopped()
        return self._new_part(1)

    def _ship(self, part: PartBuffer) -> None:
        for slots in (self.uncommitted, self.part_slots):
            while not slots.acquire(timeout=0.2):
                if self.stop.is_set():
                    raise _Stopped()
        future = self.sink.submit(part.number, part, part.size)
        future.add_done_callback(lambda f, p=part: self.events.put(("uploaded", p, f)))

    # ---- the last part, completion ------------------------------------------------------------
    def _finish_final_part(self, part: PartBuffer, *, next_volume: bool = False) -> None:
        """Append labels.csv (if any message of this volume has labels) and the volume's central
        directory, upload, commit. Runs after every earlier part of the volume is committed,
        so the ledger has all its records."""

        def all_records() -> Iterator[EntryRecord]:
            return chain(self.ledger.iter_records(volume=self.volume), list(part.records))

        with tempfile.TemporaryFile(dir=self.t.tmp_dir) as labels:
            if labels_manifest(all_records(), labels):
                self._add_file_from(part, self._labels_name(split=next_volume or bool(self.volumes)), labels)
        cd_offset = self.offset
        written = zipwriter.central_directory(
            (_entry_from_record(r) for r in all_records() if r.name), cd_offset, _Counter(part))
        self.offset += written
        uploaded = self.sink.upload_part(part.number, part, part.size)
        self._commit(part, uploaded, final=True, next_volume=next_volume)

    def _labels_name(self, *, split: bool) -> str:
        """``labels.csv``; in volume N of a split archive ``labels.partNNN.csv``, so that the
        volumes extracted into one directory keep every volume's labels."""
        return f"labels.part{self.volume:03d}.csv" if split else "labels.csv"

    def _add_file_from(self, part: PartBuffer, name: str, source) -> None:
        """A manifest entry streamed from a temp file (deflated in chunks)."""
        source.seek(0)
        crc, size = 0, 0
        deflater = zipwriter.deflater(self.t.deflate_level)
        with tempfile.TemporaryFile(dir=self.t.tmp_dir) as packed:
            while chunk := source.read(1024 * 1024):
                crc = zipwriter.crc32_update(chunk, crc)
                size += len(chunk)
                packed.write(deflater.compress(chunk))
            packed.write(deflater.flush())
            compressed = packed.tell()
            dos_time, dos_date = zipwriter.dos_datetime(None)
            entry = zipwriter.ZipEntry(name, self.offset, crc, compressed, size, zipwriter.DEFLATED,
                                       dos_time, dos_date)
            header = zipwriter.local_header(entry)
            part.write(header)
            packed.seek(0)
            while chunk := packed.read(1024 * 1024):
                part.write(chunk)
        self.offset += len(header) + compressed
        part.records.append(_record_from_entry(entry, MANIFEST, "", self.volume))

    def _settle_volume(self) -> None:
        """The current volume's last part is committed: complete it; if another volume follows,
        start that one. Each step is repeatable, so a rerun after a kill anywhere finishes it."""
        self._complete_archive()
        if self.parts[-1].next_volume:
            self._start_next_volume()
        else:
            self.archive_done = True

    def _complete_archive(self) -> None:
        if not self.volume_complete:
            parts = [UploadedPart(p.number, p.etag, p.size) for p in self.parts]
            try:
                etag = self.sink.complete(parts)
            except UploadGone:
                etag = completed_object_etag(self.client, self.spec.bucket, self.key, parts)
                if not etag:
                    raise S3Failure(f"The upload of {self.key} disappeared before it was completed "
                                    "(a lifecycle rule?); run the export again.") from None
            self.ledger.mark_archive_complete(sum(p.size for p in self.parts), etag)
            self.volume_complete = True
        self.sink.close()

    def _start_next_volume(self) -> None:
        """Record the completed volume under its final name and the next volume's new upload.

        At the first split, ``FILE.zip`` becomes ``FILE.part001.zip`` (as PST names its parts).
        An upload created by a run killed before ``begin_volume`` recorded it is aborted first.
        """
        size = sum(p.size for p in self.parts)
        key = self.key
        if self.volume == 1 and final_key(key) == self.names.final(1, split=False):
            key = self._volume_key(1, split=True)
            move_object(self.client, self.spec.bucket, self.key, key, size, retry=self.t.retry)
        done = Volume(self.volume, key, size, len(self.parts))
        next_key = self._volume_key(self.volume + 1, split=True)
        abort_incomplete_uploads(self.client, self.spec.bucket, next_key, retry=self.t.retry)
        self.sink = self._new_sink(next_key, None)
        upload_id = self.sink.create()
        self.ledger.begin_volume(done, next_key, upload_id)
        log.info("%s is complete (%d bytes); continuing in %s", key, size, next_key)
        self.volumes.append(done)
        self.volume, self.key = done.number + 1, next_key
        self.parts, self.offset, self.volume_complete = [], 0, False
        self.volume_budget = self._new_volume_budget()
        self._phase("transferring")

    def _commit_archive(self) -> None:
        """Every volume is complete: put them in place, delete the previous archive's files
        this one does not reuse (``archivekeys.commit_archive``)."""
        written = [(v.key, v.size) for v in self.volumes] + [(self.key, sum(p.size for p in self.parts))]
        self.committing = "publish"
        self.warnings.append(commit_archive(self.ledger, self.client, self.spec.bucket, written,
                                            retry=self.t.retry)[1])
        self.committing = "report"

    # ---- report -------------------------------------------------------------------------------
    def _write_report_and_summary(self, result: ExportResult, warning: str = "") -> ExportResult:
        stats = {path: FolderStats(path, source_count=s.source_count, error=s.error)
                 for path, s in self.stats.items()}
        seen_in_run = set(stats)

        def counted(records: Iterable[EntryRecord]) -> Iterator[EntryRecord]:
            for r in records:
                if r.kind in (MESSAGE, DIRECTORY):
                    stats.setdefault(r.folder, FolderStats(r.folder)).add(r)
                yield r

        report_key = self.spec.key(".report.csv")
        archive_keys = {v.number: final_key(v.key) for v in self.volumes} | {self.volume: final_key(self.key)}
        with tempfile.TemporaryFile(dir=self.t.tmp_dir) as out:
            write_report(counted(self.ledger.iter_records()), self.folder_errors, out, archive_keys)
            put_file(self.client, self.spec.bucket, report_key, out, content_type="text/csv; charset=utf-8",
                     retry=self.t.retry)
        for path, s in stats.items():
            if path not in seen_in_run:  # resumed after the transfer finished: counts are final
                s.source_count = s.exported + s.failed + s.skipped
        folders = sorted(stats.values(), key=lambda s: s.folder.split("/"))
        result.folders, result.totals = folders, Totals.of(folders)
        result.archives = [*(ArchiveFile(final_key(v.key), v.size) for v in self.volumes),
                           ArchiveFile(final_key(self.key), sum(p.size for p in self.parts))]
        result.report_key, result.summary_key = report_key, self.spec.key(".summary.json")
        clean = (result.totals.failed == 0 and result.totals.skipped == 0
                 and not self.folder_errors and all(f.reconciles for f in folders))
        result.state = COMPLETED if clean else COMPLETED_WITH_ERRORS
        if not all(f.reconciles for f in folders):
            result.error = "Some folders' counts do not reconcile; see summary.json."
        result.error = " ".join(filter(None, (result.error, warning)))
        self._put_summary(result)
        self.progress.phase = "done"
        self.pacer.report(force=True)
        return result

    def _put_summary(self, result: ExportResult) -> None:
        timings = {k: round(v, 3) for k, v in self._timings.items()}
        summary = Summary(file=clean_file_name(self.spec.file_name, "zip"), format="zip",
                          state=result.state, error=result.error, folders=result.folders,
                          totals=result.totals,
                          timings={"started_at": result.started_at, "finished_at": _now(),
                                   "resumed": self.resumed, **timings},
                          archives=result.archives, report_key=result.report_key,
                          source=dict(self.spec.source_description))
        result.summary = summary.to_dict()
        body = summary.to_json()
        with tempfile.TemporaryFile(dir=self.t.tmp_dir) as out:
            out.write(body)
            put_file(self.client, self.spec.bucket, self.spec.key(".summary.json"), out,
                     content_type="application/json", retry=self.t.retry)

    def _report_final_progress(self, result: ExportResult) -> None:
        """A failed or cancelled export writes no report or summary object (there is no archive
        they could describe); its result (state, error) goes to the portal."""
        self.progress.phase = result.state
        self.pacer.report_final()

    # ---- control ------------------------------------------------------------------------------
    def _phase(self, phase: str) -> None:
        self.progress.phase = phase
        self.pacer.report(force=True)

    def _stop_workers(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        if self.compress_pool is not None:
            self.compress_pool.shutdown(wait=True, cancel_futures=True)
        if self.sink is not None:
            self.sink.stop_uploads()

    def _shutdown_and_abort(self) -> None:
        """Stop the workers, forget the export in the ledger, then remove what it wrote: abort
        the current upload, delete every completed volume.

        The ledger goes first: if it refuses (another worker owns the export now, or the
        database is down) the bucket is left alone rather than pulled from under its owner.
        """
        self._stop_workers()
        try:
            state = self.ledger.load_upload()
            self.ledger.reset()
        except Exception:  # noqa: BLE001 - report the original failure, log this one
            log.warning("could not reset the ledger of %s; its upload is left alone", self.key,
                        exc_info=True)
            return
        if state is not None:
            self._remove_objects(state)
        sink = self.sink
        if sink is not None and sink.upload_id and (state is None or sink.upload_id != state.upload_id):
            try:  # created by this run but not yet recorded
                sink.abort()
            except Exception:  # noqa: BLE001
                log.warning("could not abort the upload of %s", sink.key, exc_info=True)

    def _discard(self, state: UploadState) -> None:
        """Start afresh from ``state``: the ledger first (see above), then the bucket."""
        self.ledger.reset()
        self._remove_objects(state)

    def _remove_objects(self, state: UploadState) -> None:
        """Abort ``state``'s upload and delete the volumes it completed (``leftover_keys``: a
        complete archive, and the previous archive, stay)."""
        keys = leftover_keys(state, self.names)
        if not state.archive_complete:
            sink = self.sink if self.sink is not None and self.sink.upload_id == state.upload_id else \
                MultipartSink(self.client, self.spec.bucket, state.key, upload_id=state.upload_id,
                              retry=self.t.retry)
            try:
                sink.abort()
            except Exception:  # noqa: BLE001 - the bucket's lifecycle rule is the backstop
                log.warning("could not abort the upload of %s", state.key, exc_info=True)
        for key in keys:
            try:
                with_retries(f"DeleteObject {key}", lambda k=key: self.client.delete_object(
                    Bucket=self.spec.bucket, Key=k), self.t.retry)
            except Exception:  # noqa: BLE001
                log.warning("could not delete %s", key, exc_info=True)

    def _close_parts(self) -> None:
        for part in list(self.open_parts.values()):
            part.close()
        self.open_parts.clear()


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


class _MainCall:
    """A function the coordinator thread runs on a worker's behalf (Ledger calls stay on one thread)."""

    def __init__(self, fn: Callable, args: tuple) -> None:
        self.fn, self.args = fn, args
        self.done = threading.Event()
        self.result = self.error = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the worker
            self.error = exc
        self.done.set()

    def wait(self, stop: threading.Event):
        while not self.done.wait(0.2):
            if stop.is_set():
                raise _Stopped()
        if self.error is not None:
            raise self.error
        return self.result


class _VolumeFull:
    """The assembler's request to close the current volume with ``part`` as its last part."""

    def __init__(self, part: PartBuffer) -> None:
        self.part = part
        self.done = threading.Event()


class _Counter:
    """File-like adapter: central_directory() writes into a part buffer."""

    def __init__(self, part: PartBuffer) -> None:
        self.part = part

    def write(self, data: bytes) -> int:
        self.part.write(data)
        return len(data)


def _record_from_entry(entry: zipwriter.ZipEntry, kind: str, folder: str, volume: int) -> EntryRecord:
    return EntryRecord(kind, folder, "", EXPORTED, entry.name, entry.offset, entry.crc32,
                       entry.compressed_size, entry.size, entry.method, entry.dos_time,
                       entry.dos_date, entry.flags, volume)


def _entry_from_record(r: EntryRecord) -> zipwriter.ZipEntry:
    return zipwriter.ZipEntry(r.name, r.offset, r.crc32, r.compressed_size, r.size, r.method,
                              r.dos_time, r.dos_date, r.flags, is_dir=r.kind == DIRECTORY)


def _user_message(exc: BaseException) -> str:
    if isinstance(exc, AuthenticationFailed | ConnectionFailed | SourceError | S3Failure):
        return str(exc)
    return f"Internal error: {type(exc).__name__}: {exc}"


def run_export(source: Source, s3_client, spec: ExportSpec, ledger: Ledger,
               tuning: Tuning | None = None) -> ExportResult:
    """Run (or resume) one export to its end; never raises for export failures (see result.state)."""
    tune_malloc()
    if spec.format == "pst":
        from connectors.pipeline.pst_backup import PstExport

        return PstExport(source, s3_client, spec, ledger, tuning or Tuning()).run()
    if spec.format != "zip":
        raise ValueError(f"unknown archive format {spec.format!r}")
    export = ZipExport(source, s3_client, spec, ledger, tuning)
    result = export.run()
    if export.conflict:  # upload aborted and ledger reset: one clean second attempt
        result = ZipExport(source, s3_client, spec, ledger, tuning).run()
    return result

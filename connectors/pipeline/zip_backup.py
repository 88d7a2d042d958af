"""The ZIP backup: the format's part of the skeleton (``connectors.pipeline.skeleton``).

ZIP pipeline (threads; memory bounded by bytes, never by the mailbox size):

    fetcher ──messages──► compress pool (isal deflate, sha256, headers) ──► assembler
    (Source, 1 thread)    (``compress_threads``)                            (ZIP entries → parts)
        ▲ bounded by ``queue_bytes``                                            │ parts ≥ 5 MiB
        │                                                                       ▼
    coordinator (the calling thread) ◄──uploaded── upload pool (``upload_threads`` UploadPart)
      commits parts in order to the Ledger, reports progress, polls cancel, builds the last part
      (rest of the entries + labels.csv + index.csv + central directory), completes the upload.

The bytes come from the format's pure pieces (``connectors.archives.zip``); the threads, the
parts (``zip_parts``), S3 and the ledger are this module's.

Invariants:
- Parts are cut at entry boundaries: every part holds whole ZIP entries. Every part but the
  last is at least ``part_bytes`` (≥ 5 MiB on S3) and the target doubles every 1,000 parts, so
  10,000 parts reach ~8 TB; a part bigger than ``spill_bytes`` lives in a temp file.
- After part N is uploaded, ONE ``ledger.commit_part`` stores it with the records of every
  entry whose bytes it holds (and of failures noted meanwhile); N is committed only after N-1.
- A rerun with the same ledger after a kill (SIGKILL anywhere) reuses the upload id and the
  committed parts, rebuilds the ZIP offset and central directory from committed records,
  skips committed source ids and produces everything else again (an uploaded but uncommitted
  part is simply overwritten under the same number). See ``ZipBackup._resume``.
- Worker threads never call the Ledger: what they need from it runs on the coordinator
  (``_in_main``).
- Every volume ends with its index (``index.csv``; ``index.partNNN.csv`` in volume NNN of a
  split archive) as the last entry before the central directory: one row per message of the
  volume with its folder, source id, Message-ID, internal date, flags, labels, size and SHA-256
  (``connectors.archives.metadata``). Like the directory it is built from the volume's records
  alone, so a resumed run writes it exactly as an uninterrupted one. Each message entry's DOS
  time and UT extra field are its internal date (the UT mtime is derived from the record's
  ``internal_date``, so the rebuilt central directory matches the local headers).

Split into volumes (``spec.split_bytes``; see ``connectors.archives.zip.volumes`` and ``ZipBackup._close_volume``):
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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain

from connectors import mimeinfo
from connectors.archives import ZIP, metadata
from connectors.archives.zip import writer as zipwriter
from connectors.archives.zip.volumes import VolumeBudget, labels_row_bound
from connectors.model import Folder, Message, MessageFailure
from connectors.naming import index_name, message_entry_name
from connectors.pipeline.archivekeys import final_key
from connectors.pipeline.ledger import (
    DIRECTORY,
    EXPORTED,
    FAILED,
    MANIFEST,
    MESSAGE,
    SKIPPED,
    EntryRecord,
    PartRecord,
    UploadState,
    Volume,
)
from connectors.pipeline.report import index_manifest, labels_manifest
from connectors.pipeline.skeleton import Backup
from connectors.pipeline.zip_parts import ByteBudget, PartBuffer, Stopped
from connectors.storage.s3.move import move_object
from connectors.storage.s3.sink import (
    MAX_PARTS,
    MultipartSink,
    S3Failure,
    UploadedPart,
    UploadGone,
    abort_incomplete_uploads,
    completed_object_etag,
)

log = logging.getLogger(__name__)

MAX_UNCOMMITTED_PARTS = 64  # a part stuck in retries holds back commits, not memory


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
    flags: tuple[str, ...] = ()

    @property
    def internal_date(self) -> str:
        return metadata.iso_date(self.when)


def prepare_message(msg: Message, level: int) -> Prepared:
    raw = msg.raw
    digest = hashlib.sha256(raw).hexdigest()
    method, crc, payload = zipwriter.compress_entry(raw, level)
    return Prepared(msg.folder, msg.source_id, method, crc, payload, len(raw), digest,
                    mimeinfo.extract(raw), msg.internal_date, tuple(msg.labels), tuple(msg.flags))


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


_END = object()


class ZipBackup(Backup):
    """One run of a ZIP backup (see the module docstring). Use ``run()`` once."""

    format = ZIP
    resumes = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.key = self.base_key  # the current volume's write key
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
        self.parts: list[PartRecord] = []
        self.compress_pool: ThreadPoolExecutor | None = None
        self.threads: list[threading.Thread] = []
        self.open_parts: dict[int, PartBuffer] = {}
        self.offset = 0

    @property
    def base_key(self) -> str:
        """Volume 1's write key while it is the only volume."""
        return self.names.write(1, split=False)

    # ---- the skeleton's hooks -----------------------------------------------------------------
    def write_archive(self, folders: list[Folder]) -> list[tuple[str, int]]:
        self.key = self.base_key
        self._resume_or_create()
        self._name_folders(folders)
        t0 = time.monotonic()
        while not self.archive_done:
            if self.parts and self.parts[-1].final:
                self._settle_volume()
            else:
                self._transfer(folders)
        self.timings["transfer"] = time.monotonic() - t0
        return [(v.key, v.size) for v in self.volumes] + [(self.key, sum(p.size for p in self.parts))]

    def stop_workers(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        if self.compress_pool is not None:
            self.compress_pool.shutdown(wait=True, cancel_futures=True)
        if self.sink is not None:
            self.sink.stop_uploads()

    def close(self) -> None:
        self.stop.set()
        self._close_parts()

    def parts_uploaded(self) -> int:
        return sum(v.parts for v in self.volumes) + len(self.parts)

    # ---- before the transfer ------------------------------------------------------------------
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

    def _new_sink(self, key: str, upload_id: str | None) -> MultipartSink:
        return MultipartSink(self.client, self.spec.bucket, key, upload_id=upload_id,
                             threads=self.t.upload_threads, retry=self.t.retry,
                             content_md5=self.t.content_md5)

    def _volume_key(self, number: int, *, split: bool) -> str:
        return self.names.write(number, split=split)

    def _new_volume_budget(self) -> VolumeBudget | None:
        return VolumeBudget(self.spec.split_bytes) if self.spec.split_bytes else None

    def _resume_or_create(self) -> None:
        state = self.ledger.load_upload()
        # by final key: a staged or in-place upload of the same volume is this export's own
        if state is not None and (state.format != "zip" or final_key(state.key) != self.names.final(
                state.volume, split=state.volume > 1)):
            log.warning("ledger holds an upload of %s; starting %s afresh", state.key, self.base_key)
            self.discard(state)
            state = None
        if state is not None and self._resume(state):
            self.resumed = True
            return
        if state is not None:
            self.discard(state)
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
                message = r.kind == MESSAGE
                self.volume_budget.add(_entry_from_record(r), self._label_row(r.name, r.folder, r.source_id, r.labels),
                                       self._index_row(r.name, r.folder, r.source_id, r.message_id,
                                                       r.imap_flags, r.labels) if message else 0,
                                       message=message)

    def _label_row(self, name: str, folder: str, source_id: str, labels: Sequence[str]) -> int:
        if self.volume_budget is None or not labels:
            return 0
        return labels_row_bound(name, folder, source_id, labels)

    def _index_row(self, name: str, folder: str, source_id: str, message_id: str,
                   flags: Sequence[str], labels: Sequence[str]) -> int:
        if self.volume_budget is None:
            return 0
        return metadata.index_row_bound(name, folder, source_id, message_id, flags, labels)

    # ---- the transfer -------------------------------------------------------------------------
    def _transfer(self, folders: list[Folder]) -> None:
        self.phase("transferring")
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
        self.phase("finishing")
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
        self.commit_records(part.records, part=record)
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
        except Stopped:
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
        todo = self.folder_todo(folder, committed)
        del committed
        if todo is not None:  # else the folder could not be read (reported)
            for item in self.fetched(folder, todo):
                if self.stop.is_set():
                    raise Stopped()
                if isinstance(item, Message):
                    size = len(item.raw)
                    self.budget.acquire(size)
                    future = self.compress_pool.submit(prepare_message, item, self.t.deflate_level)
                    self.progress.bytes_done += size
                    self.items.put(_Queued(future, size))
                else:
                    self.items.put(item)
                del item
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
                elif isinstance(item, MessageFailure):
                    status = SKIPPED if item.status == SKIPPED else FAILED
                    part.records.append(EntryRecord(MESSAGE, item.folder, item.source_id, status,
                                                    error=item.error, volume=self.volume))
                elif isinstance(item, _FolderEnd):
                    self.progress.folders_done += 1
                if part.size >= self.t.part_target(part.number) and part.number < MAX_PARTS:
                    self._ship(part)
                    part = self._new_part(part.number + 1)
            if self.stop.is_set():
                return
            self.events.put(("final", part))
        except Stopped:
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
        internal_date = p.internal_date
        dos_time, dos_date = zipwriter.dos_datetime(metadata.parse_iso_date(internal_date))
        return zipwriter.ZipEntry(message_entry_name(self.folder_names.path(p.folder), sequence, p.info.subject),
                                  self.offset, p.crc32, len(p.payload), p.size, p.method,
                                  dos_time, dos_date, mtime=metadata.unix_time(internal_date))

    def _add_message(self, part: PartBuffer, p: Prepared, sequence: int) -> PartBuffer:
        entry = self._message_entry(p, sequence)
        label_row = self._label_row(entry.name, p.folder, p.source_id, p.labels)
        index_row = self._index_row(entry.name, p.folder, p.source_id, p.info.message_id, p.flags, p.labels)
        if self.volume_budget is not None and self.volume_budget.must_split_before(entry, label_row, index_row):
            part = self._wait_for_next_volume(part)
            entry = self._message_entry(p, sequence)  # at the start of the new volume
        header = zipwriter.local_header(entry)
        part.write(header)
        part.write(p.payload)
        self.offset += len(header) + len(p.payload)
        record = _record_from_entry(entry, MESSAGE, p.folder, self.volume)
        record.source_id, record.sequence, record.sha256, record.labels = (
            p.source_id, sequence, p.sha256, p.labels)
        record.imap_flags, record.internal_date = p.flags, p.internal_date
        record.message_id, record.date, record.from_, record.to, record.subject = (
            p.info.message_id, p.info.date, p.info.from_, p.info.to, p.info.subject)
        part.records.append(record)
        if self.volume_budget is not None:
            self.volume_budget.add(entry, label_row, index_row, message=True)
        return part

    def _wait_for_next_volume(self, part: PartBuffer) -> PartBuffer:
        """(assembler) Hand the full volume's last part to the coordinator; once it has closed
        that volume and started the next (offset 0, no parts), go on with its first part."""
        full = _VolumeFull(part)
        self.events.put(("volume_full", full))
        while not full.done.wait(0.2):
            if self.stop.is_set():
                raise Stopped()
        return self._new_part(1)

    def _ship(self, part: PartBuffer) -> None:
        for slots in (self.uncommitted, self.part_slots):
            while not slots.acquire(timeout=0.2):
                if self.stop.is_set():
                    raise Stopped()
        future = self.sink.submit(part.number, part, part.size)
        future.add_done_callback(lambda f, p=part: self.events.put(("uploaded", p, f)))

    # ---- the last part, completion ------------------------------------------------------------
    def _finish_final_part(self, part: PartBuffer, *, next_volume: bool = False) -> None:
        """Append labels.csv (if any message of this volume has labels), the volume's index and
        its central directory, upload, commit. Runs after every earlier part of the volume is
        committed, so the ledger has all its records."""

        def all_records() -> Iterator[EntryRecord]:
            return chain(self.ledger.iter_records(volume=self.volume), list(part.records))

        split = next_volume or bool(self.volumes)
        with tempfile.TemporaryFile(dir=self.t.tmp_dir) as labels:
            if labels_manifest(all_records(), labels):
                self._add_file_from(part, self._labels_name(split=split), labels)
        with tempfile.TemporaryFile(dir=self.t.tmp_dir) as index:
            index_manifest(all_records(), index)
            self._add_file_from(part, index_name(self.volume, split=split), index)
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
        self.phase("transferring")

    def _close_parts(self) -> None:
        for part in list(self.open_parts.values()):
            part.close()
        self.open_parts.clear()


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
                raise Stopped()
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
    mtime = metadata.unix_time(r.internal_date) if r.kind == MESSAGE else None
    return zipwriter.ZipEntry(r.name, r.offset, r.crc32, r.compressed_size, r.size, r.method,
                              r.dos_time, r.dos_date, r.flags, is_dir=r.kind == DIRECTORY, mtime=mtime)


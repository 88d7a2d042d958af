"""The PST backup: the format's part of the skeleton (``connectors.pipeline.skeleton``).

Source → ``connectors.archives.pst.SplittingPstWriter`` (local temp files) → S3. A PST's header
and B-trees are written last, so the file cannot be streamed part by part like a ZIP: it is
built in a temp directory (needs free disk about the mailbox's size) and each file is sent
while it grows (``connectors.storage.s3.growing``: settled ranges go out as the writer moves
on, the header's part last), as its own multipart upload to ``PREFIX/FILE.pst``
(``FILE.partNNN.pst`` when split).

Two stages feed the converting thread: a thread fetches from the source while a second process
(``connectors.archives.pst.parseworker``) parses the MIME and hashes the next messages, each
stage holding half of ``queue_bytes``.

Records: each message's record goes to a local file while the PST is written; once the archive
is committed they reach the ledger in one ``commit_records`` and the report is written from
the ledger, so the portal's report and the bucket's ``report.csv`` are one. Folders are named
as in a ZIP (``connectors.naming.ArchiveFolders``): distinct source folders are distinct PST
folders, whatever their names.

Crash safety: a killed worker restarts a PST backup from scratch — the ledger holds the upload
in progress and the files already completed (``begin_volume``; and, once the archive is
committed, the records), which the next run aborts, deletes and forgets before starting over
(``_forget_previous_run``). Exactly-once holds because a run either completes every file or
leaves nothing its successor would keep.
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
from connectors.archives import PST, metadata
from connectors.archives.pst.mime import ParsedMessage
from connectors.archives.pst.parseworker import ParseWorker
from connectors.model import Folder, Message, MessageFailure
from connectors.naming import clean_file_name
from connectors.pipeline.archivekeys import final_key, orphan_upload_keys
from connectors.pipeline.ledger import (
    EXPORTED,
    FAILED,
    MESSAGE,
    SKIPPED,
    EntryRecord,
    Progress,
    Volume,
)
from connectors.pipeline.prefetch import prefetched
from connectors.pipeline.skeleton import Backup
from connectors.storage.s3.growing import GrowingFileUpload, SentPartChanged
from connectors.storage.s3.sink import MultipartSink, abort_incomplete_uploads

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
    """A record as one JSON line (its fields are flat: ``vars`` gives what ``asdict`` would,
    without its deep copy; bench/README.md)."""
    return json.dumps(vars(record), ensure_ascii=False) + "\n"


class PstBackup(Backup):
    """One run of a PST backup (see the module docstring). Use ``run()`` once."""

    format = PST
    resumes = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.name = clean_file_name(self.spec.file_name, PST.extension)
        self.completed: list[Volume] = []  # files completed, under their write keys
        self._recorded = 0  # the volume whose upload the ledger holds
        self.upload: GrowingFileUpload | None = None
        self._volume = None  # the PstWriter whose file self.upload sends
        self._closed_volumes: list = []  # (PstWriter, Path) finished by the writer, not yet uploaded
        self._parser: ParseWorker | None = None  # while the PST is written (``_write_pst``)
        self._work: tempfile.TemporaryDirectory | None = None  # the local files, until the run ends
        self._records_path: Path | None = None
        self._records_committed = False  # the ledger holds the records: no outcomes in progress

    @property
    def can_split(self) -> bool:
        return True  # split_bytes or not, FILE.partNNN.pst may exist: a PST's size is known last

    def key_for(self, path: Path) -> str:
        """The final key of the local file ``path``."""
        return self.spec.key(path.name[len(self.name):])  # ".pst" or ".part002.pst"

    def write_key_for(self, path: Path) -> str:
        return self.names.write_key(self.key_for(path))

    def _number(self, path: Path) -> int:
        suffix = path.name[len(self.name):]
        return int(suffix[5:-4]) if suffix.startswith(".part") else 1

    # ---- the skeleton's hooks -----------------------------------------------------------------
    def write_archive(self, folders: list[Folder]) -> list[tuple[str, int]]:
        self._forget_previous_run()
        self._work = tempfile.TemporaryDirectory(prefix="pst-", dir=self.t.tmp_dir)
        self._write_pst(folders, Path(self._work.name))
        return [(v.key, v.size) for v in self.completed]

    def after_commit(self) -> None:
        """The records, from the local file to the ledger (their ``name``: the file holding the
        message). The outcomes in progress reports stand for records the ledger does not hold
        yet: they stop before the records arrive, so the live table never counts a message twice."""
        keys = {v.number: final_key(v.key) for v in self.completed}

        def records() -> Iterator[EntryRecord]:
            with open(self._records_path, encoding="utf-8") as fh:
                for line in fh:
                    data = json.loads(line)
                    data["labels"] = tuple(data["labels"])
                    data["imap_flags"] = tuple(data["imap_flags"])
                    record = EntryRecord(**data)
                    if record.status == EXPORTED:
                        record.name = keys.get(record.volume, "")
                    yield record

        self._records_committed = True
        self.pacer.report(force=True)
        self.commit_records(records())

    def progress_snapshot(self) -> Progress:
        # The records stay in a local file until the end: the per-folder outcomes travel with
        # the counters (one pass over the folders per report, nothing per message).
        outcomes = {} if self._records_committed else {
            path: [s.exported, s.failed, s.skipped, s.bytes] for path, s in self.stats.items()}
        return dataclasses.replace(self.progress, folder_outcomes=outcomes)

    def close(self) -> None:
        if self._work is not None:
            self._work.cleanup()

    # ---- before the writing -------------------------------------------------------------------
    def _forget_previous_run(self) -> None:
        """What a killed run left (the upload in progress, the files it completed) is removed:
        start afresh. Only keys its ledger recorded, or that it was creating when killed."""
        state = self.ledger.load_upload()
        if state is not None:
            self.discard(state)
        for key in orphan_upload_keys(state, self.names):  # created, then killed before recorded
            abort_incomplete_uploads(self.client, self.spec.bucket, key, retry=self.t.retry)

    # ---- the writing --------------------------------------------------------------------------
    def _write_pst(self, folders: list[Folder], work: Path) -> None:
        from connectors.archives.pst import SplittingPstWriter

        t0 = time.monotonic()
        self.progress.phase = "transferring"
        self._records_path = work / "records.jsonl"
        # Not durable: the files live only until they are uploaded, and a crash starts over.
        writer = SplittingPstWriter(work / f"{self.name}.pst", split_bytes=self.spec.split_bytes or NO_SPLIT,
                                    display_name=self.spec.display_name or self.name, durable=False,
                                    on_part_closed=lambda *closed: self._closed_volumes.append(closed))
        with ParseWorker() as self._parser, writer, open(self._records_path, "w", encoding="utf-8") as records:
            for folder in folders:
                writer.add_folder(self.folder_names.path(folder.path))
            self._start_volume(writer.current, writer.paths[-1])
            for folder in folders:
                self.progress.current_folder = folder.path
                todo = self.folder_todo(folder)
                if todo:
                    self._write_folder(writer, folder, todo, records)
                self.progress.folders_done += 1
        t1 = time.monotonic()
        self.timings["writing"] = t1 - t0
        self.progress.phase = "uploading"
        self._finish_volume(writer.current, writer.paths[-1])
        self.timings["upload"] = time.monotonic() - t1  # what was left after the writing

    def _write_folder(self, writer, folder: Folder, todo: list[str], records) -> None:
        stats = self.stats[folder.path]
        # The next batch is fetched while this one is converted (a bounded number of bytes
        # ahead); closing stops the fetching thread before the source is used again.
        # Two stages, each on its own thread: the source fetches the next batches while the
        # parsing process works on the current ones; each stage holds half of ``queue_bytes``.
        fetching = prefetched(self.fetched(folder, todo), max_bytes=self.t.queue_bytes // 2,
                              size=_message_size, name="pst-fetch")
        prepared = prefetched(_prepared(fetching, self._parser), max_bytes=self.t.queue_bytes // 2,
                              size=_fetched_size, name="pst-parse")
        with contextlib.closing(prepared):
            for item, digest, parsed in prepared:
                record = self._add(writer, item, digest, parsed)
                records.write(_record_line(record))
                stats.add(record)
                self._keep_uploading(writer)
                self.pacer.check_cancel()
                self.pacer.report()

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
                             to=info.to, subject=info.subject, labels=tuple(item.labels), sha256=digest,
                             imap_flags=tuple(item.flags), internal_date=metadata.iso_date(item.internal_date))
        try:
            writer.add_message(dataclasses.replace(item, folder=self.folder_names.path(item.folder)), parsed, digest)
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

    # ---- upload while writing (connectors.storage.s3.growing) -----------------------------------
    def _start_volume(self, volume, path: Path) -> None:
        """Open the multipart upload of the PST file being started, and record it: file 1 as a
        new upload, a later one with the file before it (``begin_volume``), so that a rerun
        after a kill knows every file this run completed."""
        key, number = self.write_key_for(path), self._number(path)
        self.sink = MultipartSink(self.client, self.spec.bucket, key, threads=self.t.upload_threads,
                                  retry=self.t.retry, content_md5=self.t.content_md5,
                                  content_type=PST.content_type)
        upload_id = self.sink.create()
        if number == 1:
            self.ledger.begin_upload(key, upload_id, PST.name)
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
        path.unlink()  # a split export holds one file at a time on disk
        self.pacer.report()

    def _restart_upload(self, volume, path: Path) -> None:
        """Abort what was sent of ``path`` and begin a new upload that sends it whole."""
        self.sink.abort()
        self.progress.archive_bytes -= sum(p.size for p in self.upload.parts.values())
        self._start_volume(volume, path)

    def _part_sent(self, part) -> None:
        """The bytes sent go out with the next progress report (at most one per
        ``progress_interval``: a forced one per part would slow the converting thread with
        ledger writes; bench/README.md)."""
        self.progress.archive_bytes += part.size
        self.pacer.report()

"""The backup pipeline's Ledger on the database: one MigrationRequest's checkpoint.

``commit_part`` is one transaction: the part row, the records of every entry in that part, and
a re-check that this run still owns the request (``run_token``). Two workers can therefore never
both write one archive: a run that lost ownership (the request was re-queued after its heartbeat
went stale, or cancelled and retried) fails its next commit with ``lifecycle.Superseded`` and stops. A PST export, which
uploads whole files, commits its records once, after its last file (``commit_records``: no part).

The checkpoint's ``upload`` (``requests_app.checkpoint``) holds the current upload (key, id, volume) and, for a split
archive, the completed ``volumes`` (number, key, size, parts); ``UploadedPart`` rows are the
current volume's parts only. ``archives`` (the final keys of the archive the request's last
committed run left in the bucket) and ``publication`` (what remains of that commit) outlive
every export: a retry, a reset, a failed run keep them (``connectors.pipeline.archivekeys``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from itertools import islice

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from connectors.pipeline.ledger import (
    MANIFEST,
    EntryRecord,
    PartRecord,
    Progress,
    Publication,
    UploadState,
    Volume,
)
from requests_app import lifecycle
from requests_app.checkpoint import Checkpoint
from requests_app.models import ArchiveRecord, MigrationRequest, UploadedPart

# ``entry`` (JSON) holds these, plus what the archive records about the message ("imap_flags",
# "internal_date": absent from rows written before they existed, read as none)
_ENTRY_FIELDS = ("name", "offset", "crc32", "compressed_size", "method", "dos_time", "dos_date", "flags", "volume")


def _to_row(request_id: int, seq: int, part_number: int | None, r: EntryRecord) -> ArchiveRecord:
    return ArchiveRecord(
        request_id=request_id, seq=seq, part_number=part_number, kind=r.kind, folder=r.folder,
        source_id=r.source_id, folder_seq=r.sequence, message_id=r.message_id, date=r.date, sender=r.from_,
        recipients=r.to, subject=r.subject, size=r.size, sha256=r.sha256, status=r.status, error=r.error,
        labels=list(r.labels), entry={**{k: getattr(r, k) for k in _ENTRY_FIELDS},
                                      "imap_flags": list(r.imap_flags), "internal_date": r.internal_date},
    )


def to_entry_record(row: ArchiveRecord) -> EntryRecord:
    entry = row.entry or {}
    return EntryRecord(
        kind=row.kind, folder=row.folder, source_id=row.source_id, status=row.status,
        size=row.size, sequence=row.folder_seq, message_id=row.message_id, date=row.date, from_=row.sender,
        to=row.recipients, subject=row.subject, sha256=row.sha256, error=row.error, labels=tuple(row.labels or ()),
        imap_flags=tuple(entry.get("imap_flags") or ()), internal_date=entry.get("internal_date") or "",
        **{k: entry.get(k, 1 if k == "volume" else ("" if k == "name" else 0)) for k in _ENTRY_FIELDS},
    )


class DatabaseLedger:
    def __init__(self, request_pk: int, run_token: str) -> None:
        self.pk = request_pk
        self.run_token = run_token
        self._folder_progress: dict | None = None  # as last stored: unchanged, it is not written again
        # What this run knows of its own rows, so a small request is not a query per folder and
        # per part. Valid while the run owns the request: every write re-checks ownership under
        # the row lock first (``_owned``), and no other run writes the rows of a request it does
        # not own. None: not known yet (read from the database on first use).
        self._no_records: bool | None = None  # the request has no ArchiveRecord
        self._last_seq: int | None = None  # the highest ArchiveRecord.seq
        self._last_part: tuple[str | None, int] | None = None  # (archive key, its highest part number)
        self._stored: dict | None = None  # the checkpoint as this run last read or committed it

    def _owned(self) -> tuple[MigrationRequest, Checkpoint]:
        row, checkpoint = lifecycle.owned_row(self.pk, self.run_token)
        self._stored = row.checkpoint  # as read under the lock (this transaction's own write: ``_save``)
        return row, checkpoint

    def _save(self, checkpoint: Checkpoint, row: MigrationRequest) -> None:
        """Store ``checkpoint`` and remember it. Remembered before the transaction commits: if
        the commit fails, the ledger call raises and the engine stops using this ledger
        (``skeleton.LedgerGuard``), so nothing reads the remembered value."""
        checkpoint.save(row)
        self._stored = row.checkpoint

    def _checkpoint(self) -> Checkpoint:
        """The checkpoint, read once: while this run owns the request only its own writes change it."""
        if self._stored is None:
            self._stored = MigrationRequest.objects.only("checkpoint").get(pk=self.pk).checkpoint
        return Checkpoint.from_json(self._stored)

    # -- upload ------------------------------------------------------------------------------
    def load_upload(self) -> UploadState | None:
        return lifecycle.upload_state(self.pk, self._checkpoint())

    @transaction.atomic
    def begin_upload(self, key: str, upload_id: str, format: str) -> None:
        row, checkpoint = self._owned()
        ArchiveRecord.objects.filter(request_id=self.pk).delete()
        UploadedPart.objects.filter(request_id=self.pk).delete()
        checkpoint.upload = UploadState(key, upload_id, format)
        self._save(checkpoint, row)
        self._forget_rows(empty=True)
        transaction.on_commit(lambda: setattr(self, "_last_part", (key, 0)))  # no part yet

    @transaction.atomic
    def commit_part(self, part: PartRecord, records: Sequence[EntryRecord]) -> None:
        row, checkpoint = self._owned()
        key = checkpoint.upload.key if checkpoint.upload else None
        if self._last_part is None or self._last_part[0] != key:
            self._last_part = (key, UploadedPart.objects.filter(request_id=self.pk, archive_key=key)
                               .aggregate(n=Max("part_number"))["n"] or 0)
        last = self._last_part[1]
        if part.number != last + 1:
            raise ValueError(f"part {part.number} committed out of order (expected {last + 1})")
        UploadedPart.objects.create(request_id=self.pk, archive_key=key, part_number=part.number,
                                    etag=part.etag, size=part.size, final=part.final, next_volume=part.next_volume)
        seq = self._seq()
        rows = [_to_row(self.pk, seq + i + 1, part.number, r) for i, r in enumerate(records)]
        ArchiveRecord.objects.bulk_create(rows, batch_size=1000)
        MigrationRequest.objects.filter(pk=self.pk).update(heartbeat_at=timezone.now())
        # Known only once the transaction commits (an exception rolls it back: forget instead).
        transaction.on_commit(lambda: self._wrote(key, part.number, seq + len(rows)))
        self._forget_rows()

    def _seq(self) -> int:
        if self._last_seq is None:
            self._last_seq = ArchiveRecord.objects.filter(request_id=self.pk).aggregate(n=Max("seq"))["n"] or 0
        return self._last_seq

    def _wrote(self, key: str | None, part_number: int | None, last_seq: int) -> None:
        if part_number is not None:
            self._last_part = (key, part_number)
        self._last_seq = last_seq
        self._no_records = last_seq == 0  # seq counts from 1: the highest is 0 only with no record

    def _forget_rows(self, *, empty: bool = False) -> None:
        """Forget what is cached of the rows (``empty``: this transaction just deleted them all,
        known once it commits)."""
        self._no_records = self._last_seq = self._last_part = None
        if empty:
            transaction.on_commit(lambda: self._wrote(None, None, 0))

    @transaction.atomic
    def commit_records(self, records: Iterable[EntryRecord]) -> None:
        """All of ``records`` in one transaction, inserted 1,000 at a time (memory stays flat)."""
        row, _checkpoint = self._owned()
        seq = self._seq()
        self._forget_rows()
        records = iter(records)
        while batch := list(islice(records, 1000)):
            ArchiveRecord.objects.bulk_create([_to_row(self.pk, seq + i + 1, None, r) for i, r in enumerate(batch)])
            seq += len(batch)
        row.heartbeat_at = timezone.now()
        row.save(update_fields=["heartbeat_at"])

    @transaction.atomic
    def begin_volume(self, done: Volume, key: str, upload_id: str) -> None:
        row, checkpoint = self._owned()
        current = checkpoint.upload
        if current is None or current.volume != done.number:
            raise ValueError(f"volume {done.number} is not the current volume")
        UploadedPart.objects.filter(request_id=self.pk).delete()
        checkpoint.upload = UploadState(key, upload_id, current.format, volume=done.number + 1,
                                        volumes=[*current.volumes, done])
        self._save(checkpoint, row)
        self._last_part = None

    @transaction.atomic
    def mark_archive_complete(self, size: int, etag: str) -> None:
        row, checkpoint = self._owned()
        checkpoint.upload = replace(checkpoint.upload, archive_complete=True, archive_size=size, archive_etag=etag)
        self._save(checkpoint, row)

    @transaction.atomic
    def reset(self) -> None:
        row, checkpoint = self._owned()
        ArchiveRecord.objects.filter(request_id=self.pk).delete()
        UploadedPart.objects.filter(request_id=self.pk).delete()
        checkpoint.upload = None
        self._save(checkpoint, row)
        self._forget_rows(empty=True)

    # -- the committed archive ----------------------------------------------------------------
    def archive_keys(self) -> list[str]:
        return list(self._checkpoint().archives or [])

    @transaction.atomic
    def commit_archive(self, keys: Sequence[str], publication: Publication | None) -> None:
        row, checkpoint = self._owned()
        checkpoint.archives, checkpoint.publication = list(keys), publication or None
        self._save(checkpoint, row)

    def publication(self) -> Publication | None:
        return self._checkpoint().publication

    @transaction.atomic
    def publication_done(self, remaining: Publication | None) -> None:
        row, checkpoint = self._owned()
        checkpoint.publication = remaining or None
        self._save(checkpoint, row)

    # -- records -----------------------------------------------------------------------------
    def _has_no_records(self) -> bool:
        if self._no_records is None:
            self._no_records = not ArchiveRecord.objects.filter(request_id=self.pk).exists()
        return self._no_records

    def committed_source_ids(self, folder: str) -> set[str]:
        if self._has_no_records():  # a fresh request: one query for all its folders
            return set()
        return set(ArchiveRecord.objects.filter(request_id=self.pk, folder=folder)
                   .exclude(kind=MANIFEST).values_list("source_id", flat=True))

    def last_sequence(self, folder: str) -> int:
        if self._has_no_records():
            return 0
        return (ArchiveRecord.objects.filter(request_id=self.pk, folder=folder)
                .aggregate(n=Max("folder_seq"))["n"] or 0)

    def iter_records(self, volume: int | None = None) -> Iterator[EntryRecord]:
        if self._no_records:  # known empty (a fresh request before its first commit)
            return iter(())
        rows = ArchiveRecord.objects.filter(request_id=self.pk).order_by("seq")
        if volume is not None:
            rows = rows.filter(entry__volume=volume)
        return (to_entry_record(r) for r in rows.iterator(chunk_size=2000))

    # -- progress and cancel -----------------------------------------------------------------
    def report_progress(self, progress: Progress) -> None:
        fields = dict(
            folders_total=progress.folders_total, folders_done=progress.folders_done,
            messages_total=progress.messages_total,
            messages_done=max(0, progress.messages_done - progress.messages_failed - progress.messages_skipped),
            messages_failed=progress.messages_failed, messages_skipped=progress.messages_skipped,
            bytes_done=progress.archive_bytes or progress.bytes_done,
            current_folder=progress.current_folder[:500], heartbeat_at=timezone.now(),
        )
        folder_progress = {"counts": dict(progress.folder_counts),
                           "outcomes": {path: list(v) for path, v in progress.folder_outcomes.items()}}
        if folder_progress != self._folder_progress:
            fields["folder_progress"] = folder_progress
        lifecycle.owned(self.pk, self.run_token).update(**fields)
        self._folder_progress = folder_progress

    def cancel_requested(self) -> bool:
        return lifecycle.cancel_requested(self.pk, self.run_token)

"""The export engine's Ledger on the database: one MigrationRequest's checkpoint.

``commit_part`` is one transaction: the part row, the records of every entry in that part, and
a re-check that this run still owns the request (``run_token``). Two workers can therefore never
both write one archive: a run that lost ownership (the request was re-queued after its heartbeat
went stale, or cancelled and retried) fails its next commit and stops. A PST export, which
uploads whole files, commits its records once, after its last file (``commit_records``: no part).

The checkpoint's ``upload`` holds the current upload (key, id, volume) and, for a split
archive, the completed ``volumes`` (number, key, size, parts); ``UploadedPart`` rows are the
current volume's parts only. ``archives`` (the final keys of the archive the request's last
committed run left in the bucket) and ``publication`` (what remains of that commit) outlive
every export: a retry, a reset, a failed run keep them (``connectors.pipeline.archivekeys``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
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
from requests_app.models import ArchiveRecord, MigrationRequest, UploadedPart

_ENTRY_FIELDS = ("name", "offset", "crc32", "compressed_size", "method", "dos_time", "dos_date", "flags", "volume")


class Superseded(Exception):
    """Another run owns this request now; this one must stop without touching the upload."""


def _to_row(request_id: int, seq: int, part_number: int | None, r: EntryRecord) -> ArchiveRecord:
    return ArchiveRecord(
        request_id=request_id, seq=seq, part_number=part_number, kind=r.kind, folder=r.folder,
        source_id=r.source_id, folder_seq=r.sequence, message_id=r.message_id, date=r.date, sender=r.from_,
        recipients=r.to, subject=r.subject, size=r.size, sha256=r.sha256, status=r.status, error=r.error,
        labels=list(r.labels), entry={k: getattr(r, k) for k in _ENTRY_FIELDS},
    )


def to_entry_record(row: ArchiveRecord) -> EntryRecord:
    entry = row.entry or {}
    return EntryRecord(
        kind=row.kind, folder=row.folder, source_id=row.source_id, status=row.status,
        size=row.size, sequence=row.folder_seq, message_id=row.message_id, date=row.date, from_=row.sender,
        to=row.recipients, subject=row.subject, sha256=row.sha256, error=row.error, labels=tuple(row.labels or ()),
        **{k: entry.get(k, 1 if k == "volume" else ("" if k == "name" else 0)) for k in _ENTRY_FIELDS},
    )


class DatabaseLedger:
    def __init__(self, request_pk: int, run_token: str) -> None:
        self.pk = request_pk
        self.run_token = run_token
        self._folder_progress: dict | None = None  # as last stored: unchanged, it is not written again

    # -- ownership ---------------------------------------------------------------------------
    def _locked_row(self) -> MigrationRequest:
        row = MigrationRequest.objects.select_for_update().get(pk=self.pk)
        if row.checkpoint.get("run_token") != self.run_token:
            raise Superseded(f"request {self.pk} is now run by another worker")
        return row

    # -- upload ------------------------------------------------------------------------------
    def load_upload(self) -> UploadState | None:
        row = MigrationRequest.objects.get(pk=self.pk)
        upload = row.checkpoint.get("upload")
        if not upload:
            return None
        parts = [PartRecord(p.part_number, p.etag, p.size, p.final, p.next_volume)
                 for p in UploadedPart.objects.filter(request_id=self.pk, archive_key=upload["key"]).order_by("part_number")]
        return UploadState(key=upload["key"], upload_id=upload["upload_id"], format=upload["format"], parts=parts,
                           archive_complete=upload.get("archive_complete", False),
                           archive_size=upload.get("archive_size", 0), archive_etag=upload.get("archive_etag", ""),
                           volume=upload.get("volume", 1),
                           volumes=[Volume(**v) for v in upload.get("volumes", [])])

    @transaction.atomic
    def begin_upload(self, key: str, upload_id: str, format: str) -> None:
        row = self._locked_row()
        ArchiveRecord.objects.filter(request_id=self.pk).delete()
        UploadedPart.objects.filter(request_id=self.pk).delete()
        row.checkpoint = {**row.checkpoint, "upload": {"key": key, "upload_id": upload_id, "format": format}}
        row.save(update_fields=["checkpoint"])

    @transaction.atomic
    def commit_part(self, part: PartRecord, records: Sequence[EntryRecord]) -> None:
        row = self._locked_row()
        upload = row.checkpoint.get("upload") or {}
        last = (UploadedPart.objects.filter(request_id=self.pk, archive_key=upload.get("key"))
                .aggregate(n=Max("part_number"))["n"] or 0)
        if part.number != last + 1:
            raise ValueError(f"part {part.number} committed out of order (expected {last + 1})")
        UploadedPart.objects.create(request_id=self.pk, archive_key=upload["key"], part_number=part.number,
                                    etag=part.etag, size=part.size, final=part.final, next_volume=part.next_volume)
        seq = ArchiveRecord.objects.filter(request_id=self.pk).aggregate(n=Max("seq"))["n"] or 0
        ArchiveRecord.objects.bulk_create(
            [_to_row(self.pk, seq + i + 1, part.number, r) for i, r in enumerate(records)], batch_size=1000)
        row.heartbeat_at = timezone.now()
        row.save(update_fields=["heartbeat_at"])

    @transaction.atomic
    def commit_records(self, records: Iterable[EntryRecord]) -> None:
        """All of ``records`` in one transaction, inserted 1,000 at a time (memory stays flat)."""
        row = self._locked_row()
        seq = ArchiveRecord.objects.filter(request_id=self.pk).aggregate(n=Max("seq"))["n"] or 0
        records = iter(records)
        while batch := list(islice(records, 1000)):
            ArchiveRecord.objects.bulk_create([_to_row(self.pk, seq + i + 1, None, r) for i, r in enumerate(batch)])
            seq += len(batch)
        row.heartbeat_at = timezone.now()
        row.save(update_fields=["heartbeat_at"])

    @transaction.atomic
    def begin_volume(self, done: Volume, key: str, upload_id: str) -> None:
        row = self._locked_row()
        upload = row.checkpoint.get("upload") or {}
        if upload.get("volume", 1) != done.number:
            raise ValueError(f"volume {done.number} is not the current volume")
        UploadedPart.objects.filter(request_id=self.pk).delete()
        volumes = [*upload.get("volumes", []), {"number": done.number, "key": done.key, "size": done.size,
                                                 "parts": done.parts}]
        row.checkpoint = {**row.checkpoint, "upload": {"key": key, "upload_id": upload_id, "format": upload["format"],
                                                       "volume": done.number + 1, "volumes": volumes}}
        row.save(update_fields=["checkpoint"])

    @transaction.atomic
    def mark_archive_complete(self, size: int, etag: str) -> None:
        row = self._locked_row()
        upload = dict(row.checkpoint.get("upload") or {})
        upload.update(archive_complete=True, archive_size=size, archive_etag=etag)
        row.checkpoint = {**row.checkpoint, "upload": upload}
        row.save(update_fields=["checkpoint"])

    @transaction.atomic
    def reset(self) -> None:
        row = self._locked_row()
        ArchiveRecord.objects.filter(request_id=self.pk).delete()
        UploadedPart.objects.filter(request_id=self.pk).delete()
        row.checkpoint = {k: v for k, v in row.checkpoint.items() if k != "upload"}
        row.save(update_fields=["checkpoint"])

    # -- the committed archive ----------------------------------------------------------------
    def archive_keys(self) -> list[str]:
        row = MigrationRequest.objects.only("checkpoint").get(pk=self.pk)
        return list(row.checkpoint.get("archives") or [])

    @transaction.atomic
    def commit_archive(self, keys: Sequence[str], publication: Publication | None) -> None:
        row = self._locked_row()
        checkpoint = {k: v for k, v in row.checkpoint.items() if k != "publication"}
        checkpoint["archives"] = list(keys)
        if publication:
            checkpoint["publication"] = publication.to_json()
        row.checkpoint = checkpoint
        row.save(update_fields=["checkpoint"])

    def publication(self) -> Publication | None:
        row = MigrationRequest.objects.only("checkpoint").get(pk=self.pk)
        return Publication.from_json(row.checkpoint.get("publication"))

    @transaction.atomic
    def publication_done(self, remaining: Publication | None) -> None:
        row = self._locked_row()
        checkpoint = {k: v for k, v in row.checkpoint.items() if k != "publication"}
        if remaining:
            checkpoint["publication"] = remaining.to_json()
        row.checkpoint = checkpoint
        row.save(update_fields=["checkpoint"])

    # -- records -----------------------------------------------------------------------------
    def committed_source_ids(self, folder: str) -> set[str]:
        return set(ArchiveRecord.objects.filter(request_id=self.pk, folder=folder)
                   .exclude(kind=MANIFEST).values_list("source_id", flat=True))

    def last_sequence(self, folder: str) -> int:
        return (ArchiveRecord.objects.filter(request_id=self.pk, folder=folder)
                .aggregate(n=Max("folder_seq"))["n"] or 0)

    def iter_records(self, volume: int | None = None) -> Iterator[EntryRecord]:
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
        MigrationRequest.objects.filter(pk=self.pk, checkpoint__run_token=self.run_token).update(**fields)
        self._folder_progress = folder_progress

    def cancel_requested(self) -> bool:
        row = MigrationRequest.objects.filter(pk=self.pk).values("cancel_requested", "checkpoint").first()
        if row is None:
            return True
        if (row["checkpoint"] or {}).get("run_token") != self.run_token:
            raise Superseded(f"request {self.pk} is now run by another worker")
        return bool(row["cancel_requested"])

"""What a request's row remembers between runs (``MigrationRequest.checkpoint``), typed.

The JSON layout is known here only: every other module reads and writes a ``Checkpoint``, and
asks ``run_by`` / ``holds_archive`` for the queries that look inside it. Keys this version does
not know are kept as they are (``extra``), so a row written by a newer release loses nothing.

- ``run_token``, ``job_id``: the run that owns the request and its RQ job (``lifecycle.claim``);
  the token is removed when the run ends.
- ``upload``: the upload in progress of the request's export (``UploadState`` without parts:
  those are ``UploadedPart`` rows), or None (``requests_app.ledger``).
- ``archives``: the final keys of the archive the request's last committed run left in the
  bucket, None before the first commit; ``publication``: what remains of that commit. Both
  outlive every run (``connectors.pipeline.archivekeys``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q

from connectors.pipeline.ledger import Publication, UploadState, Volume

_KNOWN = ("run_token", "job_id", "upload", "archives", "publication")


@dataclass
class Checkpoint:
    run_token: str = ""
    job_id: str = ""
    upload: UploadState | None = None
    archives: list[str] | None = None
    publication: Publication | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict | None) -> Checkpoint:
        data = data or {}
        return cls(run_token=data.get("run_token") or "", job_id=data.get("job_id") or "",
                   upload=_upload_from_json(data.get("upload")),
                   archives=list(data["archives"]) if data.get("archives") is not None else None,
                   publication=Publication.from_json(data.get("publication")),
                   extra={k: v for k, v in data.items() if k not in _KNOWN})

    @classmethod
    def of(cls, row) -> Checkpoint:
        return cls.from_json(row.checkpoint)

    def to_json(self) -> dict:
        data = dict(self.extra)
        if self.run_token:
            data["run_token"] = self.run_token
        if self.job_id:
            data["job_id"] = self.job_id
        if self.upload is not None:
            data["upload"] = _upload_to_json(self.upload)
        if self.archives is not None:
            data["archives"] = list(self.archives)
        if self.publication:
            data["publication"] = self.publication.to_json()
        return data

    def save(self, row) -> None:
        """Store this checkpoint on ``row`` (the caller holds the row's lock)."""
        row.checkpoint = self.to_json()
        row.save(update_fields=["checkpoint"])


def _upload_from_json(data: dict | None) -> UploadState | None:
    if not data:
        return None
    return UploadState(key=data["key"], upload_id=data["upload_id"], format=data["format"],
                       archive_complete=data.get("archive_complete", False),
                       archive_size=data.get("archive_size", 0), archive_etag=data.get("archive_etag", ""),
                       volume=data.get("volume", 1), volumes=[Volume(**v) for v in data.get("volumes", [])])


def _upload_to_json(upload: UploadState) -> dict:
    data: dict[str, Any] = {"key": upload.key, "upload_id": upload.upload_id, "format": upload.format}
    if upload.volume != 1 or upload.volumes:
        data["volume"] = upload.volume
        data["volumes"] = [{"number": v.number, "key": v.key, "size": v.size, "parts": v.parts}
                           for v in upload.volumes]
    if upload.archive_complete:
        data.update(archive_complete=True, archive_size=upload.archive_size, archive_etag=upload.archive_etag)
    return data


def run_by(token: str) -> Q:
    """Rows whose checkpoint names the run ``token`` (empty: none)."""
    return Q(checkpoint__run_token=token)


def holds_archive() -> Q:
    """Rows whose checkpoint records a committed archive in the bucket (``archives``)."""
    return Q(checkpoint__has_key="archives")

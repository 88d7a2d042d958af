""""Browse archive": a request's archive, folder by folder and message by message, read where it
lies (the reader's browse API: a ZIP's central directory and index, a PST's tables, through ranged
GETs), and one
message downloaded as ``.eml`` — never the archive.

The archive is the request's own: a backup's committed archive (``result.archives``, its first
file: the reader finds the other volumes), or the archive a restore reads (``archive_key``), in
the request's bucket, which belongs to the request's tenant. A message id names an entry of that
archive (``VOLUME_KEY!ENTRY_NAME``); the reader refuses any other (``KeyError``), so no URL can
reach another key of the bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from django.conf import settings

from requests_app.models import MigrationRequest
from requests_app.types import get_type

PAGE_SIZE = 200


class NotBrowsable(Exception):
    """The request has no archive this portal can browse; the message says why."""


def archive_key(req: MigrationRequest) -> str:
    if req.is_restore:
        return req.archive_key
    archives = req.result.get("archives") or []
    return archives[0]["key"] if archives else ""


def reader_for(req: MigrationRequest):
    """The archive reader of ``req``'s archive, or NotBrowsable. A ZIP is read from its central
    directory; a PST through a seekable ranged object per volume (its header, B-trees and
    tables: the pages a listing needs, never the whole file). Close it after use."""
    from buckets.services import bucket_target
    from connectors.storage.s3.client import make_client

    rtype = get_type(req.request_type)
    key = archive_key(req)
    if rtype is None or not key:
        raise NotBrowsable("This request has no archive in the bucket yet.")
    client = make_client(bucket_target(req.bucket), allow_private=settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS)
    if rtype.format == "pst":
        from connectors.archives.pst.restore import PstArchiveReader
        from connectors.pipeline.restore_keys import resolve_archive
        from connectors.storage.s3.ranged import open_object

        keys = resolve_archive(client, req.bucket.name, key, "pst")
        return PstArchiveReader([(k, open_object(client, req.bucket.name, k)) for k in keys])
    from connectors.archives.zip.reader import ZipArchiveReader

    return ZipArchiveReader(client, req.bucket.name, key)


def folders(reader) -> list:
    return reader.folders()


def messages(reader, folder: str, page: int = 1) -> tuple[list, bool]:
    """The messages of ``folder`` on ``page`` (``PAGE_SIZE`` each), and whether more follow."""
    start = (max(page, 1) - 1) * PAGE_SIZE
    listed = list(islice(reader.browse(folder), start, start + PAGE_SIZE + 1))
    return listed[:PAGE_SIZE], len(listed) > PAGE_SIZE


def message_bytes(reader, entry_id: str) -> Iterator[bytes]:
    """One message's bytes (a ZIP entry streamed; a PST message rebuilt as MIME); KeyError for
    an id that is not an entry of this archive."""
    if hasattr(reader, "iter_entry"):
        return reader.iter_entry(entry_id)
    return iter([reader.read_entry(entry_id)])

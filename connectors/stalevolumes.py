"""Files an earlier run of the same archive left behind that this run did not write.

A request run again into the same prefix and file name (Retry after ``completed_with_errors``,
or a new request reusing the name) may make fewer volumes than the run before. Its archive
overwrites the names it uses, but an old ``FILE.part003.zip`` — or every old
``FILE.partNNN.zip`` when the new archive fits in ``FILE.zip``, or an old ``FILE.pst`` when the
new one is split — would stay beside it, looking like part of an archive whose report does not
list it. Once the archive is complete, and before its report is written, the engines call
``delete_stale_volumes``: it lists ``PREFIX/FILE.part`` (ListObjectsV2, every page) and deletes
exactly the keys named like a volume of this archive that the run did not write, and deletes
``FILE.ext`` itself when this run did not write it (S3 deletes a missing key without error).
Only ``FILE.part`` is listed, not ``FILE``: a store that makes a listing's ETags on demand
(rclone's S3 server hashes each listed object) would otherwise read the whole archive just
written back (0.7 s for the 428 MB benchmark archive).

Invariants:
- only ``FILE.ext`` and ``FILE.partNNN.ext`` (``archive_key_pattern``) are ever deleted:
  ``FILE.report.csv``, ``FILE2.zip``, ``FILE.part001.zip.bak`` and other prefixes never are;
- repeatable: a rerun after a kill at any point deletes whatever is still left;
- a listing or deletion that keeps failing does not fail the export: the caller puts the
  returned warning in the result, the portal and summary.json.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterator

from connectors.s3sink import RetryPolicy, S3Failure, with_retries

log = logging.getLogger(__name__)


def archive_key_pattern(base_key: str, extension: str) -> re.Pattern[str]:
    """``BASE.ext`` or ``BASE.partNNN.ext`` (three digits or more, as ``volume_suffix`` and the
    PST writer number them); use with ``fullmatch``."""
    return re.compile(re.escape(base_key) + r"(\.part\d{3,})?\." + re.escape(extension))


def list_keys(client, bucket: str, prefix: str, *, retry: RetryPolicy,
              page_size: int = 1000) -> Iterator[str]:
    """Every key under ``prefix``, page by page (a prefix may hold more than one page)."""
    kwargs = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    while True:
        response = with_retries(f"ListObjectsV2 {prefix}",
                                lambda kw=dict(kwargs): client.list_objects_v2(**kw), retry)
        for obj in response.get("Contents", []):
            yield obj["Key"]
        token = response.get("NextContinuationToken")
        if not response.get("IsTruncated") or not token:
            return
        kwargs["ContinuationToken"] = token


def stale_volume_keys(client, bucket: str, base_key: str, extension: str, keep: Collection[str], *,
                      retry: RetryPolicy, page_size: int = 1000) -> list[str]:
    """The keys named like a file of the archive ``base_key`` that are not in ``keep``: the
    listed ``BASE.partNNN.ext`` ones, and ``BASE.ext`` unlisted (it may not exist).

    Listed in full before anything is deleted (deleting while paging could move the pages)."""
    ours = archive_key_pattern(base_key, extension)
    single = f"{base_key}.{extension}"
    volumes = list_keys(client, bucket, f"{base_key}.part", retry=retry, page_size=page_size)
    stale = [key for key in volumes if ours.fullmatch(key) and key not in keep]
    return stale if single in keep else [single, *stale]


def delete_stale_volumes(client, bucket: str, base_key: str, extension: str, keep: Collection[str], *,
                         retry: RetryPolicy, page_size: int = 1000) -> str:
    """Delete the archive's files this run did not write (``keep``: the keys it did write).

    Returns "" when none is left, else a warning for the administrator naming what remains."""
    try:
        stale = stale_volume_keys(client, bucket, base_key, extension, keep, retry=retry, page_size=page_size)
    except S3Failure as exc:
        log.warning("could not list %s* to remove files of an earlier run: %s", base_key, exc)
        return (f"Could not check for files of an earlier run of this archive ({exc}): any "
                f"{base_key}.{extension} or {base_key}.partNNN.{extension} that is not listed in "
                "archives is not part of this archive; delete it by hand.")
    failed: list[str] = []
    error = None
    for key in stale:
        try:
            with_retries(f"DeleteObject {key}", lambda k=key: client.delete_object(Bucket=bucket, Key=k), retry)
            log.info("deleted %s, left by an earlier run of this archive", key)
        except S3Failure as exc:
            log.warning("could not delete %s, left by an earlier run of this archive: %s", key, exc)
            failed.append(key)
            error = exc
    if not failed:
        return ""
    return (f"Files of an earlier run that are not part of this archive could not be deleted "
            f"({error}): {', '.join(failed)}; delete them by hand.")

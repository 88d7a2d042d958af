"""Renaming an S3 object (copy, then delete): how a split export's first volume, streamed as
``FILE.zip`` before anyone knew a second would follow, becomes ``FILE.part001.zip``.

S3 has no rename, and a multipart upload's key is fixed when it is created. ``move_object``
copies on the server (CopyObject; a multipart copy when the store refuses one request for an
object beyond 5 GiB, as AWS does), checks the copy's size, then deletes the source. It is
idempotent: repeated after a kill at any point it finishes the move or finds it finished.
"""

from __future__ import annotations

import logging

from connectors.storage.s3.sink import (
    RetryPolicy,
    S3Failure,
    abort_incomplete_uploads,
    error_code,
    head_object,
    with_retries,
)

log = logging.getLogger(__name__)

COPY_LIMIT = 5 * 1024**3  # AWS: the largest object CopyObject copies in one request
_TOO_LARGE = {"InvalidRequest", "EntityTooLarge"}


def move_object(client, bucket: str, source: str, target: str, size: int, *,
                retry: RetryPolicy) -> None:
    """Make ``target`` hold what ``source`` (``size`` bytes) held, and ``source`` not exist."""
    if head_object(client, bucket, source) is not None:
        copy_object(client, bucket, source, target, size, retry=retry)
        with_retries(f"DeleteObject {source}", lambda: client.delete_object(Bucket=bucket, Key=source), retry)
        return
    found = head_object(client, bucket, target)  # moved by a run that was killed afterwards
    if found is None or found.get("ContentLength") != size:
        raise S3Failure(f"{source} disappeared before it could be renamed to {target}; run the export again.")


def copy_object(client, bucket: str, source: str, target: str, size: int, *,
                retry: RetryPolicy, copy_limit: int = COPY_LIMIT) -> None:
    abort_incomplete_uploads(client, bucket, target, retry=retry)  # a multipart copy killed earlier
    try:
        with_retries(f"CopyObject {target}", lambda: client.copy_object(
            Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source}), retry)
    except S3Failure as exc:
        if size <= copy_limit or error_code(exc.__cause__) not in _TOO_LARGE:
            raise
        log.info("copying %s to %s in parts (%d bytes)", source, target, size)
        multipart_copy(client, bucket, source, target, size, retry=retry)
    found = head_object(client, bucket, target)
    if found is None or found.get("ContentLength") != size:
        raise S3Failure(f"the copy of {source} to {target} has {found and found.get('ContentLength')} bytes, "
                        f"not {size}")


def multipart_copy(client, bucket: str, source: str, target: str, size: int, *,
                   retry: RetryPolicy, chunk_bytes: int = 1024**3) -> None:
    """boto3's managed copy in UploadPartCopy ranges (it aborts its own upload on failure)."""
    from boto3.s3.transfer import TransferConfig

    chunk = max(chunk_bytes, -(-size // 10_000))
    config = TransferConfig(multipart_threshold=1, multipart_chunksize=chunk, max_concurrency=4)
    with_retries(f"multipart copy to {target}", lambda: client.copy(
        {"Bucket": bucket, "Key": source}, bucket, target, Config=config), retry)

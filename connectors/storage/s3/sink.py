"""S3 multipart upload sink: parts uploaded concurrently, retried, resumable by upload id.

The sink knows nothing about ZIP or ledgers: the engine decides what goes in each part and
records ``UploadedPart``s; the sink moves bytes. Its state is just (bucket, key, upload id)
plus the parts the caller committed, so a new process can pick an upload up again.

Retries: botocore's standard retries (configured in ``storage.s3.client``) run first; on top of them
``with_retries`` retries transient failures (5xx, throttling, timeouts, dropped connections,
bad digest) with exponential backoff, re-sending the part from the start of its buffer.
With ``content_md5`` each part carries Content-MD5 and the store rejects a corrupted part;
it is off by default (TLS guards transit; MD5 costs ~1 s of CPU per 500 MB on our workers).

Invariants:
- an aborted or completed upload is never touched again by this object;
- ``abort()`` waits for in-flight part uploads first (S3: a part upload racing an abort can
  resurrect storage), then aborts, ignoring NoSuchUpload.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

MIN_PART_BYTES = 5 * 1024 * 1024  # S3: every part but the last
MAX_PARTS = 10_000
_TRANSIENT_CODES = {
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestTimeTooSkewed", "BadDigest", "IncompleteBody",
    "OperationAborted", "500", "502", "503", "504",
}


class UploadGone(Exception):
    """The multipart upload no longer exists (completed, aborted, or expired by a lifecycle rule)."""


class S3Failure(Exception):
    """An S3 call failed permanently (or kept failing); ``str()`` is fit for the user."""


class UploadConflict(S3Failure):
    """The store refused to replace a part with other content, or to complete with the parts we
    list (rclone: parts cannot be replaced, every uploaded part must be completed). Starting
    the upload afresh resolves it."""


_CONFLICT_CODES = {"NotImplemented", "InvalidPart", "InvalidPartOrder"}


@dataclass(frozen=True)
class UploadedPart:
    number: int
    etag: str
    size: int


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** attempt) * (0.5 + random.random() / 2)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return ""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        return status >= 500 or status == 429 or error_code(exc) in _TRANSIENT_CODES
    if isinstance(exc, BotoCoreError | ConnectionError | TimeoutError):
        return True
    cause = exc.__cause__ or exc.__context__  # boto3's S3UploadFailedError wraps the real one
    return cause is not None and cause is not exc and is_transient(cause)


def with_retries(what: str, fn: Callable[[], object], policy: RetryPolicy,
                 stop: threading.Event | None = None):
    """Call ``fn`` until it succeeds, a non-transient error occurs, or attempts run out."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            attempt += 1
            if not is_transient(exc) or attempt >= policy.attempts or (stop and stop.is_set()):
                if error_code(exc) == "NoSuchUpload":
                    raise UploadGone(str(exc)) from exc
                if error_code(exc) in _CONFLICT_CODES and what.startswith(("UploadPart", "Complete")):
                    raise UploadConflict(f"S3 {what} failed: {exc}") from exc
                raise S3Failure(f"S3 {what} failed: {exc}") from exc
            delay = policy.delay(attempt - 1)
            log.warning("S3 %s failed (%s); retry %d in %.1fs", what, exc, attempt, delay)
            time.sleep(delay)


def multipart_etag(parts: Sequence[UploadedPart]) -> str:
    """The ETag S3 gives a completed multipart object (MD5 of the part MD5s, "-N")."""
    digest = hashlib.md5(usedforsecurity=False)
    for part in parts:
        digest.update(bytes.fromhex(part.etag.strip('"').split("-")[0]))
    return f'"{digest.hexdigest()}-{len(parts)}"'


def _md5_b64(body: bytes | BinaryIO) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    if isinstance(body, bytes | bytearray | memoryview):
        digest.update(body)
    else:
        body.seek(0)
        while chunk := body.read(1024 * 1024):
            digest.update(chunk)
        body.seek(0)
    return base64.b64encode(digest.digest()).decode("ascii")


class PartSource(Protocol):
    def body(self) -> bytes | BinaryIO:
        """The part's bytes: a bytes object or a seekable file positioned anywhere."""


class MultipartSink:
    """One multipart upload of ``bucket/key``. Thread-safe for ``submit``/``upload_part``."""

    def __init__(self, client, bucket: str, key: str, *, upload_id: str | None = None,
                 threads: int = 3, retry: RetryPolicy = RetryPolicy(), content_md5: bool = True,
                 content_type: str = "application/zip") -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.upload_id = upload_id
        self.retry, self.content_md5, self.content_type = retry, content_md5, content_type
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3-part")
        self.stop = threading.Event()

    def create(self) -> str:
        response = with_retries("CreateMultipartUpload", lambda: self.client.create_multipart_upload(
            Bucket=self.bucket, Key=self.key, ContentType=self.content_type), self.retry)
        self.upload_id = response["UploadId"]
        return self.upload_id

    def parts_on_server(self) -> dict[int, UploadedPart]:
        """The parts S3 holds for this upload (raises UploadGone when it no longer exists)."""
        parts: dict[int, UploadedPart] = {}
        marker = 0
        while True:
            response = with_retries("ListParts", lambda m=marker: self.client.list_parts(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumberMarker=m),
                self.retry)
            for p in response.get("Parts", []):
                parts[p["PartNumber"]] = UploadedPart(p["PartNumber"], p["ETag"], p["Size"])
            if not response.get("IsTruncated"):
                return parts
            marker = response["NextPartNumberMarker"]

    def upload_part(self, number: int, part: PartSource, size: int) -> UploadedPart:
        if not 1 <= number <= MAX_PARTS:
            raise ValueError(f"part number {number} out of range")
        body = part.body()
        extra = {"ContentMD5": _md5_b64(body)} if self.content_md5 else {}

        def send():
            if hasattr(body, "seek"):
                body.seek(0)
            return self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                           PartNumber=number, Body=body, ContentLength=size, **extra)

        response = with_retries(f"UploadPart {number}", send, self.retry, self.stop)
        return UploadedPart(number, response["ETag"], size)

    def submit(self, number: int, part: PartSource, size: int) -> Future:
        return self._pool.submit(self.upload_part, number, part, size)

    def complete(self, parts: Sequence[UploadedPart]) -> str:
        """Complete with exactly ``parts`` (others on the server are discarded by S3)."""
        ordered = sorted(parts, key=lambda p: p.number)
        payload = {"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in ordered]}
        try:
            response = with_retries("CompleteMultipartUpload", lambda: self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload=payload),
                self.retry)
            return response.get("ETag", "")
        except UploadGone:
            # A retried Complete whose first attempt succeeded: accept it if the object is ours.
            etag = completed_object_etag(self.client, self.bucket, self.key, ordered)
            if etag:
                return etag
            raise

    def abort(self) -> None:
        self.stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if not self.upload_id:
            return
        try:
            with_retries("AbortMultipartUpload", lambda: self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id), self.retry)
        except UploadGone:
            pass

    def stop_uploads(self) -> None:
        """Let in-flight part uploads finish (or give up retrying), start no queued ones."""
        self.stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def abort_incomplete_uploads(client, bucket: str, key: str, *, keep: str | None = None,
                             matches: Callable[[str], object] | None = None,
                             retry: RetryPolicy = RetryPolicy()) -> int:
    """Abort every unfinished multipart upload of exactly ``key`` (or, with ``matches``, of every
    key under the prefix ``key`` that ``matches`` accepts) except the upload ``keep``.

    Cleans up after a worker killed between CreateMultipartUpload and recording the upload id.
    """
    accept = matches or (lambda k: k == key)
    aborted = 0
    kwargs = {"Bucket": bucket, "Prefix": key}
    while True:
        try:
            response = with_retries("ListMultipartUploads",
                                    lambda kw=dict(kwargs): client.list_multipart_uploads(**kw), retry)
        except UploadGone:  # rclone's answer when there is none under the prefix
            return aborted
        for upload in response.get("Uploads", []):
            if accept(upload["Key"]) and upload["UploadId"] != keep:
                try:
                    with_retries("AbortMultipartUpload", lambda u=upload: client.abort_multipart_upload(
                        Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]), retry)
                except UploadGone:
                    pass
                aborted += 1
        if not response.get("IsTruncated"):
            return aborted
        kwargs.update(KeyMarker=response.get("NextKeyMarker", ""),
                      UploadIdMarker=response.get("NextUploadIdMarker", ""))


def completed_object_etag(client, bucket: str, key: str, parts: Sequence[UploadedPart]) -> str:
    """The object's ETag if ``key`` is the completion of exactly ``parts``, else "".

    S3 gives the multipart ETag; stores that give a plain MD5 instead (rclone) are checked by
    size and by the MD5 of the last part's byte range against that part's ETag.
    """
    head = head_object(client, bucket, key)
    if not head:
        return ""
    etag = head.get("ETag", "")
    if etag == multipart_etag(parts):
        return etag
    size = sum(p.size for p in parts)
    last = parts[-1]
    if head.get("ContentLength") != size or len(last.etag.strip('"')) != 32:
        return ""
    body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={size - last.size}-{size - 1}")["Body"]
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in iter(lambda: body.read(1024 * 1024), b""):
        digest.update(chunk)
    return etag if digest.hexdigest() == last.etag.strip('"') else ""


def head_object(client, bucket: str, key: str) -> dict | None:
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def put_file(client, bucket: str, key: str, fileobj: BinaryIO, *, content_type: str,
             retry: RetryPolicy = RetryPolicy()) -> int:
    """Upload a (possibly large, temp-file backed) object; boto3 switches to multipart by itself
    and aborts its own upload on failure. Returns the size."""
    from boto3.s3.transfer import TransferConfig

    fileobj.seek(0, 2)
    size = fileobj.tell()

    def send():
        fileobj.seek(0)
        client.upload_fileobj(fileobj, bucket, key, ExtraArgs={"ContentType": content_type},
                              Config=TransferConfig(multipart_threshold=64 * 1024 * 1024,
                                                    multipart_chunksize=16 * 1024 * 1024,
                                                    max_concurrency=2))
    with_retries(f"upload of {key}", send, retry)
    return size

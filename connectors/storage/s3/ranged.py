"""Reading an S3 object in ranges: what a restore reads archives with (issue 13).

``RangedObject`` is a read-only, seekable file over one object, every read a ranged GetObject
through the bucket's own client — the one ``connectors.storage.s3.client.make_client`` built,
so every connection goes through the network policy and is signed with the tenant's keys or
role, never the portal's identity. Small reads (a ZIP's end records, its central directory
headers, a local header) are served from one read-ahead block; a large range (one entry's
bytes) is streamed by ``iter_range`` in chunks from a single GET, so memory holds one chunk.

``stage_object`` copies an object into a local temp file the same way (a PST is read from
disk: its B-trees jump all over the file). ``list_keys`` lists a prefix (split volumes).

Invariants: no read ever asks for the whole object unless the caller asks for every byte of
it; the object is pinned by the ETag of the first HEAD, and a GET that returns another ETag
(the object was replaced meanwhile) is an ``ObjectChanged`` error, not a silent mix of two
files. A stream cut mid-way resumes from the last byte received (transient errors retried
with the sink's ``RetryPolicy``).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from connectors.storage.s3.sink import RetryPolicy, S3Failure, head_object

log = logging.getLogger(__name__)

READ_AHEAD = 256 * 1024
CHUNK = 1024 * 1024


class ObjectMissing(S3Failure):
    """The key does not exist (or is not readable as an object)."""


class ObjectChanged(S3Failure):
    """The object was replaced while it was being read."""


class RangedObject(io.RawIOBase):
    """A seekable read-only file over ``bucket/key``; see the module docstring."""

    def __init__(self, client, bucket: str, key: str, *, size: int | None = None, etag: str | None = None,
                 read_ahead: int = READ_AHEAD, retry: RetryPolicy | None = None) -> None:
        super().__init__()
        self.client, self.bucket, self.key = client, bucket, key
        self.retry = retry or RetryPolicy(attempts=4, base_delay=0.2, max_delay=5.0)
        if size is None:
            head = self._with_retries("HeadObject", lambda: head_object(client, bucket, key))
            if head is None:
                raise ObjectMissing(f"{key} does not exist in the bucket {bucket}.")
            size, etag = int(head["ContentLength"]), head.get("ETag")
        self.size = size
        self.etag = etag
        self.read_ahead = max(1, read_ahead)
        self._pos = 0
        self._buf_start = 0
        self._buf = b""
        self.gets = 0  # GetObject requests made (tests check reads stay ranged)
        self.bytes_read = 0  # bytes those requests returned

    # ---- io.RawIOBase ------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, b) -> int:
        data = self.read_at(self._pos, len(b))
        n = len(data)
        b[:n] = data
        self._pos += n
        return n

    def readall(self) -> bytes:
        data = self.read_at(self._pos, self.size - self._pos)
        self._pos += len(data)
        return data

    # ---- ranges -------------------------------------------------------------------------------
    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer only at the end of the object)."""
        if offset < 0:
            raise ValueError("negative offset")
        length = max(0, min(length, self.size - offset))
        if not length:
            return b""
        end = offset + length
        if self._buf_start <= offset and end <= self._buf_start + len(self._buf):
            at = offset - self._buf_start
            return self._buf[at:at + length]
        if length >= self.read_ahead:
            return b"".join(self.iter_range(offset, length))
        block_end = min(self.size, offset + self.read_ahead)
        self._buf = b"".join(self.iter_range(offset, block_end - offset))
        self._buf_start = offset
        return self._buf[:length]

    def iter_range(self, offset: int, length: int, chunk: int = CHUNK) -> Iterator[bytes]:
        """The bytes ``offset`` .. ``offset+length-1`` in chunks of at most ``chunk``, from one
        GET (another from where it stopped if the stream breaks)."""
        end = min(self.size, offset + length)
        pos = offset
        failures = 0
        while pos < end:
            body = self._get(pos, end - 1)
            try:
                for piece in body.iter_chunks(chunk):
                    piece = piece[: end - pos]
                    if not piece:
                        continue
                    pos += len(piece)
                    self.bytes_read += len(piece)
                    yield piece
                    if pos >= end:
                        break
            except (OSError, *_read_errors()) as exc:  # a stream cut mid-way: resume from ``pos``
                failures += 1
                if failures >= self.retry.attempts:
                    raise S3Failure(f"S3 GetObject {self.key} failed: {exc}") from exc
                log.warning("reading %s broke at byte %d (%s); resuming", self.key, pos, exc)
                time.sleep(self.retry.delay(failures - 1))
                continue
            finally:
                body.close()
            if pos < end:  # the store sent fewer bytes than asked, without an error
                failures += 1
                if failures >= self.retry.attempts:
                    raise S3Failure(f"S3 GetObject {self.key}: the store keeps ending the range at byte {pos}")

    def _get(self, first: int, last: int):
        def get():
            return self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={first}-{last}")

        response = self._with_retries(f"GetObject {self.key}", get)
        self.gets += 1
        etag = response.get("ETag")
        if self.etag and etag and etag != self.etag:
            response["Body"].close()
            raise ObjectChanged(f"{self.key} was replaced while it was being read; start again.")
        return response["Body"]

    def _with_retries(self, what: str, fn):
        from connectors.storage.s3.sink import error_code, with_retries

        try:
            return with_retries(what, fn, self.retry)
        except S3Failure as exc:
            if error_code(exc.__cause__) in ("404", "NoSuchKey", "NotFound"):
                raise ObjectMissing(f"{self.key} does not exist in the bucket {self.bucket}.") from exc
            raise


def _read_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError

    return ReadTimeoutError, ResponseStreamingError, ProtocolError


def open_object(client, bucket: str, key: str, **kwargs) -> RangedObject:
    """``RangedObject(client, bucket, key)``; ``client`` must come from ``make_client``."""
    return RangedObject(client, bucket, key, **kwargs)


def stage_object(client, bucket: str, key: str, *, directory: str | os.PathLike | None = None,
                 chunk: int = CHUNK) -> Path:
    """Copy ``bucket/key`` into a new temp file, streamed chunk by chunk; the caller deletes it.

    The file is removed again if the copy fails, so a failed stage leaves nothing on disk.
    """
    obj = RangedObject(client, bucket, key)
    fd, name = tempfile.mkstemp(prefix="legacyflo-stage-", suffix=Path(key).suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            written = 0
            for piece in obj.iter_range(0, obj.size, chunk):
                out.write(piece)
                written += len(piece)
        if written != obj.size:
            raise S3Failure(f"{key}: staged {written} bytes of {obj.size}")
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def list_keys(client, bucket: str, prefix: str) -> list[tuple[str, int]]:
    """Every (key, size) under ``prefix``, in key order (ListObjectsV2, all pages)."""
    out: list[tuple[str, int]] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        out.extend((item["Key"], int(item["Size"])) for item in page.get("Contents", ()))
    return sorted(out)

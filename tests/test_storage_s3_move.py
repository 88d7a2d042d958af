"""Renaming an S3 object (the first ZIP volume): rclone for the common path, moto for the
multipart copy AWS needs beyond 5 GiB (rclone answers UploadPartCopy without copying)."""

from __future__ import annotations

import random
import uuid

import pytest

from connectors.storage.s3.move import move_object, multipart_copy
from connectors.storage.s3.sink import RetryPolicy, S3Failure
from tests.fixtures_engine import *  # noqa: F403
from tests.fixtures_engine import bucket_keys, multipart_uploads

RETRY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01)


def test_move_is_idempotent(s3):
    client = s3.client()
    body = random.Random(1).randbytes(300_000)
    client.put_object(Bucket=s3.bucket, Key="p/alice.zip", Body=body)
    move_object(client, s3.bucket, "p/alice.zip", "p/alice.part001.zip", len(body), retry=RETRY)
    assert bucket_keys(s3) == ["p/alice.part001.zip"]
    assert s3.path("p/alice.part001.zip").read_bytes() == body
    # a rerun after a kill that followed the delete finds the move done
    move_object(client, s3.bucket, "p/alice.zip", "p/alice.part001.zip", len(body), retry=RETRY)
    assert s3.path("p/alice.part001.zip").read_bytes() == body
    # ...but not when the target is not what was moved
    with pytest.raises(S3Failure, match="disappeared"):
        move_object(client, s3.bucket, "p/alice.zip", "p/alice.part001.zip", len(body) + 1, retry=RETRY)


def test_a_source_copied_but_not_deleted_is_moved_again(s3):
    client = s3.client()
    body = b"volume one" * 1000
    client.put_object(Bucket=s3.bucket, Key="p/alice.zip", Body=body)
    client.put_object(Bucket=s3.bucket, Key="p/alice.part001.zip", Body=body[:10])  # a copy cut short
    move_object(client, s3.bucket, "p/alice.zip", "p/alice.part001.zip", len(body), retry=RETRY)
    assert bucket_keys(s3) == ["p/alice.part001.zip"]
    assert s3.path("p/alice.part001.zip").read_bytes() == body


def test_multipart_copy_on_a_store_that_implements_upload_part_copy(moto):
    client = moto.client()
    bucket = "move-" + uuid.uuid4().hex[:12]
    client.create_bucket(Bucket=bucket)
    body = random.Random(2).randbytes(11 * 1024 * 1024)
    client.put_object(Bucket=bucket, Key="alice.zip", Body=body)
    multipart_copy(client, bucket, "alice.zip", "alice.part001.zip", len(body), retry=RETRY,
                   chunk_bytes=5 * 1024 * 1024)
    copied = client.get_object(Bucket=bucket, Key="alice.part001.zip")
    assert copied["Body"].read() == body
    assert copied["ETag"].endswith('-3"')  # three UploadPartCopy ranges, not one CopyObject
    assert multipart_uploads(client, bucket) == []

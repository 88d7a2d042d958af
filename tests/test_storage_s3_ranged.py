"""Ranged reads of S3 objects (connectors.storage.s3.ranged) on a real S3 server (rclone)."""

from __future__ import annotations

import io
import os

import pytest

from connectors.storage.s3.ranged import (
    ObjectChanged,
    ObjectMissing,
    RangedObject,
    list_keys,
    stage_object,
)
from tests.fixtures_engine import *  # noqa: F403


def put(s3, key: str, data: bytes) -> None:
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=data)


def test_reads_seeks_and_read_ahead_serve_small_reads_from_one_get(s3):
    data = os.urandom(300_000)
    put(s3, "obj.bin", data)
    obj = RangedObject(s3.client(), s3.bucket, "obj.bin", read_ahead=64 * 1024)
    assert obj.size == len(data)
    assert obj.read_at(10, 100) == data[10:110]
    assert obj.read_at(200, 50) == data[200:250]  # inside the read-ahead block
    assert obj.gets == 1
    obj.seek(-22, io.SEEK_END)
    assert obj.read(100) == data[-22:]
    assert obj.read(5) == b""
    obj.seek(1000)
    assert io.BufferedReader(obj).read(5000) == data[1000:6000]
    assert obj.read_at(len(data) + 5, 10) == b""


def test_a_large_range_streams_in_chunks_without_the_rest_of_the_object(s3):
    data = os.urandom(3 * 1024 * 1024)
    put(s3, "big.bin", data)
    obj = RangedObject(s3.client(), s3.bucket, "big.bin", read_ahead=64 * 1024)
    pieces = list(obj.iter_range(1024 * 1024, 1024 * 1024 + 7, chunk=256 * 1024))
    assert b"".join(pieces) == data[1024 * 1024:2 * 1024 * 1024 + 7]
    assert max(len(p) for p in pieces) <= 256 * 1024
    assert obj.gets == 1 and obj.bytes_read == 1024 * 1024 + 7


def test_a_missing_key_and_a_replaced_object_are_clear_errors(s3):
    with pytest.raises(ObjectMissing, match="nope.zip does not exist"):
        RangedObject(s3.client(), s3.bucket, "nope.zip")
    put(s3, "changes.bin", b"a" * 1000)
    obj = RangedObject(s3.client(), s3.bucket, "changes.bin", read_ahead=10)
    assert obj.read_at(0, 10) == b"a" * 10
    put(s3, "changes.bin", b"b" * 1000)
    with pytest.raises(ObjectChanged):
        obj.read_at(500, 10)


def test_stage_object_streams_into_a_temp_file(s3, tmp_path):
    data = os.urandom(2 * 1024 * 1024 + 3)
    put(s3, "archive.pst", data)
    path = stage_object(s3.client(), s3.bucket, "archive.pst", directory=tmp_path, chunk=64 * 1024)
    try:
        assert path.parent == tmp_path and path.suffix == ".pst"
        assert path.read_bytes() == data
    finally:
        path.unlink()
    with pytest.raises(ObjectMissing):
        stage_object(s3.client(), s3.bucket, "missing.pst", directory=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing left behind by the failed stage


def test_list_keys_lists_a_prefix_in_order(s3):
    for key in ("a/x.part002.zip", "a/x.part001.zip", "a/xy.zip", "b/x.zip"):
        put(s3, key, b"z")
    assert [k for k, _ in list_keys(s3.client(), s3.bucket, "a/x")] == [
        "a/x.part001.zip", "a/x.part002.zip", "a/xy.zip"]

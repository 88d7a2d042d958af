"""The one archive-key resolver (``connectors.archives.keys``) against a real S3 server (rclone):
files, split volumes, incremental series by base name, single runs, foreign ZIPs."""

from __future__ import annotations

import pytest

from connectors.archives.keys import ArchiveNotFound, resolve
from connectors.archives.zip.reader import resolve_volumes
from connectors.pipeline.restore_keys import resolve_archive


@pytest.fixture
def bucket(rclone, s3_bucket):
    client = rclone.client()
    for key in ("s/u.zip", "s/u.report.csv", "s/u.summary.json",
                "s/u.r0002.part001.zip", "s/u.r0002.part002.zip", "s/u.r0002.report.csv",
                "s/u.r0010.zip",  # runs 3..9 wrote nothing (nothing new, or failed)
                "s/user2.zip", "s/u.restore-abc.report.csv",
                "p/u.pst", "p/u.r0002.pst", "p/u.r0003.part001.pst", "p/u.r0003.part002.pst",
                "f/export.bin", "f/other.ZIP",
                "g/u.zip", "g/u.r0002.part001.zip", "g/u.r0002.part003.zip"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=key.encode())
    return client, s3_bucket


def keys(client, bucket, key, ext):
    return [v.key for v in resolve(client, bucket, key, ext)]


def test_a_series_base_name_gives_every_run_in_run_order(bucket):
    client, name = bucket
    series = ["s/u.zip", "s/u.r0002.part001.zip", "s/u.r0002.part002.zip", "s/u.r0010.zip"]
    assert keys(client, name, "s/u", "zip") == series
    assert [v.run for v in resolve(client, name, "s/u", "zip")] == [1, 2, 2, 10]
    assert resolve_archive(client, name, "s/u", "zip") == series
    assert [v.key for v in resolve_volumes(client, name, "s/u")] == series
    assert keys(client, name, "p/u", "pst") == ["p/u.pst", "p/u.r0002.pst", "p/u.r0003.part001.pst",
                                                "p/u.r0003.part002.pst"]


def test_a_single_run_is_still_restored_by_its_own_key(bucket):
    client, name = bucket
    assert keys(client, name, "s/u.zip", "zip") == ["s/u.zip"]
    assert keys(client, name, "s/u.r0002", "zip") == ["s/u.r0002.part001.zip", "s/u.r0002.part002.zip"]
    assert keys(client, name, "s/u.r0002.part002.zip", "zip") == ["s/u.r0002.part001.zip", "s/u.r0002.part002.zip"]
    assert keys(client, name, "s/u.r0010.zip", "zip") == ["s/u.r0010.zip"]
    assert keys(client, name, "p/u.r0002.pst", "pst") == ["p/u.r0002.pst"]
    assert keys(client, name, "s/user2", "zip") == ["s/user2.zip"]


def test_a_foreign_zip_is_accepted_under_any_name(bucket):
    client, name = bucket
    assert keys(client, name, "f/export.bin", "zip") == ["f/export.bin"]
    assert keys(client, name, "f/other.ZIP", "zip") == ["f/other.ZIP"]


def test_a_run_missing_a_volume_is_a_clear_error(bucket):
    client, name = bucket
    with pytest.raises(ArchiveNotFound, match=r"g/u\.r0002 \(run 2 of the series g/u\) misses volume\(s\) part002"):
        resolve(client, name, "g/u", "zip")
    with pytest.raises(ArchiveNotFound, match="No archive"):
        resolve(client, name, "s/us", "zip")  # a prefix of a name is no archive
    with pytest.raises(ArchiveNotFound, match="No archive"):
        resolve(client, name, "s/u", "pst")

"""Where an archive goes: a bucket, its region, endpoint and credentials, and a boto3 client for it."""

from __future__ import annotations

from dataclasses import dataclass, field

import boto3
from botocore.config import Config


@dataclass(frozen=True)
class S3Target:
    bucket: str
    region: str
    endpoint_url: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    uses_keys: bool = True  # False: the portal's own credentials (boto3's default chain)


def make_s3_client(target: S3Target, *, connect_timeout: float = 10, read_timeout: float = 120,
                   max_attempts: int = 5, max_pool_connections: int = 10):
    config = Config(
        region_name=target.region or None,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=max_pool_connections,
        s3={"addressing_style": "path" if target.endpoint_url else "auto"},
        signature_version="s3v4",
        # S3-compatible stores often lack the newer default checksums (and send whole-object
        # checksums with ranged GETs): only use them where S3 requires them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    kwargs = {"config": config, "endpoint_url": target.endpoint_url or None}
    if target.uses_keys:
        kwargs.update(aws_access_key_id=target.access_key_id, aws_secret_access_key=target.secret_access_key)
    return boto3.session.Session().client("s3", **kwargs)

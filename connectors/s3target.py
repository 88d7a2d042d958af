"""Where an archive goes: a bucket, its region, endpoint and credentials (clients: ``connectors.s3client``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class S3Target:
    bucket: str
    region: str
    endpoint_url: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    uses_keys: bool = True  # False: the portal's own credentials (boto3's default chain)


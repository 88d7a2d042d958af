"""Where an archive goes: a bucket, its region, endpoint and credentials (clients: ``connectors.storage.s3.client``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.storage.awsrole import RoleAccess


@dataclass(frozen=True)
class S3Target:
    """A bucket and how to reach it: an access key pair, or (``role``) a role the portal assumes.

    There is no third way: the portal's own AWS identity never signs an S3 request. A target
    with a role has no ``endpoint_url`` (role credentials go to AWS only; ``make_client`` refuses).
    """

    bucket: str
    region: str
    endpoint_url: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    role: RoleAccess | None = None

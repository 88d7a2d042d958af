"""boto3 S3 clients for exports: endpoint, region, keys, timeouts and retries in one place.

Builds on ``connectors.storage.s3.target.S3Target`` (the bucket description the portal stores) and adds
what a long transfer needs:
- the network policy on custom endpoints (no SSRF through a user-typed endpoint URL): every
  connection to the endpoint resolves it once, checks every address and connects to a checked
  one (``connectors.storage.s3.connect``), so a DNS answer that changes cannot redirect it;
- botocore "standard" retries (5xx, throttling, timeouts), on top of which the sink adds its
  own retries around UploadPart / CompleteMultipartUpload;
- request checksums only when an API requires them: S3-compatible stores (rclone, MinIO,
  Ceph...) do not all understand the flexible-checksum trailers newer botocore sends by
  default; parts can carry Content-MD5 instead (``Tuning.content_md5``);
- unsigned payloads, as botocore already does over HTTPS: over plain HTTP (local stores) it
  would otherwise SHA-256 every part just to sign it;
- a connection pool large enough for the concurrent part uploads;
- explicit credentials, always: the tenant's access key pair, or the temporary credentials of
  the tenant's role (``connectors.storage.awsrole``), which go to AWS's own endpoints only. Never
  boto3's default chain, which would sign with the portal's own identity.
"""

from __future__ import annotations

import threading

import boto3
from botocore.config import Config

from connectors.model import ConnectionFailed
from connectors.netpolicy import url_host_port
from connectors.storage.awsrole import role_session
from connectors.storage.s3.connect import check_every_connection
from connectors.storage.s3.target import S3Target


class NoCredentials(ConnectionFailed):
    """The target cannot be reached without sending the portal's own AWS identity somewhere."""


_SHARED: boto3.session.Session | None = None
_SHARED_LOCK = threading.Lock()


def _shared_session() -> boto3.session.Session:
    """One credential-less session per process, whose loaded service models every key-pair client
    reuses: a session of its own per client reloads them (hundreds of ms per request). Its own
    credentials are never used: every client it makes is given the bucket's key pair."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = boto3.session.Session()
        return _SHARED


def warm_up() -> None:
    """Load the S3 service model into the shared session (a worker's parent does it once; the
    work horses it forks inherit it)."""
    make_client(S3Target("warm-up", "us-east-1", "http://127.0.0.1:9", "warm-up", "warm-up"), allow_private=True)


def _credentials_session(target: S3Target) -> tuple[boto3.session.Session, dict]:
    """The session whose credentials sign this target's requests, and the explicit credentials to
    give its client; refuses to fall back to the portal's."""
    if target.role is not None:
        if target.endpoint_url:
            raise NoCredentials(
                f"A bucket reached through a role uses AWS S3's own endpoints; the portal does not send "
                f"AWS credentials to {target.endpoint_url}.")
        if not target.role.role_arn:
            raise NoCredentials(f"The bucket {target.bucket} has no role ARN: enter one on its page and verify it.")
        return role_session(target.role, region=target.region), {}
    if not (target.access_key_id and target.secret_access_key):
        raise NoCredentials(f"The bucket {target.bucket} has no access key pair.")
    return _shared_session(), {"aws_access_key_id": target.access_key_id,
                               "aws_secret_access_key": target.secret_access_key}


def make_client(target: S3Target, *, allow_private: bool = False, connect_timeout: float = 10,
                read_timeout: float = 120, max_attempts: int = 4, max_pool_connections: int = 16):
    """A thread-safe boto3 S3 client for ``target`` (one per export; clients are cheap to share).

    A custom endpoint is checked when a connection is made, not here: a policy refusal is the
    error of the first request (botocore's HTTPClientError, with the reason).
    """
    session, credentials = _credentials_session(target)  # first: nothing is resolved or sent before this passes
    if target.endpoint_url:
        url_host_port(target.endpoint_url)  # ConnectionFailed for a URL that is not http(s)
    config = Config(
        region_name=target.region or None,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=max_pool_connections,
        s3={"addressing_style": "path" if target.endpoint_url else "auto",
            "payload_signing_enabled": False},
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        tcp_keepalive=True,
    )
    with _SHARED_LOCK:  # a session is not thread-safe while it makes clients
        client = session.client("s3", config=config, endpoint_url=target.endpoint_url or None, **credentials)
    if target.endpoint_url and not allow_private:
        check_every_connection(client)
    return client

"""Reaching a customer's bucket through a role in the customer's own AWS account (STS AssumeRole).

The portal's own AWS identity (boto3's default chain: instance role, environment...) is used for
one thing only: calling ``sts:AssumeRole`` on the role the tenant named, with the ExternalId the
portal generated for that tenant. Every S3 call is signed with the role's temporary credentials,
so the portal's identity alone reaches no customer's bucket, and a tenant who names another
customer's role is refused by that role's trust policy (its ExternalId is not theirs).

The temporary credentials are botocore ``RefreshableCredentials``: a client keeps assuming the
role again shortly before each session expires, so a transfer that runs for hours does not fail
when the first one-hour session ends.

Invariant: role credentials are only ever sent to AWS's own endpoints (or to the endpoints the
operator configured for the whole portal with botocore's ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL_STS``), never to an endpoint URL a tenant typed: ``connectors.storage.s3.client``
refuses a target that has both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import boto3
from botocore.config import Config
from botocore.credentials import (
    CredentialProvider,
    CredentialResolver,
    DeferredRefreshableCredentials,
)
from botocore.session import Session as BotocoreSession

from connectors.model import ConnectionFailed

ROLE_ARN = re.compile(r"^arn:aws(-cn|-us-gov)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}$", re.ASCII)
_SESSION_NAME_CHARS = re.compile(r"[^\w+=,.@-]", re.ASCII)
DEFAULT_SESSION_SECONDS = 3600  # every role allows one hour (MaxSessionDuration's minimum)
_STS_CONFIG = Config(connect_timeout=10, read_timeout=30, retries={"total_max_attempts": 4, "mode": "standard"})


class NoPortalIdentity(ConnectionFailed):
    """The portal has no AWS credentials of its own to assume roles with (an operator's fix)."""


@dataclass(frozen=True)
class RoleAccess:
    """The role the portal assumes for one bucket, with the ExternalId of the bucket's tenant."""

    role_arn: str
    external_id: str = field(repr=False)
    session_name: str = "legacyflo"
    session_seconds: int = DEFAULT_SESSION_SECONDS


def session_name(tenant_slug: str, bucket_name: str) -> str:
    """``legacyflo-TENANT-BUCKET`` within STS's limits: the customer's CloudTrail shows who acted."""
    name = f"{f'legacyflo-{tenant_slug}'[:32]}-{bucket_name}"
    return _SESSION_NAME_CHARS.sub("-", name)[:64]


def role_arn_problem(arn: str) -> str | None:
    if not ROLE_ARN.match(arn):
        return "Enter the ARN of an IAM role, like arn:aws:iam::123456789012:role/legacyflo-backups."
    return None


def _sts_client(region: str):
    """An STS client signed with the portal's own identity (the only client that ever is)."""
    session = BotocoreSession()
    if session.get_credentials() is None:
        raise NoPortalIdentity(
            "The portal has no AWS credentials of its own, so it cannot assume roles "
            "(the operator gives it an instance role, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).")
    return session.create_client("sts", region_name=region or None, config=_STS_CONFIG)


def _assume(sts, role: RoleAccess, external_id: str) -> dict:
    return sts.assume_role(RoleArn=role.role_arn, RoleSessionName=role.session_name, ExternalId=external_id,
                           DurationSeconds=role.session_seconds)


def assume_role(role: RoleAccess, *, region: str, external_id: str | None = None) -> dict:
    """One AssumeRole call; ``external_id`` overrides the role's own (the verification probe)."""
    return _assume(_sts_client(region), role, role.external_id if external_id is None else external_id)


def role_credentials(role: RoleAccess, *, region: str,
                     clock: Callable[[], datetime] | None = None) -> DeferredRefreshableCredentials:
    """Credentials that assume ``role`` when first used and again before each session expires
    (botocore refreshes from 15 minutes before the end, and blocks for it from 10 minutes)."""
    sts = _sts_client(region)

    def fetch() -> dict:
        creds = _assume(sts, role, role.external_id)["Credentials"]
        return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"], "expiry_time": creds["Expiration"].isoformat()}

    kwargs = {"time_fetcher": clock} if clock is not None else {}
    return DeferredRefreshableCredentials(refresh_using=fetch, method="legacyflo-assume-role", **kwargs)


class _Fixed(CredentialProvider):
    METHOD = "legacyflo-assume-role"

    def __init__(self, credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self):
        return self._credentials


def role_session(role: RoleAccess, *, region: str,
                 clock: Callable[[], datetime] | None = None) -> boto3.session.Session:
    """A boto3 session whose only credentials are ``role``'s (no fallback to the default chain)."""
    botocore_session = BotocoreSession()
    botocore_session.register_component(
        "credential_provider", CredentialResolver([_Fixed(role_credentials(role, region=region, clock=clock))]))
    return boto3.session.Session(botocore_session=botocore_session, region_name=region or None)

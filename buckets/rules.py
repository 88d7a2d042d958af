"""Static rules for bucket registration: names, regions, endpoint URLs, roles."""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urlsplit

import boto3

from connectors.storage.awsrole import role_arn_problem

_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_REGION_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def bucket_name_problem(name: str) -> str | None:
    """Why ``name`` breaks S3's general-purpose bucket naming rules, or None."""
    if not 3 <= len(name) <= 63:
        return "A bucket name has 3 to 63 characters."
    if not _NAME.match(name):
        return ("A bucket name uses only lowercase letters, digits, dots and hyphens, and starts and "
                "ends with a letter or digit.")
    if ".." in name or ".-" in name or "-." in name:
        return "A bucket name cannot have two dots in a row, or a dot next to a hyphen."
    if _IPV4.match(name):
        return "A bucket name cannot look like an IP address."
    for prefix in ("xn--", "sthree-", "amzn-s3-demo-"):
        if name.startswith(prefix):
            return f"A bucket name cannot start with {prefix!r}."
    for suffix in ("-s3alias", "--ol-s3", "--x-s3", ".mrap", "--table-s3"):
        if name.endswith(suffix):
            return f"A bucket name cannot end with {suffix!r}."
    return None


@lru_cache(maxsize=1)
def aws_regions() -> tuple[str, ...]:
    """Every S3 region botocore knows, across partitions (aws, aws-cn, aws-us-gov, ...)."""
    session = boto3.session.Session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("s3", partition_name=partition))
    return tuple(sorted(regions))


def region_problem(region: str, *, has_endpoint: bool) -> str | None:
    if not region:
        return "Choose the bucket's region."
    if has_endpoint:
        return None if _REGION_NAME.match(region) else "A region name uses lowercase letters, digits and hyphens."
    if region not in aws_regions():
        return f"{region!r} is not an AWS region. Pick one from the list (for example eu-west-1)."
    return None


_AWS_S3_HOST = re.compile(
    r"^s3(?:\.dualstack)?(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com(?P<cn>\.cn)?$", re.ASCII)


def is_aws_s3_endpoint(url: str) -> bool:
    """Whether ``url`` is AWS S3's own regional or global endpoint, and nothing that looks like it.

    Exactly ``https://s3[.dualstack].REGION.amazonaws.com[.cn]`` (or ``s3-REGION``, or the global
    ``s3.amazonaws.com``) for a region botocore knows, with no user, port, path or query: a name
    such as ``s3.amazonaws.com.example.net``, ``evils3.amazonaws.com``, ``…amazonaws.com@host`` or
    one spelled with look-alike Unicode letters is not AWS.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return False
    host = parts.hostname or ""
    if (parts.scheme.lower() != "https" or parts.username is not None or parts.password is not None
            or port not in (None, 443) or parts.path not in ("", "/") or parts.query or parts.fragment
            or not host.isascii()):
        return False
    match = _AWS_S3_HOST.match(host)
    if match is None:
        return False
    region = match.group("region")
    if region is None:
        return not match.group("cn")
    return region in aws_regions() and bool(match.group("cn")) == region.startswith("cn-")


def normalise_endpoint(url: str) -> str:
    """One spelling per endpoint, so that "one registration per bucket" holds: AWS S3's own
    endpoints become "" (AWS S3, the region's endpoint), others get a lowercase scheme and host,
    no default port and no trailing slash."""
    url = url.strip().rstrip("/")
    if not url or is_aws_s3_endpoint(url):
        return ""
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return url
    if not host:
        return url
    scheme = parts.scheme.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, {"https": 443, "http": 80}.get(scheme)) else f"{host}:{port}"
    if parts.username or parts.password:
        netloc = f"{parts.netloc.rsplit('@', 1)[0]}@{netloc}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def role_mode_problems(*, endpoint_url: str, role_arn: str, principal: str) -> dict[str, str]:
    """Why a bucket cannot be reached through a role, per form field (empty: it can).

    A role bucket has no endpoint URL (AWS S3's own endpoints are normalised to none first):
    the portal sends what its own identity signs (the AssumeRole call and the role's
    credentials) only to AWS, never to a host a tenant typed.
    """
    problems: dict[str, str] = {}
    if endpoint_url:
        problems["endpoint_url"] = (
            "A role works only with AWS S3's own endpoints: leave the endpoint URL empty (the portal uses the "
            "region's AWS endpoint). For other S3-compatible stores, use an access key pair.")
    if not role_arn:
        problems["role_arn"] = "Enter the ARN of the role in your AWS account that the portal assumes."
    elif problem := role_arn_problem(role_arn):
        problems["role_arn"] = problem
    if not principal:
        problems["auth_mode"] = ("This portal is not set up to assume roles (its operator sets "
                                 "LEGACYFLO_AWS_PRINCIPAL_ARN); use an access key pair.")
    return problems

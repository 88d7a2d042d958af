"""Static rules for bucket registration: names, regions, endpoint URLs."""

from __future__ import annotations

import re
from functools import lru_cache

import boto3

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

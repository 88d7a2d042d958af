"""Bucket verification: every check the portal runs before it writes a byte to a bucket.

The same function serves the web "Verify" button and ``manage.py bucket_register``. Each
check reports pass / fail / warn / skip with a message and, when it fails, the fix. A bucket is
verified when no check failed; warnings are advice (public access, no default encryption).

``verify_bucket`` never raises for what the endpoint does: whatever it answers (an error, an
empty or non-XML body, XML of another shape, a refused address, nothing at all), the probe that
got the answer becomes a failed (or, for advice, skipped) check with the reason.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import asdict, dataclass
from xml.etree.ElementTree import ParseError

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from buckets.rules import bucket_name_problem, region_problem
from connectors.model import ConnectionFailed
from connectors.netpolicy import PrivateAddressRefused, ensure_public_url
from connectors.storage.awsrole import NoPortalIdentity, assume_role, role_arn_problem
from connectors.storage.s3.client import NoCredentials, make_client
from connectors.storage.s3.target import S3Target

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
PROBE_PREFIX = ".legacyflo-probe/"


@dataclass
class Check:
    key: str
    label: str
    status: str
    message: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "") or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _bucket_region_header(exc: ClientError) -> str | None:
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return headers.get("x-amz-bucket-region") or exc.response.get("Error", {}).get("Region")


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip().rstrip(":")
    if isinstance(exc, ParseError | ResponseParserError):
        return f"the answer is not an S3 response ({type(exc).__name__}: {str(exc)[:200]})"
    if isinstance(exc, ConnectionFailed):
        return str(exc)
    if isinstance(exc, KeyError | TypeError | AttributeError | ValueError):
        return f"the answer does not have the shape of an S3 response ({type(exc).__name__}: {str(exc)[:200]})"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _normalise_location(value: str | None) -> str:
    # GetBucketLocation answers None for us-east-1 and the legacy "EU" for eu-west-1.
    if not value:
        return "us-east-1"
    return "eu-west-1" if value == "EU" else value


def verify_bucket(target: S3Target, *, purpose_write: bool, purpose_read: bool, allow_private: bool,
                  principal_arn: str = "") -> list[Check]:
    """Run every check in order; stop early only when later checks cannot mean anything."""
    checks: list[Check] = []

    problem = bucket_name_problem(target.bucket)
    checks.append(Check("name", "Bucket name", FAIL if problem else PASS, problem or "Follows the S3 naming rules.",
                        "Rename the bucket or correct the name you typed." if problem else ""))
    problem = region_problem(target.region, has_endpoint=bool(target.endpoint_url))
    checks.append(Check("region", "Region", FAIL if problem else PASS, problem or f"{target.region} is a valid region.",
                        "Choose the region the bucket was created in." if problem else ""))
    if target.role is not None and target.endpoint_url:
        checks.append(Check("endpoint", "Endpoint", FAIL,
                            f"A bucket reached through a role uses AWS S3's own endpoints; the portal does not send "
                            f"AWS credentials to {target.endpoint_url}.",
                            "Register the bucket again without an endpoint URL, or use an access key pair for "
                            "S3-compatible stores."))
    elif target.endpoint_url:
        try:
            ensure_public_url(target.endpoint_url, allow_private=allow_private)
            checks.append(Check("endpoint", "Endpoint", PASS, f"{target.endpoint_url} is reachable by policy."))
        except ConnectionFailed as exc:
            checks.append(Check("endpoint", "Endpoint", FAIL, str(exc), "Use a public S3 endpoint URL."))
    if target.role is None and not (target.access_key_id and target.secret_access_key):
        checks.append(Check("credentials", "Credentials", FAIL, "The access key id or secret is missing.",
                            "Enter both the access key id and the secret access key."))
    if any(c.status == FAIL for c in checks):
        return checks
    if target.role is not None:
        checks.extend(_role_checks(target, principal_arn))
        if any(c.status == FAIL for c in checks):
            return checks  # nothing is sent to a bucket before its role has proven to be this tenant's

    try:
        client = make_client(target, allow_private=allow_private, connect_timeout=5, read_timeout=20, max_attempts=2)
    except NoCredentials as exc:
        checks.append(Check("credentials", "Credentials", FAIL, str(exc), "Ask the portal's operator."))
        return checks
    except Exception as exc:  # noqa: BLE001 - e.g. botocore refusing the endpoint URL's form
        checks.append(Check("endpoint", "Endpoint", FAIL, f"No S3 client can use this endpoint: {_describe(exc)}",
                            "Check the endpoint URL."))
        return checks

    # Location: does the bucket exist, and is it where the user said?
    try:
        location = client.get_bucket_location(Bucket=target.bucket).get("LocationConstraint")
        actual = _normalise_location(location)
        if target.endpoint_url and not location:
            checks.append(Check("location", "Bucket location", PASS,
                                "The bucket exists; this store does not report a region."))
        elif actual != target.region:
            checks.append(Check("location", "Bucket location", FAIL,
                                f"The bucket {target.bucket} is in {actual}, not in {target.region}.",
                                f"Change the region to {actual}."))
            return checks
        else:
            checks.append(Check("location", "Bucket location", PASS, f"The bucket exists in {actual}."))
    except ClientError as exc:
        code = _error_code(exc)
        actual = _bucket_region_header(exc)
        if code in ("NoSuchBucket", "404"):
            checks.append(Check("location", "Bucket location", FAIL, f"There is no bucket named {target.bucket}.",
                                "Create the bucket first, or correct its name."))
            return checks
        if actual and actual != target.region:
            checks.append(Check("location", "Bucket location", FAIL,
                                f"The bucket {target.bucket} is in {actual}, not in {target.region}.",
                                f"Change the region to {actual}."))
            return checks
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
            checks.append(Check("location", "Bucket location", FAIL, f"The credentials were refused ({_describe(exc)}).",
                                "Check the access key id and secret access key."))
            return checks
        checks.append(Check("location", "Bucket location", WARN,
                            f"The bucket's region could not be read ({_describe(exc)}).",
                            "Allow s3:GetBucketLocation so the portal can confirm the region."))
    except PrivateAddressRefused as exc:
        checks.append(Check("location", "Bucket location", FAIL, str(exc), "Use a public S3 endpoint URL."))
        return checks
    except (ParseError, ResponseParserError) as exc:
        checks.append(Check("location", "Bucket location", FAIL,
                            f"The endpoint answered, but {_describe(exc)}.",
                            "Check the endpoint URL: it must be the address of an S3 API."))
        return checks
    except Exception as exc:  # noqa: BLE001 - any other answer (or none) fails the check
        checks.append(Check("location", "Bucket location", FAIL, f"The S3 endpoint cannot be reached: {_describe(exc)}",
                            "Check the endpoint URL and that the store is running."))
        return checks

    # List.
    first_key = None
    try:
        listing = client.list_objects_v2(Bucket=target.bucket, MaxKeys=5)
        first_key = next((o["Key"] for o in listing.get("Contents", []) if not o["Key"].startswith(PROBE_PREFIX)), None)
        checks.append(Check("list", "List objects", PASS, "The portal can list the bucket."))
    except Exception as exc:  # noqa: BLE001 - any answer is a failed check with its reason
        checks.append(Check("list", "List objects", FAIL, f"Listing failed: {_describe(exc)}",
                            "Grant s3:ListBucket on the bucket (see the policy below)."))

    if purpose_write:
        key = f"{PROBE_PREFIX}{uuid.uuid4()}"
        try:
            client.put_object(Bucket=target.bucket, Key=key, Body=b"LegacyFlo write probe\n")
            try:
                client.delete_object(Bucket=target.bucket, Key=key)
                checks.append(Check("write", "Write probe", PASS, "The portal can write and delete objects."))
            except Exception as exc:  # noqa: BLE001
                checks.append(Check("write", "Write probe", WARN,
                                    f"Writing works but deleting the probe {key} failed: {_describe(exc)}",
                                    "Grant s3:DeleteObject, or delete the probe object by hand."))
        except Exception as exc:  # noqa: BLE001
            hint = "Grant s3:PutObject (see the policy below)."
            if "kms" in _describe(exc).lower():
                hint = "The bucket encrypts with a KMS key: grant kms:GenerateDataKey on that key (KMS policy below)."
            checks.append(Check("write", "Write probe", FAIL, f"Writing failed: {_describe(exc)}", hint))

    if purpose_read:
        if first_key is None:
            checks.append(Check("read", "Read probe", SKIP if any(c.key == "list" and c.status == PASS for c in checks) else FAIL,
                                "The bucket holds no archive yet, so reading could not be proven.",
                                "Read access is checked again when a restore starts."))
        else:
            try:
                client.get_object(Bucket=target.bucket, Key=first_key, Range="bytes=0-0")["Body"].read()
                checks.append(Check("read", "Read probe", PASS, "The portal can read objects."))
            except Exception as exc:  # noqa: BLE001
                checks.append(Check("read", "Read probe", FAIL, f"Reading {first_key} failed: {_describe(exc)}",
                                    "Grant s3:GetObject (see the policy below)."))

    checks.append(_public_access_check(client, target))
    checks.append(_encryption_check(client, target))
    return checks


def _role_checks(target: S3Target, principal_arn: str) -> list[Check]:
    """Can the portal assume the role with this tenant's ExternalId, and *only* with it?

    The second AssumeRole, with an ExternalId nobody has, must be refused: if it is not, the
    role's trust policy does not check the ExternalId and any tenant could name this role.
    """
    role, label = target.role, "Role"
    if not role.role_arn:
        return [Check("role", label, FAIL,
                      "This bucket has no role to assume. The portal no longer reaches buckets with its own AWS "
                      "identity (another tenant could have registered your bucket and written to it).",
                      "Create a role in your AWS account with the trust and permissions policies shown on this "
                      "page, enter its ARN under Role, and verify again.")]
    problem = role_arn_problem(role.role_arn)
    if problem:
        return [Check("role", label, FAIL, problem, "Copy the ARN from the role's page in the IAM console.")]
    principal = principal_arn or "the portal's AWS identity"
    trust_fix = (f"Open the role in IAM (Roles → Trust relationships) and paste the trust policy shown below: it "
                 f"must allow {principal} to call sts:AssumeRole with the condition sts:ExternalId = "
                 f"{role.external_id}. Check the role ARN too.")
    try:
        assumed = assume_role(role, region=target.region)["AssumedRoleUser"]["Arn"]
    except NoPortalIdentity as exc:
        return [Check("role", label, FAIL, str(exc), "Ask the portal's operator.")]
    except ClientError as exc:
        code = _error_code(exc)
        if code in ("InvalidClientTokenId", "ExpiredToken", "SignatureDoesNotMatch"):
            return [Check("role", label, FAIL, f"AWS refused the portal's own credentials ({_describe(exc)}).",
                          "Ask the portal's operator.")]
        return [Check("role", label, FAIL, f"The portal may not assume {role.role_arn} ({_describe(exc)}).",
                      trust_fix)]
    except BotoCoreError as exc:
        return [Check("role", label, FAIL, f"AWS STS cannot be reached: {exc}", "Ask the portal's operator.")]
    checks = [Check("role", label, PASS, f"The portal assumed {assumed} with this organisation's ExternalId.")]
    try:
        assume_role(role, region=target.region, external_id=f"legacyflo-probe-{secrets.token_hex(16)}")
        checks.append(Check("external_id", "ExternalId", FAIL,
                            "The role can be assumed with an ExternalId that is not this organisation's, so other "
                            "tenants of this portal could use it too.",
                            f'Add the condition "StringEquals": {{"sts:ExternalId": "{role.external_id}"}} to the '
                            "role's trust policy (shown below), then verify again."))
    except ClientError as exc:
        if _error_code(exc) == "AccessDenied":
            checks.append(Check("external_id", "ExternalId", PASS,
                                "The role refuses other ExternalIds: no other tenant of this portal can use it."))
        else:
            checks.append(Check("external_id", "ExternalId", WARN,
                                f"Whether the role requires the ExternalId could not be checked ({_describe(exc)}).",
                                "Make sure the trust policy has the sts:ExternalId condition shown below."))
    except (BotoCoreError, ConnectionFailed) as exc:
        checks.append(Check("external_id", "ExternalId", WARN,
                            f"Whether the role requires the ExternalId could not be checked ({exc}).",
                            "Make sure the trust policy has the sts:ExternalId condition shown below."))
    return checks


def _public_access_check(client, target: S3Target) -> Check:
    label = "Public access"
    try:
        status = client.get_bucket_policy_status(Bucket=target.bucket).get("PolicyStatus", {})
        if status.get("IsPublic"):
            return Check("public", label, WARN, "The bucket policy makes this bucket public: anyone could read mail archives.",
                         "Remove the public statements and turn on Block Public Access.")
    except ClientError as exc:
        if _error_code(exc) not in ("NoSuchBucketPolicy",):
            if _error_code(exc) in ("NotImplemented", "501", "MethodNotAllowed", "405"):
                return Check("public", label, SKIP, "This store does not report public access.")
    except Exception:  # noqa: BLE001 - advice only: an unreadable answer is not a verdict
        pass
    try:
        acl = client.get_bucket_acl(Bucket=target.bucket)
        for grant in acl.get("Grants", []):
            uri = grant.get("Grantee", {}).get("URI", "")
            if uri.endswith("/global/AllUsers") or uri.endswith("/global/AuthenticatedUsers"):
                return Check("public", label, WARN, "The bucket ACL grants access to everyone.",
                             "Remove the AllUsers / AuthenticatedUsers grants and turn on Block Public Access.")
    except Exception:  # noqa: BLE001
        pass
    try:
        block = client.get_public_access_block(Bucket=target.bucket).get("PublicAccessBlockConfiguration")
        if not block:
            return Check("public", label, SKIP, "This store does not report public access settings.")
        if all(block.get(k) for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")):
            return Check("public", label, PASS, "Block Public Access is on.")
        return Check("public", label, WARN, "Block Public Access is only partly on.",
                     "Turn on all four Block Public Access settings for this bucket.")
    except ClientError as exc:
        if _error_code(exc) == "NoSuchPublicAccessBlockConfiguration":
            return Check("public", label, WARN, "The bucket is not public, but Block Public Access is off.",
                         "Turn on Block Public Access for this bucket.")
        return Check("public", label, SKIP, f"Public access could not be checked ({_describe(exc)}).")
    except Exception as exc:  # noqa: BLE001
        return Check("public", label, SKIP, f"Public access could not be checked ({_describe(exc)}).")


def _encryption_check(client, target: S3Target) -> Check:
    label = "Default encryption"
    try:
        answer = client.get_bucket_encryption(Bucket=target.bucket)
        rules = answer.get("ServerSideEncryptionConfiguration", {}).get("Rules")
        if not rules:
            return Check("encryption", label, SKIP, "This store does not report default encryption.")
        algos = sorted({r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm", "") for r in rules} - {""})
        return Check("encryption", label, PASS, f"Objects are encrypted at rest ({', '.join(algos) or 'on'}).")
    except ClientError as exc:
        if _error_code(exc) == "ServerSideEncryptionConfigurationNotFoundError":
            return Check("encryption", label, WARN, "The bucket has no default encryption.",
                         "Turn on default encryption (SSE-S3 or SSE-KMS) for the bucket.")
        return Check("encryption", label, SKIP, f"Encryption could not be checked ({_describe(exc)}).")
    except Exception as exc:  # noqa: BLE001
        return Check("encryption", label, SKIP, f"Encryption could not be checked ({_describe(exc)}).")

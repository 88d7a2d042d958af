"""The exact policy JSON an administrator pastes so the portal can use a bucket.

A role bucket needs two documents on the role in the customer's account: the *trust policy*
(only the portal's identity may assume the role, and only with this tenant's ExternalId) and
the *permissions policy* (what the role may do with the bucket). A key bucket needs the same
permissions on the IAM user that owns the key. Neither has a Principal: nothing is granted to
the portal's identity itself. The KMS variant is a key-policy statement for buckets encrypted
with a customer-managed key; it names whoever signs the requests (the role, or the key's user).
"""

from __future__ import annotations

import json

READ_BUCKET = ["s3:ListBucket", "s3:GetBucketLocation"]
READ_OBJECTS = ["s3:GetObject"]
WRITE_BUCKET = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
WRITE_OBJECTS = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                 "s3:ListMultipartUploadParts"]
KMS_ACTIONS = ["kms:GenerateDataKey", "kms:Decrypt", "kms:Encrypt", "kms:DescribeKey"]
PRINCIPAL_PLACEHOLDER = "arn:aws:iam::PORTAL-ACCOUNT-ID:role/legacyflo (the operator sets LEGACYFLO_AWS_PRINCIPAL_ARN)"


def _statement(sid: str, actions: list[str], resource: str) -> dict:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resource}


def policy_document(bucket: str, *, access: str) -> str:
    """The permissions policy; ``access`` is "read", "write" or "readwrite"."""
    arn = f"arn:aws:s3:::{bucket}"
    statements = []
    if access in ("write", "readwrite"):
        statements.append(_statement("LegacyFloWriteBucket", WRITE_BUCKET, arn))
        statements.append(_statement("LegacyFloWriteObjects", WRITE_OBJECTS, f"{arn}/*"))
    if access in ("read", "readwrite"):
        statements.append(_statement("LegacyFloReadBucket", READ_BUCKET, arn))
        statements.append(_statement("LegacyFloReadObjects", READ_OBJECTS, f"{arn}/*"))
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=2)


def trust_policy(*, principal: str, external_id: str) -> str:
    """The role's trust policy: the portal's identity, and only with this tenant's ExternalId."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "LegacyFloAssumeRole",
        "Effect": "Allow",
        "Principal": {"AWS": principal or PRINCIPAL_PLACEHOLDER},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
    }]}, indent=2)


def kms_key_policy_statement(principal: str | None) -> str:
    statement = {
        "Sid": "LegacyFloUseKey",
        "Effect": "Allow",
        "Principal": {"AWS": principal or "arn:aws:iam::ACCOUNT-ID:user/legacyflo"},
        "Action": KMS_ACTIONS,
        "Resource": "*",
    }
    return json.dumps(statement, indent=2)


def lifecycle_rule() -> str:
    """Advice: let S3 clean up multipart uploads of a worker that died and was never retried."""
    return json.dumps({"Rules": [{
        "ID": "legacyflo-abort-incomplete-uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    }]}, indent=2)


def policies_for(bucket: str, *, purpose: str, role_arn: str | None = None, uses_role: bool = False,
                 principal: str = "", external_id: str = "") -> list[tuple[str, str]]:
    """(title, json) pairs to show on the bucket page; with ``uses_role`` the trust policy comes first."""
    access = {"destination": "write", "source": "read", "both": "readwrite"}[purpose]
    holder = "Permissions policy of the role" if uses_role else "IAM policy of the access key's user"
    items = []
    if uses_role:
        items.append(("Trust policy of the role (IAM → Roles → the role → Trust relationships)",
                      trust_policy(principal=principal, external_id=external_id)))
    items.append((f"{holder} — {access.replace('readwrite', 'read and write')}", policy_document(bucket, access=access)))
    if access != "read":
        items.append((f"{holder} — read only (for restores)", policy_document(bucket, access="read")))
    kms_principal = (role_arn or "arn:aws:iam::YOUR-ACCOUNT-ID:role/YOUR-ROLE") if uses_role else None
    items.append(("KMS key policy statement (buckets encrypted with a customer-managed key)",
                  kms_key_policy_statement(kms_principal)))
    items.append(("Lifecycle rule (recommended): abort forgotten multipart uploads", lifecycle_rule()))
    return items

"""The exact policy JSON an administrator pastes so the portal can use a bucket.

With the portal's own credentials the statements go in the *bucket policy* and name the
portal's principal; with an access key pair they go in that IAM user's policy (no Principal).
The KMS variant is a key-policy statement for buckets encrypted with a customer-managed key.
"""

from __future__ import annotations

import json

READ_BUCKET = ["s3:ListBucket", "s3:GetBucketLocation"]
READ_OBJECTS = ["s3:GetObject"]
WRITE_BUCKET = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
WRITE_OBJECTS = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                 "s3:ListMultipartUploadParts"]
KMS_ACTIONS = ["kms:GenerateDataKey", "kms:Decrypt", "kms:Encrypt", "kms:DescribeKey"]


def _statement(sid: str, actions: list[str], resource: str, principal: str | None) -> dict:
    statement = {"Sid": sid, "Effect": "Allow"}
    if principal:
        statement["Principal"] = {"AWS": principal}
    statement.update({"Action": actions, "Resource": resource})
    return statement


def policy_document(bucket: str, *, access: str, principal: str | None) -> str:
    """``access`` is "read", "write" or "readwrite"."""
    arn = f"arn:aws:s3:::{bucket}"
    statements = []
    if access in ("write", "readwrite"):
        statements.append(_statement("LegacyFloWriteBucket", WRITE_BUCKET, arn, principal))
        statements.append(_statement("LegacyFloWriteObjects", WRITE_OBJECTS, f"{arn}/*", principal))
    if access in ("read", "readwrite"):
        statements.append(_statement("LegacyFloReadBucket", READ_BUCKET, arn, principal))
        statements.append(_statement("LegacyFloReadObjects", READ_OBJECTS, f"{arn}/*", principal))
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=2)


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


def policies_for(bucket: str, *, purpose: str, principal: str | None) -> list[tuple[str, str]]:
    """(title, json) pairs to show on the bucket page."""
    access = {"destination": "write", "source": "read", "both": "readwrite"}[purpose]
    where = "Bucket policy" if principal else "IAM policy of the access key's user"
    items = [(f"{where} — {access.replace('readwrite', 'read and write')}", policy_document(bucket, access=access, principal=principal))]
    if access != "read":
        items.append((f"{where} — read only (for restores)", policy_document(bucket, access="read", principal=principal)))
    items.append(("KMS key policy statement (buckets encrypted with a customer-managed key)", kms_key_policy_statement(principal)))
    items.append(("Lifecycle rule (recommended): abort forgotten multipart uploads", lifecycle_rule()))
    return items

"""Archive downloads: short-lived presigned S3 URLs for the files a request wrote.

The portal never streams an archive (it can be hundreds of GB): the browser is redirected to a
presigned GET signed with the bucket's own credentials (its key pair, or the tenant's role
through ``connectors.storage.awsrole``), exactly as the worker reaches it — never the portal's
own identity. Invariants:
- a download names a file by its number in ``downloadable_files(req)``, never by a key from the
  URL, so only files the request itself wrote can be signed;
- ``req`` is always loaded through the user's tenant by the view, and the bucket is the request's;
- a link is valid for ``LEGACYFLO_DOWNLOAD_SECONDS`` (a role's temporary credentials may end it
  sooner) and is audited when it is handed out.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from django.conf import settings
from django.utils.http import content_disposition_header
from django.views.decorators.debug import sensitive_variables

from requests_app.models import MigrationRequest, State

DOWNLOADABLE_STATES = (State.COMPLETED, State.COMPLETED_WITH_ERRORS)


@dataclass(frozen=True)
class Downloadable:
    number: int  # 1-based, the URL's handle
    key: str
    size: int | None
    label: str  # "Archive", "Volume 2", "report.csv", "summary.json"


def downloadable_files(req: MigrationRequest) -> list[Downloadable]:
    """What a finished request left in its bucket: the archive (every volume), report and summary."""
    if req.state not in DOWNLOADABLE_STATES or req.bucket_id is None:
        return []
    archives = list(req.result.get("archives") or [])
    files = []
    for i, archive in enumerate(archives, start=1):
        label = f"Volume {i}" if len(archives) > 1 else "Archive"
        files.append((archive["key"], archive.get("size"), label))
    for key_name, label in (("report_key", "report.csv"), ("summary_key", "summary.json")):
        if req.result.get(key_name):
            files.append((req.result[key_name], None, label))
    return [Downloadable(n, key, size, label) for n, (key, size, label) in enumerate(files, start=1)]


def file_number(req: MigrationRequest, number: int) -> Downloadable | None:
    return next((f for f in downloadable_files(req) if f.number == number), None)


@sensitive_variables()
def presigned_url(req: MigrationRequest, item: Downloadable) -> str:
    """A GET URL for ``item`` valid ``LEGACYFLO_DOWNLOAD_SECONDS``, saved under its own file name."""
    from buckets.services import bucket_target
    from connectors.storage.s3.client import make_client

    client = make_client(bucket_target(req.bucket), allow_private=settings.LEGACYFLO_ALLOW_PRIVATE_NETWORKS)
    return client.generate_presigned_url("get_object", ExpiresIn=settings.LEGACYFLO_DOWNLOAD_SECONDS, Params={
        "Bucket": req.bucket.name, "Key": item.key,
        "ResponseContentDisposition": content_disposition_header(True, posixpath.basename(item.key)),
    })

"""What a worker process loads once, before RQ forks a work horse per job.

RQ runs each job in a fresh fork of the worker: whatever the parent has imported and loaded the
horse inherits for free, and whatever the horse loads itself is lost when it exits. ``preload``
imports every module a request's run needs (the engine, the sources, boto3, the request types)
and loads the S3 service model into the shared boto3 session
(``connectors.storage.s3.client.warm_up``), so a job starts with its imports done. It opens no
connection: the horse must not share a socket with its parent.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

MODULES = (
    "buckets.services",
    "connectors.pipeline.run",
    "connectors.sources.imap.client",
    "connectors.sources.gmail_api",
    "connectors.sources.graph",
    "connectors.sources.ratelimit",
    "connectors.storage.s3.client",
    "providers.credentials",
    "requests_app.kinds",
    "requests_app.ledger",
    "requests_app.runner",
)


def preload() -> None:
    """Import ``MODULES`` and warm the S3 client factory; a module that fails to import is logged
    (the job that needs it reports the error)."""
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the job will raise it where it is understood
            log.warning("could not preload %s", name, exc_info=True)
    from connectors.storage.s3.client import warm_up

    warm_up()

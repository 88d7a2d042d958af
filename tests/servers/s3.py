"""S3 servers for tests: rclone's (fast, data paths) and moto's (AWS control-plane semantics)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from legacyflo.localservices import LocalServer, free_port, start_rclone_s3, wait_for_port

RCLONE_ACCESS_KEY = "LEGACYFLOTESTKEY0001"
RCLONE_SECRET_KEY = "legacyflo-test-secret-0123456789"
MOTO_ACCESS_KEY = "AKIAMOTOTESTKEY00001"
MOTO_SECRET_KEY = "moto-test-secret-0123456789abcdef"


@dataclass
class S3Server:
    url: str
    access_key: str
    secret_key: str
    stop: callable

    def client(self, region: str = "us-east-1"):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)


def rclone_s3(data_dir: Path) -> S3Server:
    server: LocalServer = start_rclone_s3(data_dir, access_key=RCLONE_ACCESS_KEY, secret_key=RCLONE_SECRET_KEY)
    return S3Server(server.url, RCLONE_ACCESS_KEY, RCLONE_SECRET_KEY, server.stop)


def moto_s3() -> S3Server:
    # moto reads these for its own signature checks; they must not leak real credentials.
    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "false")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for_port(port)
    return S3Server(f"http://127.0.0.1:{port}", MOTO_ACCESS_KEY, MOTO_SECRET_KEY, server.stop)

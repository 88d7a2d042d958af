"""moto's server as a small AWS account that enforces IAM: for role buckets (STS, IAM, S3).

Unlike the shared ``moto`` fixture (no authorisation at all), this server runs in its own
process with moto's IAM checks on (``/moto-api/reset-auth``), so:
- a request signed by a key moto did not issue is refused (InvalidAccessKeyId);
- the portal's own user may only call ``sts:AssumeRole``: any S3 call it signs is AccessDenied;
- AssumeRole is checked against the role's trust policy: the Principal, and a ``StringEquals``
  ``sts:ExternalId`` condition when an ExternalId is sent. moto 5.2 does not refuse a request
  that sends *no* ExternalId (its condition check loops over the values received), so tests
  that depend on the ExternalId also read what moto received: every request is recorded
  (moto's recorder, ``requests()``).

moto enforces trust policies only for roles in the caller's own account, so the customer's
roles live in the portal user's account (123456789012) here; on AWS they are in the customer's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from legacyflo.localservices import _die_with_parent, free_port, wait_for_port

ACCOUNT = "123456789012"
_BOOT_KEY, _BOOT_SECRET = "AKIAMOTOBOOTSTRAP001", "moto-bootstrap-secret"


@dataclass
class AwsIdentity:
    arn: str
    access_key: str
    secret_key: str


class MotoAws:
    def __init__(self, workdir: Path) -> None:
        self.recording = workdir / "moto-requests.jsonl"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MOTO_RECORDER_FILEPATH": str(self.recording), "MOTO_ENABLE_RECORDING": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=(workdir / "moto.log").open("ab"), env=env,
            start_new_session=True, preexec_fn=_die_with_parent)
        wait_for_port(self.port, proc=self.proc)
        boot = AwsIdentity("", _BOOT_KEY, _BOOT_SECRET)  # works only until authorisation is on
        self.admin = self._user("legacyflo-test-admin", {"Effect": "Allow", "Action": "*", "Resource": "*"}, boot)
        self.portal = self._user("legacyflo-portal", {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}, boot)
        self._moto_api("reset-auth", b"0")  # from now on every request is authenticated and authorised

    def _moto_api(self, path: str, body: bytes = b"") -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/{path}", data=body, method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).read()

    def _user(self, name: str, statement: dict, signer: AwsIdentity) -> AwsIdentity:
        iam = self.client("iam", signer)
        arn = iam.create_user(UserName=name)["User"]["Arn"]
        iam.put_user_policy(UserName=name, PolicyName="only", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [statement]}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return AwsIdentity(arn, key["AccessKeyId"], key["SecretAccessKey"])

    def client(self, service: str, identity: AwsIdentity | None = None, *, token: str | None = None,
               region: str = "us-east-1"):
        import boto3

        identity = identity or self.admin
        return boto3.client(service, endpoint_url=self.url, region_name=region,
                            aws_access_key_id=identity.access_key, aws_secret_access_key=identity.secret_key,
                            aws_session_token=token)

    def customer_role(self, bucket: str, *, external_id: str | None, principal: str | None = None) -> str:
        """A role that may use ``bucket``, trusting ``principal`` (the portal) with ``external_id``
        (None: a careless trust policy without the ExternalId condition)."""
        statement = {"Effect": "Allow", "Principal": {"AWS": principal or self.portal.arn}, "Action": "sts:AssumeRole"}
        if external_id is not None:
            statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
        iam = self.client("iam")
        name = f"customer-{bucket}-{uuid.uuid4().hex[:6]}"[:64]
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [statement]}))["Role"]["Arn"]
        iam.put_role_policy(RoleName=name, PolicyName="bucket", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": [
                f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
        return arn

    def bucket(self, name: str, region: str = "us-east-1") -> str:
        s3 = self.client("s3", region=region)
        if region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        return name

    def requests(self) -> list[dict]:
        """Every request moto received since the last ``forget_requests()``, oldest first."""
        if not self.recording.exists():
            return []
        return [json.loads(line) for line in self.recording.read_text().splitlines() if line.strip()]

    def forget_requests(self) -> None:
        self.recording.write_text("")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def signing_key(request: dict) -> str | None:
    """The access key id that signed a recorded request (from its Authorization header)."""
    auth = {k.lower(): v for k, v in request["headers"].items()}.get("authorization", "")
    return auth.partition("Credential=")[2].partition("/")[0] or None


def form_fields(request: dict) -> dict[str, str]:
    """The fields of a recorded form-encoded request (STS and IAM use them)."""
    import base64

    content_type = {k.lower(): v for k, v in request["headers"].items()}.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return {}
    body = request.get("body") or ""
    if request.get("body_encoded"):
        body = base64.b64decode(body).decode()
    return dict(urllib.parse.parse_qsl(body))

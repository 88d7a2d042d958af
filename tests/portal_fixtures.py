"""Fixtures for end-to-end request tests: a Dovecot with a generated mailbox, a verified bucket on
rclone's S3 server, and real RQ workers (in-process, or subprocesses sharing the test database)."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.mailgen import generate_mailbox, write_maildir
from tests.servers.dovecot import DovecotServer

ROOT = Path(__file__).resolve().parent.parent
MAILBOX_USER, MAILBOX_PASSWORD = "alice", "alice-imap-password"


@pytest.fixture(scope="module")
def dovecot():
    with DovecotServer(users={MAILBOX_USER: MAILBOX_PASSWORD}, ssl=True) as server:
        mailbox = generate_mailbox("test", seed=7)
        write_maildir(server, MAILBOX_USER, mailbox)
        server.mailbox = mailbox
        yield server


@pytest.fixture
def imap_ca(dovecot, settings):
    settings.LEGACYFLO_IMAP_CA_FILE = str(dovecot.ca_file)
    return dovecot.ca_file


@pytest.fixture
def dest_bucket(tenant, rclone, s3_bucket):
    from buckets.models import Bucket

    return Bucket.objects.create(
        tenant=tenant, name=s3_bucket, region="us-east-1", endpoint_url=rclone.url, purpose="destination",
        auth_mode="keys", access_key_id=rclone.access_key, secret_access_key=rclone.secret_key, status="verified")


def imap_form(dovecot, bucket, **overrides) -> dict:
    data = {"source_server": "127.0.0.1", "source_port": dovecot.ssl_port, "source_security": "ssl",
            "source_user": MAILBOX_USER, "source_password": MAILBOX_PASSWORD, "bucket": str(bucket.uuid),
            "file_name": "alice-backup", "s3_prefix": "mail"}
    data.update(overrides)
    return data


def submit(tenant, actor, code: str, data: dict):
    from requests_app.forms import form_class
    from requests_app.services import request_submit
    from requests_app.types import get_type

    rtype = get_type(code)
    form = form_class(rtype)(data, rtype=rtype, tenant=tenant)
    assert form.is_valid(), form.errors
    return request_submit(tenant=tenant, actor=actor, rtype=rtype, data=form.cleaned_data)


def run_worker_burst(queue) -> None:
    """Run every queued job in this process with a real RQ worker (SimpleWorker: no fork)."""
    from rq import SimpleWorker

    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def source_digests(mailbox) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for msg in mailbox.messages():
        out.setdefault(msg.folder, []).append(hashlib.sha256(msg.raw).hexdigest())
    return out


def archive_digests(client, bucket: str, key: str) -> dict[str, list[str]]:
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    out: dict[str, list[str]] = {}
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        for info in archive.infolist():
            if info.is_dir() or not info.filename.endswith(".eml"):
                continue
            folder = info.filename.rsplit("/", 1)[0]
            out.setdefault(folder, []).append(hashlib.sha256(archive.read(info)).hexdigest())
    return out


def pst_folder_counts(path) -> dict[str, int]:
    """Folder path ('/'-joined, as libpff names them) → number of messages, read with libpff;
    readpst, pffexport and pst-extractor must open the file and find as many messages."""
    import tempfile

    from tests.pst_corpus import assert_every_reader_opens

    counts = _pypff_folder_counts(path)
    with tempfile.TemporaryDirectory() as scratch:
        assert_every_reader_opens(Path(path), Path(scratch), sum(counts.values()))
    return counts


def _pypff_folder_counts(path) -> dict[str, int]:
    import pypff

    pst = pypff.file()
    pst.open(str(path))

    def walk(folder, prefix=""):
        found = {}
        for i in range(folder.number_of_sub_folders):
            sub = folder.get_sub_folder(i)
            name = f"{prefix}/{sub.name}" if prefix else sub.name
            found[name] = sub.number_of_sub_messages
            found.update(walk(sub, name))
        return found

    try:
        return walk(pst.get_root_folder())
    finally:
        pst.close()


def no_pending_uploads(client, bucket: str) -> bool:
    try:
        return not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    except client.exceptions.NoSuchUpload:  # rclone's answer for a bucket that never had an upload
        return True


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class WorkerProcess:
    """``manage.py worker`` in a subprocess on the test database and the test Redis."""

    def __init__(self, env: dict):
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log = open(env["LEGACYFLO_VAR_DIR"] + "/worker.log", "ab")

    def start(self) -> WorkerProcess:
        self.proc = subprocess.Popen([sys.executable, "manage.py", "worker"], cwd=ROOT, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its work horse (RQ puts the horse in its own session): a
        machine crash, as far as the job can tell."""
        if self.proc and self.proc.poll() is None:
            for pid in [*descendants(self.proc.pid), self.proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker_env(redis_server, imap_ca, tmp_path):
    from django.db import connection

    settings_dict = connection.settings_dict
    if settings_dict["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{settings_dict['NAME']}"
    else:
        url = (f"postgres://{settings_dict['USER'] or 'postgres'}@{settings_dict['HOST'] or '127.0.0.1'}:"
               f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}")
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_server.url, "LEGACYFLO_IMAP_CA_FILE": str(imap_ca),
           "LEGACYFLO_STALE_AFTER_SECONDS": "10", "LEGACYFLO_HEARTBEAT_SECONDS": "1",
           "LEGACYFLO_VAR_DIR": str(tmp_path), "LEGACYFLO_PART_SIZE": str(5 * 1024 * 1024),
           # One RQ worker per command, as the tests that kill "the worker" or "its work horse" mean.
           "LEGACYFLO_WORKER_CONCURRENCY": "1"}
    return env


@pytest.fixture
def worker_process(worker_env):
    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(worker_env).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_for(predicate, timeout: float = 120, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def limits(settings):
    """Small login limits for the throttle tests (login, password change)."""
    settings.LEGACYFLO_LOGIN_MAX_FAILURES = 3
    settings.LEGACYFLO_LOGIN_IP_MAX_FAILURES = 5
    settings.LEGACYFLO_LOGIN_WINDOW_SECONDS = 900
    return settings


@pytest.fixture
def throttle_db(redis_server):
    """The Redis database that holds Django's cache (see ``redis_server`` in conftest)."""
    import redis

    return redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/1")

"""`manage.py worker --concurrency N`: N RQ workers (real processes, real Redis) under one command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from requests_app.models import MigrationRequest
from tests.portal_fixtures import (
    ROOT,
    archive_digests,
    descendants,
    imap_form,
    source_digests,
    submit,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _mailbox(dovecot, name: str, seed: int):
    from tests.mailgen import generate_mailbox, write_maildir

    dovecot.add_user(name, f"{name}-password")
    mailbox = generate_mailbox("flat", seed=seed, count=5, size=3000)
    write_maildir(dovecot, name, mailbox)
    return mailbox


def test_two_requests_run_in_the_two_workers_of_one_command(operator, tenant, dovecot, dest_bucket, rclone,
                                                            rq_queue, worker_env):
    from rq.job import Job

    mailboxes = {name: _mailbox(dovecot, name, seed) for seed, name in enumerate(["hana", "ivo"], start=3)}
    requests = [submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, source_user=name,
                                                                 source_password=f"{name}-password", file_name=name))
                for name in mailboxes]
    done = subprocess.run([sys.executable, "manage.py", "worker", "--burst", "--concurrency", "2"], cwd=ROOT,
                          env=worker_env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    workers = set()
    for req in requests:
        req.refresh_from_db()
        assert req.state == "completed", req.error
        workers.add(Job.fetch(req.job_id, connection=rq_queue.connection).worker_name)
        digests = archive_digests(rclone.client(), dest_bucket.name, f"mail/{req.file_name}.zip")
        assert sorted(map(sorted, digests.values())) == \
            sorted(map(sorted, source_digests(mailboxes[req.file_name]).values()))
    assert len(workers) == 2  # each worker took one: both ran at once


def test_sigterm_to_the_command_stops_every_worker(redis_server, rq_queue, worker_env):
    from rq import Worker

    proc = subprocess.Popen([sys.executable, "manage.py", "worker", "--concurrency", "2"], cwd=ROOT, env=worker_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: len(Worker.all(connection=rq_queue.connection)) == 2, timeout=120)
        children = descendants(proc.pid)
        assert len(children) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        wait_for(lambda: not Worker.all(connection=rq_queue.connection), timeout=30)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert MigrationRequest.objects.count() == 0


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _bulk_request(tenant, operator, dovecot, dest_bucket, name: str, count: int = 320):
    from tests.mailgen import generate_mailbox, write_maildir

    dovecot.add_user(name, f"{name}-password")
    mailbox = generate_mailbox("flat", seed=7, count=count, folder="INBOX", size=80_000)
    write_maildir(dovecot, name, mailbox)
    req = submit(tenant, operator, "IMAP-S3-ZIP", imap_form(dovecot, dest_bucket, source_user=name,
                                                            source_password=f"{name}-password", file_name=name))
    return mailbox, req


def test_an_in_process_worker_killed_mid_job_is_replaced_and_the_request_resumes(
        operator, tenant, dovecot, dest_bucket, rclone, rq_queue, worker_process):
    """The default worker runs jobs without forking a horse: a job that kills its process takes
    the RQ worker down; the command forks a new one and the request resumes exactly once."""
    from tests.portal_fixtures import no_pending_uploads

    mailbox, req = _bulk_request(tenant, operator, dovecot, dest_bucket, "crash")
    worker = worker_process()
    wait_for(lambda: req.parts.count() >= 2, timeout=120, interval=0.05)
    from rq import Worker

    (rq_worker,) = Worker.all(connection=rq_queue.connection)
    assert rq_worker.get_current_job_id() == MigrationRequest.objects.get(pk=req.pk).job_id
    assert rq_worker.pid in descendants(worker.proc.pid)

    os.kill(rq_worker.pid, signal.SIGKILL)
    wait_for(lambda: [w for w in Worker.all(connection=rq_queue.connection) if w.pid != rq_worker.pid], timeout=90)
    assert worker.proc.poll() is None  # the command lives on, with a new RQ worker
    wait_for(lambda: MigrationRequest.objects.get(pk=req.pk).is_final, timeout=180)
    req.refresh_from_db()
    assert req.state == "completed", req.error
    assert req.attempts == 2 and req.result["resumed"] is True
    s3 = rclone.client()
    digests = archive_digests(s3, dest_bucket.name, "mail/crash.zip")
    assert sorted(digests["INBOX"]) == sorted(source_digests(mailbox)["INBOX"])  # every message exactly once
    assert no_pending_uploads(s3, dest_bucket.name)


def test_the_job_timeout_still_stops_an_in_process_job(operator, tenant, dovecot, dest_bucket, rclone, rq_queue,
                                                       worker_env, settings, monkeypatch):
    monkeypatch.setitem(settings.RQ_QUEUES["default"], "DEFAULT_TIMEOUT", 1)  # the job carries it
    _, req = _bulk_request(tenant, operator, dovecot, dest_bucket, "slow")
    done = subprocess.run([sys.executable, "manage.py", "worker", "--burst"], cwd=ROOT, env=worker_env,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    req.refresh_from_db()
    assert req.state == "failed"
    assert "JobTimeoutException" in req.error

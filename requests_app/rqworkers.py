"""The RQ worker classes ``manage.py worker`` runs (``LEGACYFLO_WORKER_FORK``).

``InProcessWorker`` (the default) runs each job in the worker process itself, as RQ's
``SimpleWorker`` does, instead of forking a work horse per job: a fork, the horse's fresh
database connection and RQ's horse monitoring cost a small request more than its messages. What
the fork gave is kept another way:

- A job that raises is failed (and retried) by RQ as before; a job that kills the process
  (SIGKILL, OOM, a crash in C) takes the worker with it: its request stays ``running`` with a
  heartbeat that stops, which recovery (``requests_app.recovery``) re-queues and the next run
  resumes from its checkpoint; ``manage.py worker`` starts a new worker in its place.
- The job timeout still applies (RQ's SIGALRM death penalty runs around the job in this
  process).
- Database connections are checked before and closed after every job
  (``close_old_connections``: per ``DATABASE_CONN_MAX_AGE``), as Django does around a request,
  so a job never starts on a connection a previous one broke.
- Memory: a worker exits after ``LEGACYFLO_WORKER_MAX_JOBS`` jobs and ``manage.py worker``
  forks a fresh one from its preloaded parent, so whatever a job leaves behind is bounded.

``Worker`` (RQ's forking worker, ``LEGACYFLO_WORKER_FORK=1``) keeps a work horse per job.
"""

from __future__ import annotations

from django.db import close_old_connections
from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue

FORKING = "rq.Worker"
IN_PROCESS = "requests_app.rqworkers.InProcessWorker"


class InProcessWorker(SimpleWorker):
    """RQ's ``SimpleWorker`` with Django's connection hygiene around each job."""

    def execute_job(self, job: Job, queue: Queue):
        close_old_connections()
        try:
            return super().execute_job(job, queue)
        finally:
            close_old_connections()


def worker_class(fork: bool) -> str:
    return FORKING if fork else IN_PROCESS

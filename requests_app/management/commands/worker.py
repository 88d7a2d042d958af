"""RQ workers for LegacyFlo's queue, with the recovery loop (run one such command per machine).

``--concurrency N`` (``LEGACYFLO_WORKER_CONCURRENCY``, default: the machine's CPU count) runs N
RQ workers, so N requests run at once: small mailboxes wait on the network more than on the
CPU. The command first loads what every job needs (``requests_app.workerboot.preload``), then
forks the N workers, which inherit the loaded modules. Each runs its jobs in its own process
(``requests_app.rqworkers.InProcessWorker``, the default: no fork per job, which costs a small
request more than its messages) or, with ``--fork`` / ``LEGACYFLO_WORKER_FORK=1``, forks a work
horse per job (RQ's ``Worker``). An in-process worker exits after ``LEGACYFLO_WORKER_MAX_JOBS``
jobs (not in ``--burst``), and a worker that dies (a job that crashed the process) is replaced:
the parent forks a fresh one while it is not stopping. The parent runs the recovery loop and
passes SIGINT/SIGTERM on to the workers (each in its own process group, so a terminal's Ctrl-C
reaches them once, through the parent); a worker whose parent dies gets SIGTERM (a warm
shutdown: it finishes its current job).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import close_old_connections, connections

log = logging.getLogger(__name__)


def _recovery_loop(stop: threading.Event, every: float) -> None:
    from requests_app.recovery import recover
    from requests_app.retention import prune_records

    while not stop.wait(every):
        try:
            close_old_connections()
            recovered = recover()
            if recovered:
                log.info("recovery re-queued requests %s", recovered)
            prune_records()  # LEGACYFLO_RECORD_RETENTION_DAYS; 0: nothing
        except Exception:  # noqa: BLE001 - keep the loop alive; the next round retries
            log.exception("recovery round failed")


def _rq_worker(burst: bool, fork: bool) -> None:
    from requests_app.rqworkers import worker_class

    # A burst runs until the queue is empty; recycling after MAX_JOBS needs the parent's respawn.
    max_jobs = None if burst or fork else settings.LEGACYFLO_WORKER_MAX_JOBS
    call_command("rqworker", "default", burst=burst, with_scheduler=not burst,
                 worker_class=worker_class(fork), max_jobs=max_jobs)


def _die_with_parent() -> None:
    from legacyflo.localservices import _die_with_parent as pdeathsig

    pdeathsig()


class Command(BaseCommand):
    help = "Run RQ workers on the LegacyFlo queue; they also re-queue requests whose worker died."

    def add_arguments(self, parser):
        parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
        parser.add_argument("--concurrency", type=int, default=None,
                            help="requests run at once (default: LEGACYFLO_WORKER_CONCURRENCY)")
        parser.add_argument("--fork", action=argparse.BooleanOptionalAction, default=None,
                            help="fork a work horse per job (default: LEGACYFLO_WORKER_FORK)")

    def handle(self, *args, burst: bool, concurrency: int | None, fork: bool | None, **options):
        from requests_app.workerboot import preload

        count = max(1, concurrency or settings.LEGACYFLO_WORKER_CONCURRENCY)
        fork = settings.LEGACYFLO_WORKER_FORK if fork is None else fork
        self.burst, self.fork = burst, fork
        preload()
        stop = threading.Event()
        # An in-process worker that ends (MAX_JOBS, a crash) is replaced by a fork of this parent.
        respawn = not burst and not fork
        children = [self._fork_worker() for _ in range(count)] if count > 1 or respawn else []
        if not burst:
            every = max(5.0, settings.LEGACYFLO_STALE_AFTER_SECONDS / 3)
            threading.Thread(target=_recovery_loop, args=(stop, every), daemon=True, name="recovery").start()
        try:
            if not children:
                _rq_worker(burst, fork)
                return
            failed = self._wait(children, respawn)
            if failed:
                raise SystemExit(1)
        finally:
            stop.set()

    def _fork_worker(self) -> int:
        connections.close_all()  # no database socket shared with the child
        pid = os.fork()
        if pid == 0:  # a worker: its own process group, gone when the parent is
            code = 0
            try:
                for sig in (signal.SIGINT, signal.SIGTERM):  # not the parent's forwarding handler
                    signal.signal(sig, signal.SIG_DFL)
                os.setpgrp()
                _die_with_parent()
                _rq_worker(self.burst, self.fork)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001
                log.exception("worker process failed")
                code = 1
            finally:
                os._exit(code)
        return pid

    def _wait(self, children: list[int], respawn: bool = False) -> bool:
        """Wait for every worker, passing SIGINT/SIGTERM on; whether one exited with an error.
        With ``respawn``, a worker that ends before a signal came is replaced by a new one."""
        alive = set(children)
        stopping = []

        def forward(signum, _frame):
            stopping.append(signum)
            for pid in alive:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        failed = False
        try:
            while alive:
                try:
                    pid, status = os.wait()
                except ChildProcessError:
                    break
                except InterruptedError:
                    continue
                if pid in alive:
                    alive.discard(pid)
                    code = os.waitstatus_to_exitcode(status)
                    if respawn and not stopping:
                        if code != 0:
                            log.warning("worker %s exited with %s; starting another", pid, code)
                            time.sleep(2)  # a worker that cannot start (Redis down) is not forked in a loop
                        if not stopping:
                            alive.add(self._fork_worker())
                            continue
                    failed = failed or code != 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return failed

"""RQ workers for LegacyFlo's queue, with the recovery loop (run one such command per machine).

``--concurrency N`` (``LEGACYFLO_WORKER_CONCURRENCY``, default: the machine's CPU count) runs N
RQ workers, so N requests run at once: small mailboxes wait on the network more than on the
CPU. The command first loads what every job needs (``requests_app.workerboot.preload``), then
forks the N workers, each of which forks a work horse per job (RQ's isolation: a job that
crashes or leaks takes only its horse down) that inherits the loaded modules. The parent runs
the recovery loop and passes SIGINT/SIGTERM on to the workers (each in its own process group,
so a terminal's Ctrl-C reaches them once, through the parent); a worker whose parent dies gets
SIGTERM (a warm shutdown: it finishes its current job).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

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


def _rq_worker(burst: bool) -> None:
    call_command("rqworker", "default", burst=burst, with_scheduler=not burst)


def _die_with_parent() -> None:
    from legacyflo.localservices import _die_with_parent as pdeathsig

    pdeathsig()


class Command(BaseCommand):
    help = "Run RQ workers on the LegacyFlo queue; they also re-queue requests whose worker died."

    def add_arguments(self, parser):
        parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
        parser.add_argument("--concurrency", type=int, default=None,
                            help="requests run at once (default: LEGACYFLO_WORKER_CONCURRENCY)")

    def handle(self, *args, burst: bool, concurrency: int | None, **options):
        from requests_app.workerboot import preload

        count = max(1, concurrency or settings.LEGACYFLO_WORKER_CONCURRENCY)
        preload()
        stop = threading.Event()
        children = self._fork_workers(count, burst) if count > 1 else []
        if not burst:
            every = max(5.0, settings.LEGACYFLO_STALE_AFTER_SECONDS / 3)
            threading.Thread(target=_recovery_loop, args=(stop, every), daemon=True, name="recovery").start()
        try:
            if not children:
                _rq_worker(burst)
                return
            failed = self._wait(children)
            if failed:
                raise SystemExit(1)
        finally:
            stop.set()

    def _fork_workers(self, count: int, burst: bool) -> list[int]:
        connections.close_all()  # no database socket shared with the children
        children = []
        for _ in range(count):
            pid = os.fork()
            if pid == 0:  # a worker: its own process group, gone when the parent is
                code = 0
                try:
                    os.setpgrp()
                    _die_with_parent()
                    _rq_worker(burst)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                except BaseException:  # noqa: BLE001
                    log.exception("worker process failed")
                    code = 1
                finally:
                    os._exit(code)
            children.append(pid)
        return children

    def _wait(self, children: list[int]) -> bool:
        """Wait for every worker, passing SIGINT/SIGTERM on; whether one exited with an error."""
        alive = set(children)

        def forward(signum, _frame):
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
                    failed = failed or os.waitstatus_to_exitcode(status) != 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return failed

"""``manage.py scheduler``: call ``plans_run_due`` every minute (run it on one or several machines).

Several schedulers at once are safe: each slot is taken by one database transaction
(``requests_app.plans``), so a second scheduler finds nothing left to do.
"""

import logging
import signal
import threading

from django.core.management.base import BaseCommand
from django.db import close_old_connections
from django.utils import timezone

from requests_app.plans import plans_run_due

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Submit the runs of due plans every minute (safe to run on several machines)."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=60.0, help="seconds between rounds (default 60)")
        parser.add_argument("--once", action="store_true", help="one round, then exit")

    def handle(self, *args, every: float, once: bool, **options):
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        self.stdout.write(f"Scheduler: checking plans every {every:g} s.")
        while True:
            try:
                close_old_connections()
                for req in plans_run_due():
                    self.stdout.write(f"{timezone.now():%Y-%m-%d %H:%M:%S} {req.uuid} {req.request_type} {req.state}")
            except Exception:  # noqa: BLE001 - the next round retries
                log.exception("scheduler round failed")
            if once or stop.wait(every - timezone.now().timestamp() % every if every >= 1 else every):
                break
            self.stdout.flush()

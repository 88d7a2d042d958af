"""An RQ worker for LegacyFlo's queue, with the recovery loop (run one or more per machine)."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import close_old_connections

log = logging.getLogger(__name__)


def _recovery_loop(stop: threading.Event, every: float) -> None:
    from requests_app.recovery import recover

    while not stop.wait(every):
        try:
            close_old_connections()
            recovered = recover()
            if recovered:
                log.info("recovery re-queued requests %s", recovered)
        except Exception:  # noqa: BLE001 - keep the loop alive; the next round retries
            log.exception("recovery round failed")


class Command(BaseCommand):
    help = "Run an RQ worker on the LegacyFlo queue; it also re-queues requests whose worker died."

    def add_arguments(self, parser):
        parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")

    def handle(self, *args, burst: bool, **options):
        stop = threading.Event()
        if not burst:
            every = max(5.0, settings.LEGACYFLO_STALE_AFTER_SECONDS / 3)
            threading.Thread(target=_recovery_loop, args=(stop, every), daemon=True, name="recovery").start()
        try:
            call_command("rqworker", "default", burst=burst, with_scheduler=not burst)
        finally:
            stop.set()

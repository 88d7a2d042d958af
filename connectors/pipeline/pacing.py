"""The two periodic Ledger calls a backup makes while it runs: progress reports and
cancel polls, each at most once per interval (``Tuning.progress_interval`` and
``cancel_interval``) unless forced.

Used by the skeleton (``connectors.pipeline.skeleton``), so ZIP and PST throttle, force and end
their reports the same way. Like every Ledger call, these are made from the thread that called
``run_backup`` only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from connectors.pipeline.ledger import Progress

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The ledger says the export was cancelled (raised by ``ExportPacer.check_cancel``)."""


class ExportPacer:
    """Throttled ``report_progress`` / ``cancel_requested`` calls to ``ledger``.

    ``snapshot`` returns the Progress to report (a copy: the ledger may keep it); ``tuning``
    gives ``progress_interval`` and ``cancel_interval`` in seconds.
    """

    def __init__(self, ledger, tuning, snapshot: Callable[[], Progress]) -> None:
        self._ledger, self._t, self._snapshot = ledger, tuning, snapshot
        self._last_progress = self._last_cancel = 0.0

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= self._t.progress_interval:
            self._last_progress = now
            self._ledger.report_progress(self._snapshot())

    def report_final(self) -> None:
        """A failed or cancelled export's last report: logged, not raised, if it fails (the
        ledger may be what failed)."""
        try:
            self.report(force=True)
        except Exception:  # noqa: BLE001
            log.warning("could not report the final progress", exc_info=True)

    def check_cancel(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_cancel >= self._t.cancel_interval:
            self._last_cancel = now
            if self._ledger.cancel_requested():
                raise Cancelled()

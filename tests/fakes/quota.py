"""Per-user quota as the fakes enforce it: a sliding window of ``limit`` units per ``window`` seconds.

A sliding window is at least as strict as whatever Google really does, so a client that stays
under it will stay under the real quota too. Rejected calls cost nothing, like on Google.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Callable


class SlidingWindowQuota:
    def __init__(self, limit: int, window: float, clock: Callable[[], float]):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._charges: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self._totals: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self.peak: dict[str, int] = defaultdict(int)  # most units ever inside one window, per user
        self.rejected: dict[str, int] = defaultdict(int)

    def _used(self, key: str, now: float) -> int:
        charges = self._charges[key]
        while charges and charges[0][0] <= now - self.window:
            self._totals[key] -= charges.popleft()[1]
        return self._totals[key]

    def charge(self, key: str, units: int) -> bool:
        """Record ``units`` for ``key`` and return True, or return False if that would exceed the limit."""
        with self._lock:
            now = self.clock()
            used = self._used(key, now)
            if used + units > self.limit:
                self.rejected[key] += 1
                return False
            self._charges[key].append((now, units))
            self._totals[key] += units
            self.peak[key] = max(self.peak[key], used + units)
            return True

    def used(self, key: str) -> int:
        with self._lock:
            return self._used(key, self.clock())

    def reset(self) -> None:
        with self._lock:
            self._charges.clear()
            self._totals.clear()
            self.peak.clear()
            self.rejected.clear()

"""Clocks the fakes and the connectors share, so quota windows pass instantly in tests."""

from __future__ import annotations

import threading
import time


class RealClock:
    """Wall-clock seconds (``time.time``) and a real ``sleep``."""

    def __call__(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock that only moves when someone sleeps on it or calls ``advance``.

    Handing ``clock.sleep`` to a connector as its sleep function makes every backoff and every
    quota wait take no real time, while the fake server sees time move by exactly that much.
    """

    def __init__(self, start: float = 1_700_000_000.0):
        self._now = start
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self._now += max(0.0, seconds)

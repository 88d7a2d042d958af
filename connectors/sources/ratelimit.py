"""A per-mailbox API quota shared by every worker, so that parallel jobs never exceed it together.

Gmail allows 15,000 units per user per minute across *all* clients of that user; two RQ workers
backing up the same mailbox must share one budget. :class:`RedisQuota` keeps it in Redis as a
GCRA token bucket (one key, one Lua script, atomic): each ``acquire(units)`` reserves its units
and returns how long to wait, so waiters are served in order and nobody spins.

Guarantee: with ``burst`` ≥ the largest single acquire, the units *started* in any interval of
``window`` seconds never exceed ``limit × safety``; a server enforcing a sliding window of
``limit`` per ``window`` therefore never has to throttle us (the margin absorbs network jitter).
:class:`LocalQuota` is the same bucket in-process for a single worker without Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

GCRA_ACQUIRE = """
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[4])
end
local rate, burst_seconds, units = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now - burst_seconds
if wait < 0 then wait = 0 end
redis.call('SET', KEYS[1], string.format('%.6f', tat + units / rate), 'PX', ARGV[5])
return string.format('%.6f', wait)
"""

GCRA_DEFER = """
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[3])
end
local floor = now + tonumber(ARGV[1]) + tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < floor then
  redis.call('SET', KEYS[1], string.format('%.6f', floor), 'PX', ARGV[4])
end
return 1
"""


class Quota(Protocol):
    def acquire(self, units: int) -> float:
        """Block until ``units`` may be spent; return the seconds waited."""

    def defer(self, seconds: float) -> None:
        """Make every holder of this quota wait ``seconds`` (the provider throttled us anyway)."""


def gcra_rate(limit: int, window: float, burst: int, safety: float) -> float:
    """Units per second such that burst + largest acquire + rate × window ≤ limit × safety."""
    rate = (limit * safety - 2 * burst) / window
    if rate <= 0:
        raise ValueError(f"burst {burst} is too large for a quota of {limit} per {window:g} s")
    return rate


class RedisQuota:
    def __init__(self, redis, key: str, *, limit: int = 15_000, window: float = 60.0,
                 burst: int = 250, safety: float = 0.98, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        """``redis`` is a URL or a redis-py client; ``clock`` (tests) replaces Redis' own TIME."""
        if isinstance(redis, str):
            import redis as redis_lib

            redis = redis_lib.Redis.from_url(redis)
        self.redis = redis
        self.key = key
        self.rate = gcra_rate(limit, window, burst, safety)
        self.burst_seconds = burst / self.rate
        self.ttl_ms = int((window * 2 + 60) * 1000)
        self.clock = clock
        self.sleep = sleep
        self._acquire = redis.register_script(GCRA_ACQUIRE)
        self._defer = redis.register_script(GCRA_DEFER)

    def _now_arg(self) -> str:
        return "" if self.clock is None else f"{self.clock():.6f}"

    def acquire(self, units: int) -> float:
        wait = float(self._acquire(keys=[self.key], args=[
            f"{self.rate:.9f}", f"{self.burst_seconds:.9f}", units, self._now_arg(), self.ttl_ms]))
        if wait > 0:
            self.sleep(wait)
        return wait

    def defer(self, seconds: float) -> None:
        self._defer(keys=[self.key], args=[f"{seconds:.6f}", f"{self.burst_seconds:.9f}",
                                           self._now_arg(), self.ttl_ms])


class LocalQuota:
    """The same bucket for one process (no Redis): fine for a single worker and for tests."""

    def __init__(self, *, limit: int = 15_000, window: float = 60.0, burst: int = 250,
                 safety: float = 0.98, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate = gcra_rate(limit, window, burst, safety)
        self.burst_seconds = burst / self.rate
        self.clock, self.sleep = clock, sleep
        self._tat = 0.0
        self._lock = threading.Lock()

    def acquire(self, units: int) -> float:
        with self._lock:
            now = self.clock()
            tat = max(self._tat, now)
            wait = max(0.0, tat - now - self.burst_seconds)
            self._tat = tat + units / self.rate
        if wait > 0:
            self.sleep(wait)
        return wait

    def defer(self, seconds: float) -> None:
        with self._lock:
            self._tat = max(self._tat, self.clock() + seconds + self.burst_seconds)


class NoQuota:
    """Spend freely (the provider's errors and our backoff are the only brake)."""

    def acquire(self, units: int) -> float:
        return 0.0

    def defer(self, seconds: float) -> None:
        pass


def gmail_quota_key(user: str) -> str:
    return f"legacyflo:quota:gmail:{user.strip().lower()}"


def graph_quota_key(client_id: str, mailbox: str) -> str:
    """Graph counts 10,000 requests per 10 minutes per app *and* mailbox."""
    return f"legacyflo:quota:graph:{client_id.strip().lower()}:{mailbox.strip().lower()}"

"""Fixed-window attempt counters that turn into lockouts, kept in the shared cache (Redis).

A counter starts at the first attempt and lives for one window. The attempt that reaches the limit
replaces it with a lock lasting one full window; the lock stores its end time so a page can say
when to come back (the cache API cannot read a key's remaining lifetime). Counting and locking
use Redis' atomic INCR and expiry, so every web process shares them and nothing needs sweeping.
Subjects (emails, addresses) are hashed into the keys: the cache never holds them in clear.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from django.core.cache import cache


@dataclass(frozen=True)
class Limit:
    """``attempts`` within ``window`` seconds lock the subject out for ``window`` seconds."""

    name: str
    attempts: int
    window: int


def _key(kind: str, limit: Limit, subject: str) -> str:
    digest = hashlib.sha256(subject.encode()).hexdigest()[:40]
    return f"throttle:{limit.name}:{kind}:{digest}"


def locked_for(limit: Limit, subject: str) -> int:
    """Seconds until ``subject`` may try again (0: not locked)."""
    until = cache.get(_key("lock", limit, subject))
    if until is None:
        return 0
    return max(1, math.ceil(until - time.time()))


def hit(limit: Limit, subject: str) -> int:
    """Count one attempt; return the lockout's length in seconds if this attempt started one, else 0."""
    count_key = _key("count", limit, subject)
    if cache.add(count_key, 1, timeout=limit.window):
        count = 1
    else:
        try:
            count = cache.incr(count_key)
        except ValueError:  # the window ended between add() and incr(): this attempt opens a new one
            cache.add(count_key, 1, timeout=limit.window)
            count = 1
    if count < limit.attempts:
        return 0
    cache.set(_key("lock", limit, subject), time.time() + limit.window, timeout=limit.window)
    cache.delete(count_key)
    return limit.window


def clear(limit: Limit, subject: str) -> None:
    """Forget the subject's attempts and lock."""
    cache.delete_many([_key("count", limit, subject), _key("lock", limit, subject)])

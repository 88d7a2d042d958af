"""Keep a long export's resident memory flat under glibc malloc.

An export allocates and frees many multi-megabyte buffers (messages, compressed payloads, part
bodies) from several threads. With glibc's defaults each thread may get its own arena, and the
dynamic mmap threshold climbs to 32 MB after the first big free, so big buffers are carved out
of arenas that never shrink. Pinning the mmap threshold (big buffers are mmapped and returned
to the OS on free) and capping arenas keeps peak RSS flat at the same speed (bench/README.md).

Process-wide and idempotent; a no-op off glibc or when ``LEGACYFLO_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024
ARENA_MAX = 2

_done = False


def tune_malloc() -> bool:
    """Apply the settings once; True if they are in effect."""
    global _done
    if _done:
        return True
    if os.environ.get("LEGACYFLO_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_ARENA_MAX, ARENA_MAX))
    if ok:
        _done = True
    else:
        log.debug("mallopt refused the settings")
    return ok

"""Read an iterator ahead in a background thread, a bounded number of bytes in front.

The PST export converts messages on the calling thread; without this, every IMAP FETCH (or
Gmail batch, or Graph page) is a pause in which nothing is converted. With it, the next batch
arrives while the current one is written: the socket reads let go of the GIL.

Ordering and errors are preserved: items come out in the order the iterator made them, and an
exception raised by the iterator is raised to the consumer after the items made before it.
Closing the consumer (an exception in its loop, ``break``) stops and joins the thread, so the
source is never used by two threads at once once ``prefetched`` returns.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def prefetched(items: Iterable[T], *, max_bytes: int, size: Callable[[T], int],
               name: str = "prefetch") -> Iterator[T]:
    """Yield ``items`` as a background thread produces them, at most ``max_bytes`` ahead
    (one item more when a single item is larger than that)."""
    ready: deque = deque()
    state = {"ahead": 0, "done": False, "error": None, "stop": False}
    changed = threading.Condition()

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                with changed:
                    ready.append(item)
                    state["ahead"] += size(item)
                    changed.notify_all()
                    while state["ahead"] > max_bytes and not state["stop"]:
                        changed.wait()
                    if state["stop"]:
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            state["error"] = exc
        finally:
            close = getattr(iterator, "close", None)
            if close is not None and state["stop"]:
                close()
            with changed:
                state["done"] = True
                changed.notify_all()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            with changed:
                while not ready and not state["done"]:
                    changed.wait()
                if ready:
                    item = ready.popleft()
                    state["ahead"] -= size(item)
                    changed.notify_all()
                elif state["error"] is not None:
                    raise state["error"]
                else:
                    return
            yield item
            del item
    finally:
        with changed:
            state["stop"] = True
            ready.clear()
            changed.notify_all()
        thread.join()

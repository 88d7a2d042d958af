"""connectors.pipeline.prefetch: order, errors, the byte bound and stopping early."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from connectors.pipeline.prefetch import prefetched


def test_items_come_out_in_order_and_complete():
    assert list(prefetched(iter(range(1000)), max_bytes=10, size=lambda _: 1)) == list(range(1000))


def test_an_error_arrives_after_the_items_made_before_it():
    def source():
        yield from range(5)
        raise ConnectionError("dropped")

    seen = []
    with pytest.raises(ConnectionError, match="dropped"):
        for item in prefetched(source(), max_bytes=100, size=lambda _: 1):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_the_producer_stays_within_the_byte_bound():
    made = []
    def source():
        for n in range(100):
            made.append(n)
            yield n

    items = prefetched(source(), max_bytes=30, size=lambda _: 10)
    first = next(items)
    # Give the producer every chance to run ahead, then check how far it went.
    time.sleep(0.5)
    assert first == 0
    assert len(made) <= 1 + 4, f"produced {len(made)} items, 3-4 allowed ahead of the consumer"
    assert list(items) == list(range(1, 100))


def test_closing_early_stops_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    items = prefetched(source(), max_bytes=5, size=lambda _: 1, name="test-prefetch")
    with contextlib.closing(items):
        for item in items:
            if item == 3:
                break
    assert closed.is_set(), "the source iterator was not closed"
    assert not [t for t in threading.enumerate() if t.name == "test-prefetch"]

"""connectors.pipeline.restore_readers.ReadAhead: a restore's reader is read in a thread ahead of
the restore, in order, failures included, within its byte bound, the reader's other methods its own."""

from __future__ import annotations

import threading

from connectors.archives import ArchivedMessage, ArchiveFailure, ArchiveReader
from connectors.pipeline.restore_readers import ReadAhead


class ListReader(ArchiveReader):
    """An in-memory reader: what it yields, and from which thread, is recorded."""

    def __init__(self, items) -> None:
        self.items, self.made, self.threads, self.closed = items, [], set(), False
        self.produced = threading.Condition()

    def messages(self, selection=None):
        for item in self.items:
            self.threads.add(threading.get_ident())
            with self.produced:
                self.made.append(item.entry)
                self.produced.notify_all()
            yield item

    def folders(self):
        return ["INBOX"]

    def close(self) -> None:
        self.closed = True


def message(n: int, size: int = 10) -> ArchivedMessage:
    return ArchivedMessage("INBOX", b"x" * size, entry=f"e{n}")


def test_messages_come_in_order_from_another_thread_with_failures():
    items = [message(0), ArchiveFailure("INBOX", "bad", "damaged"), message(1)]
    inner = ListReader(items)
    with ReadAhead(inner) as reader:
        assert list(reader.messages()) == items
        assert reader.folders() == ["INBOX"]
    assert inner.closed
    assert inner.threads and threading.get_ident() not in inner.threads


def test_the_next_messages_are_read_while_the_restore_holds_one_within_the_bound():
    inner = ListReader([message(n, size=100) for n in range(50)])
    items = ReadAhead(inner, max_bytes=350).messages()
    first = next(items)
    with inner.produced:  # the reader goes on while the consumer still works on the first message
        assert inner.produced.wait_for(lambda: len(inner.made) >= 4, timeout=30)
    made = len(inner.made)
    assert first.entry == "e0" and made < 10  # ... but no further than the bound (+1 item, +1 taken)
    assert [m.entry for m in items] == [f"e{n}" for n in range(1, 50)]

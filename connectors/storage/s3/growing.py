"""Send a local file to S3 while it is still being written.

The PST writer produces its file front to back, but comes back to a few places: the header in
the first bytes (written last), allocation-map pages a few megabytes behind the cursor, FMap
pages when it closes. Waiting for the whole file before uploading would add its whole upload
after the writing (bench/README.md). Here a part goes out once the writer says it has settled
(``send_settled``), parts it will write at close wait (``deferred``), and ``finish`` sends
part 1, the deferred parts and the tail.

Part 1 goes last, so the other parts arrive out of order. S3 takes parts in any order, but
rclone's S3 server (our local store) writes the object strictly in part order: it holds later
parts in memory, up to 256 MiB by default (``--multipart-streaming-buffer-limit``), and beyond
that makes them wait, which with every upload thread waiting would leave no thread to send
part 1 (seen: 34 parts of 8 MB hang). So ``max_ahead`` bounds what is sent before part 1
(``LEGACYFLO_S3_MAX_AHEAD_BYTES``; by default everything on AWS S3, elsewhere 224 MiB, a few
parts below rclone's limit: ``default_max_ahead``). Whatever rclone does not hold is written
after the PST closes, so more ahead means a shorter tail (bench/README.md).

Re-sending a part that changed after it was sent is not an option either: S3 allows it, but
rclone refuses a second, different upload of a part. So the writer records
every write behind what was sent (``watch``), and ``finish`` raises ``SentPartChanged`` if one
touched a sent part; the caller then uploads the finished file afresh. The object is the final
file byte for byte either way; the writer's notion of "settled" only decides how fast.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from urllib.parse import urlsplit

from connectors.storage.s3.sink import MAX_PARTS, MultipartSink, UploadedPart

# Eager parts stop here so the tail, however large the file grows, still has part numbers.
EAGER_PART_LIMIT = MAX_PARTS // 2
# Sent ahead of part 1 to a store that may write parts in order: a few parts below the 256 MiB
# that rclone's S3 server holds by default.
IN_ORDER_SAFE_AHEAD = 224 * 1024 * 1024
UNLIMITED_AHEAD = 1 << 62


def default_max_ahead(endpoint_url: str) -> int:
    """How much to send before part 1 when the operator did not say: AWS S3 keeps each part as
    it arrives, so everything (the upload then overlaps the conversion, however big the PST);
    any other endpoint might be rclone's S3 server, so ``IN_ORDER_SAFE_AHEAD``."""
    host = (urlsplit(endpoint_url).hostname or "").lower() if endpoint_url else "s3.amazonaws.com"
    if host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        return UNLIMITED_AHEAD
    return IN_ORDER_SAFE_AHEAD


class SentPartChanged(Exception):
    """A part already sent was written again afterwards: this upload cannot be completed."""


def tail_parts(start: int, size: int, part_bytes: int) -> list[tuple[int, int, int]]:
    """(number, offset, length) of the parts for ``[start, size)``, ``start`` being a part
    boundary; longer than ``part_bytes`` when the part numbers left would not do."""
    if start >= size:
        return []
    number = start // part_bytes + 1
    length = max(part_bytes, -(-(size - start) // (MAX_PARTS - number + 1)))
    jobs = []
    while start < size:
        jobs.append((number, start, min(length, size - start)))
        start, number = start + length, number + 1
    return jobs


class FileRange:
    """Part of a local file, read only when the part is sent (bounded memory)."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self.path, self.offset, self.size = path, offset, size

    def body(self) -> bytes:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            return fh.read(self.size)


class GrowingFileUpload:
    """One multipart upload of one file that grows at its end and is written again in places.

    Parts are ``part_bytes`` long, numbered from the start of the file; part 1 and the parts
    for which ``deferred(start, end)`` is true wait for ``finish``, and so does everything
    beyond ``max_ahead`` bytes after part 1. ``watch(offset)`` is
    called before any byte below ``offset`` is read, so the writer records every later write
    there; ``finish`` gets those ranges.
    """

    def __init__(self, sink: MultipartSink, path: Path, *, part_bytes: int, in_flight: int,
                 max_ahead: int = UNLIMITED_AHEAD, watch: Callable[[int], None] = lambda offset: None,
                 deferred: Callable[[int, int], bool] = lambda start, end: False,
                 on_part: Callable[[UploadedPart], None] = lambda part: None) -> None:
        self.sink, self.path, self.part_bytes = sink, Path(path), part_bytes
        self.in_flight, self.watch, self.deferred, self.on_part = max(1, in_flight), watch, deferred, on_part
        self.max_ahead = max_ahead
        self.parts: dict[int, UploadedPart] = {}
        self.deferred_parts: list[int] = []
        self._pending: deque[Future] = deque()
        self.sent_end = part_bytes  # the next eager part starts here

    @property
    def next_part_end(self) -> int:
        """The file offset that must have settled before the next eager part can go."""
        return self.sent_end + self.part_bytes

    def send_settled(self, settled: int) -> None:
        """Send the parts that lie wholly below ``settled`` without waiting for any (at most
        ``in_flight`` at a time; the rest go on a later call or in ``finish``)."""
        self._collect(wait=False)
        while (self.sent_end // self.part_bytes < EAGER_PART_LIMIT
               and self.next_part_end - self.part_bytes <= self.max_ahead
               and self.next_part_end <= settled and len(self._pending) < self.in_flight):
            start, number = self.sent_end, self.sent_end // self.part_bytes + 1
            self.sent_end += self.part_bytes
            self.watch(self.sent_end)  # before the part is read
            if self.deferred(start, self.sent_end):
                self.deferred_parts.append(number)
                continue
            self._pending.append(self.sink.submit(number, FileRange(self.path, start, self.part_bytes),
                                                  self.part_bytes))

    def finish(self, size: int, rewrites: Iterable[tuple[int, int] | list[int]]) -> list[UploadedPart]:
        """Send part 1, the deferred parts and the tail of the closed file of ``size`` bytes;
        return every part, for ``CompleteMultipartUpload``. Raises ``SentPartChanged``."""
        self._collect(wait=True)
        for start, end in rewrites:
            for number in range(start // self.part_bytes + 1, (end - 1) // self.part_bytes + 2):
                if number in self.parts:
                    raise SentPartChanged(f"part {number} was written again after it was sent")
        eager_end = self.sent_end if self.sent_end > self.part_bytes else 0
        jobs = [(1, 0, min(self.part_bytes, size))]
        jobs += [(n, (n - 1) * self.part_bytes, self.part_bytes) for n in self.deferred_parts]
        jobs += tail_parts(max(eager_end, min(self.part_bytes, size)), size, self.part_bytes)
        for number, start, length in jobs:
            self._pending.append(self.sink.submit(number, FileRange(self.path, start, length), length))
        self._collect(wait=True)
        return [self.parts[n] for n in sorted(self.parts)]

    def _collect(self, wait: bool) -> None:
        while self._pending and (wait or self._pending[0].done()):
            part = self._pending.popleft().result()
            self.parts[part.number] = part
            self.on_part(part)

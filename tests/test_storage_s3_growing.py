"""connectors.storage.s3.growing: a file sent while it is written equals the final file, byte for byte."""

from __future__ import annotations

import hashlib
import random

import pytest

from connectors.archives.pst import PstWriter, check_pst
from connectors.archives.pst.fileout import PositionedOutput
from connectors.model import Message
from connectors.storage.s3.growing import (
    IN_ORDER_SAFE_AHEAD,
    UNLIMITED_AHEAD,
    GrowingFileUpload,
    SentPartChanged,
    default_max_ahead,
    tail_parts,
)
from connectors.storage.s3.sink import MAX_PARTS, MultipartSink
from tests.fixtures_engine import *  # noqa: F403 - the s3 fixtures
from tests.fixtures_engine import multipart_uploads
from tests.mailgen import generate_mailbox

PART = 64 * 1024


def _upload(s3, key: str, path, *, part_bytes=PART, in_flight=1000,
            deferred=lambda start, end: False) -> tuple[MultipartSink, GrowingFileUpload]:
    """``in_flight`` is large so which parts go early depends on what has settled, not on how
    fast the server answers (with 2 in flight a slow answer kept parts back: flaky)."""
    sink = MultipartSink(s3.client(), s3.bucket, key, threads=2, content_md5=False)
    sink.create()
    return sink, GrowingFileUpload(sink, path, part_bytes=part_bytes, in_flight=in_flight, deferred=deferred)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_growing(path, upload, *, rewrite_behind: bool) -> PositionedOutput:
    """3 MB written 4 KB at a time, parts sent 256 KB behind the end, the start written last;
    with ``rewrite_behind`` one write goes back into part 2, sent long before."""
    out = PositionedOutput(path)
    upload.watch = lambda below: setattr(out, "watch_below", max(out.watch_below, below))
    rng = random.Random(3)
    size = 3 * 1024 * 1024 + 777
    for offset in range(0, size, 4096):
        out.write_at(offset, rng.randbytes(min(4096, size - offset)))
        out.flush()
        upload.send_settled(max(0, out.eof - 256 * 1024))
    if rewrite_behind:
        out.write_at(PART + 10, b"changed")
    out.write_at(0, b"HEADER")  # like the PST header, written last
    out.close()
    return out


def test_parts_sent_while_writing_make_the_finished_file(tmp_path, s3):
    path = tmp_path / "growing.bin"
    sink, upload = _upload(s3, "growing.bin", path)
    out = _write_growing(path, upload, rewrite_behind=False)
    assert upload.sent_end >= 6 * PART and out.rewrites == [[0, 6]]  # parts went early
    sink.complete(upload.finish(path.stat().st_size, out.rewrites))
    sink.close()
    assert _sha(s3.path("growing.bin")) == _sha(path)
    assert multipart_uploads(s3.client(), s3.bucket) == []


def test_no_more_than_max_ahead_is_sent_before_part_1(tmp_path, s3):
    """rclone's S3 server holds parts that arrive before part 1 in memory, up to ~256 MB."""
    path = tmp_path / "bounded.bin"
    sink, upload = _upload(s3, "bounded.bin", path)
    upload.max_ahead = 4 * PART
    out = _write_growing(path, upload, rewrite_behind=False)
    assert upload.sent_end == 5 * PART  # parts 2-5 went early, the rest waited for part 1
    sink.complete(upload.finish(path.stat().st_size, out.rewrites))
    sink.close()
    assert _sha(s3.path("bounded.bin")) == _sha(path)


def test_a_write_into_a_sent_part_is_caught(tmp_path, s3):
    path = tmp_path / "changed.bin"
    sink, upload = _upload(s3, "changed.bin", path)
    out = _write_growing(path, upload, rewrite_behind=True)
    with pytest.raises(SentPartChanged, match="part 2 was written again"):
        upload.finish(path.stat().st_size, out.rewrites)
    sink.abort()
    assert multipart_uploads(s3.client(), s3.bucket) == []


def test_a_pst_sent_while_written_is_the_finished_file(tmp_path, s3):
    """~45 MB: map pages, filled holes, the header and an FMap page are written behind the cursor."""
    path = tmp_path / "sent.pst"
    mailbox = generate_mailbox("flat", count=500, size=30_000)
    with PstWriter(path, durable=False) as writer:
        sink, upload = _upload(s3, "sent.pst", path, part_bytes=1024 * 1024, in_flight=1000,
                               deferred=writer.written_at_close)
        upload.watch = writer.watch_rewrites
        writer.add_folder("INBOX")
        for n, msg in enumerate(mailbox.messages()):
            writer.add_message(Message(msg.folder, str(n), msg.raw, msg.internal_date))
            if writer.allocated_bytes - writer.SETTLED_LAG >= upload.next_part_end:
                upload.send_settled(writer.settled_bytes())
        sent_during_writing = len(upload.parts) + len(upload._pending)
    assert path.stat().st_size > 40_000_000 and sent_during_writing > 30
    assert upload.deferred_parts  # the one holding the FMap page
    assert any(start == 0 for start, _end in writer.rewrites)  # the header
    sink.complete(upload.finish(path.stat().st_size, writer.rewrites))
    sink.close()
    assert _sha(s3.path("sent.pst")) == _sha(path)
    assert check_pst(s3.path("sent.pst")) == []


def test_the_tail_gets_longer_parts_when_part_numbers_run_short():
    assert tail_parts(10, 10, 4) == []
    assert tail_parts(8, 18, 4) == [(3, 8, 4), (4, 12, 4), (5, 16, 2)]
    start = (MAX_PARTS - 10) * PART  # ten part numbers left for a gigabyte
    jobs = tail_parts(start, start + 1024**3, PART)
    assert jobs[0][0] == MAX_PARTS - 9 and jobs[-1][0] <= MAX_PARTS
    assert sum(length for _n, _start, length in jobs) == 1024**3
    assert all(b[1] == a[1] + a[2] for a, b in zip(jobs, jobs[1:], strict=False))


@pytest.mark.parametrize(("endpoint", "ahead"), [
    ("", UNLIMITED_AHEAD),  # no endpoint: AWS S3
    ("https://s3.eu-central-1.amazonaws.com", UNLIMITED_AHEAD),
    ("https://S3.CN-NORTH-1.AMAZONAWS.COM.CN", UNLIMITED_AHEAD),
    ("http://127.0.0.1:9000", IN_ORDER_SAFE_AHEAD),  # might be rclone's S3 server
    ("https://minio.example.com", IN_ORDER_SAFE_AHEAD),
    ("https://amazonaws.com.evil.example", IN_ORDER_SAFE_AHEAD),
])
def test_by_default_everything_goes_ahead_of_part_1_only_on_aws(endpoint, ahead):
    assert default_max_ahead(endpoint) == ahead

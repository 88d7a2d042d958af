"""connectors.archives.pst.parseworker: the parsing process gives exactly what parsing here gives."""

from __future__ import annotations

import hashlib

from connectors.archives.pst.mime import parse_message
from connectors.archives.pst.parseworker import ParseWorker
from tests.mailgen import generate_mailbox
from tests.pst_corpus import broken_multipart_message, feature_corpus, no_body_message


def _corpus() -> list[bytes]:
    raws = [m.message.raw for m in feature_corpus()]
    raws += [no_body_message()[0], broken_multipart_message()[0]]
    raws += [m.raw for m in generate_mailbox("test", seed=5).messages()]
    return raws


def test_the_worker_parses_and_hashes_like_this_process():
    raws = _corpus()
    with ParseWorker() as worker:
        got = worker.parse_batch(raws[:7]) + worker.parse_batch(raws[7:])
        assert worker.alive
    assert len(got) == len(raws)
    for raw, (digest, parsed) in zip(raws, got, strict=True):
        assert digest == hashlib.sha256(raw).hexdigest()
        assert parsed == parse_message(raw)  # attachments' contents point into ``raw`` again


def test_a_dead_worker_is_replaced_by_parsing_here():
    raws = _corpus()[:10]
    worker = ParseWorker()
    worker._proc.kill()  # noqa: SLF001 - the child dies between two batches
    worker._proc.wait()  # noqa: SLF001
    got = worker.parse_batch(raws)
    assert not worker.alive
    assert [d for d, _ in got] == [hashlib.sha256(r).hexdigest() for r in raws]
    assert [p for _, p in got] == [parse_message(r) for r in raws]
    assert worker.parse_batch([]) == []
    worker.close()

"""MIME parsing for the PST writer in a second process, so the conversion has a core to itself.

The PST conversion runs on one thread and holds the GIL nearly all the time; parsing each
message (``mime.parse_message``, ~0.7 s per 3,000 messages / 574 MB) was a sixth of it. A
child process parses the next messages while the writer converts the current one:

    worker = ParseWorker()          # starts ``python -m connectors.archives.pst.parseworker``
    for digest, parsed in worker.parse_batch(raws):   # sha256 hex, mime.parse_message(raw)
        ...
    worker.close()

Messages go in batches (a few MB): the calling thread then takes the GIL back once per batch,
not several times per message; waiting for the GIL (up to the 5 ms switch interval while the
converter holds it) per message made the fetching thread, not the converter, the bottleneck.

Protocol on the child's stdin/stdout: an 8-byte count, then per message an 8-byte length and
its bytes in; an 8-byte length and one pickle of the list of (SHA-256, ``ParsedMessage``) out.
Every ``EncodedContent`` that points into a message is sent without its ``source`` (the parent
puts its own copy of the bytes back), so only the small parse results come back. The pickle
comes from our own child.

Whatever goes wrong with the child (it cannot start, dies, answers garbage) the messages are
parsed in this process instead and the child is not used again: slower, never a lost message.
``parse_batch`` is called from one thread at a time (the export's parsing stage).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

from .mime import ParsedMessage, parse_message

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("<Q")
_ROOT = Path(__file__).resolve().parents[2]  # the directory holding ``connectors``


def _contents(parsed: ParsedMessage):
    """Every ``EncodedContent`` of a parse result, embedded messages included."""
    for large in (parsed.large_body_text, parsed.large_body_html):
        if large is not None:
            yield large.content
    for attachment in parsed.attachments:
        if attachment.content is not None:
            yield attachment.content
        if attachment.embedded is not None:
            yield from _contents(attachment.embedded)


def detach(parsed: ParsedMessage, raw: bytes) -> ParsedMessage:
    """Drop the references to ``raw`` (the receiver has it); other sources (a decoded
    embedded message) travel with the result."""
    for content in _contents(parsed):
        if content.source is raw:
            content.source = None
    return parsed


def attach(parsed: ParsedMessage, raw: bytes) -> ParsedMessage:
    for content in _contents(parsed):
        if content.source is None:
            content.source = raw
    return parsed


class ParseWorker:
    """A child process that parses messages; falls back to parsing here if it fails."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(_ROOT), os.environ.get("PYTHONPATH"))))}
        try:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-m", "connectors.archives.pst.parseworker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, env=env, cwd=str(_ROOT))
        except OSError as exc:
            log.warning("could not start the MIME parsing process (%s); parsing in-process", exc)
            self._proc = None

    @property
    def alive(self) -> bool:
        return self._proc is not None

    def parse_batch(self, raws: list[bytes]) -> list[tuple[str, ParsedMessage]]:
        """(SHA-256 hex, parse) of each message, in order."""
        if self._proc is not None and raws:
            try:
                answers = self._ask(raws)
                return [(digest, attach(parsed, raw)) for (digest, parsed), raw in zip(answers, raws, strict=True)]
            except Exception as exc:  # noqa: BLE001 - any trouble: parse here from now on
                log.warning("the MIME parsing process failed (%r); parsing in-process", exc)
                self._stop(kill=True)
        return [prepare(raw) for raw in raws]

    def _ask(self, raws: list[bytes]) -> list[tuple[str, ParsedMessage]]:
        proc = self._proc
        proc.stdin.write(_LENGTH.pack(len(raws)))
        for raw in raws:
            proc.stdin.write(_LENGTH.pack(len(raw)))
            proc.stdin.write(raw)
        proc.stdin.flush()
        size = _LENGTH.unpack(_read_exactly(proc.stdout, _LENGTH.size))[0]
        answers = pickle.loads(_read_exactly(proc.stdout, size))  # noqa: S301 - our own child
        if (not isinstance(answers, list) or len(answers) != len(raws)
                or not all(isinstance(parsed, ParsedMessage) for _digest, parsed in answers)):
            raise TypeError("unexpected answer")
        return answers

    def close(self) -> None:
        self._stop(kill=False)

    def _stop(self, *, kill: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if kill:
                proc.kill()
            else:
                proc.stdin.close()  # the child's read ends: it exits
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass

    def __enter__(self) -> ParseWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_exactly(stream, size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError("the parsing process closed its output")
    return data


def prepare(raw: bytes) -> tuple[str, ParsedMessage]:
    return hashlib.sha256(raw).hexdigest(), parse_message(raw)


def main() -> int:
    """The child: parse batches of messages from stdin until it closes."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = source.read(_LENGTH.size)
        if len(header) < _LENGTH.size:
            return 0
        answers = []
        for _ in range(_LENGTH.unpack(header)[0]):
            raw = _read_exactly(source, _LENGTH.unpack(_read_exactly(source, _LENGTH.size))[0])
            digest, parsed = prepare(raw)
            answers.append((digest, detach(parsed, raw)))
        answer = pickle.dumps(answers, protocol=pickle.HIGHEST_PROTOCOL)
        sink.write(_LENGTH.pack(len(answer)))
        sink.write(answer)
        sink.flush()


if __name__ == "__main__":
    sys.exit(main())

"""Cheap, tolerant extraction of the report's header fields from raw message bytes.

Only the header block is looked at (never the body, never a full MIME parse), so this costs
microseconds even for a 30 MB message. It never raises: real mailboxes contain raw 8-bit
headers in unknown charsets, encoded words with bogus charsets or broken base64, messages
without Date or From, and messages without any header at all. Whatever cannot be decoded is
replaced, never dropped. Lines may end in CRLF, a bare LF or a bare CR (old Mac mailers), mixed
within one message, as Python's ``email`` package reads them.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.utils
import re
from dataclasses import dataclass

HEADER_SCAN_LIMIT = 256 * 1024
FIELD_LIMIT = 998  # one RFC 5322 line: plenty for a report cell

_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(rb"(\?=)[ \t\r\n]+(=\?)")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\r\n]+")
_NEEDS_CLEANING = re.compile(rb"[\x00-\x1f\x7f]|  ")
# An empty line: two line ends in a row, each CRLF, LF or CR (a CR before LF is never a line end alone).
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
_WANTED = {b"message-id": "message_id", b"date": "date", b"from": "from_", b"to": "to",
           b"subject": "subject"}


@dataclass(frozen=True)
class HeaderInfo:
    message_id: str = ""
    date: str = ""  # ISO 8601 when parseable, else the header as written
    from_: str = ""
    to: str = ""
    subject: str = ""


def header_end(raw: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(end of the header block, start of the body) of the entity in ``raw[start:end]``: the
    header block stops before the first empty line; without one it runs to ``end``."""
    end = len(raw) if end is None else end
    if raw.startswith((b"\r\n", b"\n", b"\r"), start):  # no header at all
        return start, start + (2 if raw.startswith(b"\r\n", start) else 1)
    found = _BLANK_LINE.search(raw, start, end)
    if found is None:
        return end, end
    return found.start(), found.end()


def header_block(raw: bytes, limit: int = HEADER_SCAN_LIMIT) -> bytes:
    """The bytes before the first empty line (all of ``raw`` up to ``limit`` if there is none),
    with every line ending made LF."""
    block = raw[:header_end(raw, 0, min(len(raw), limit))[0]]
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return block


def _charset_decode(data: bytes, charset: str) -> str:
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    try:
        return data.decode(charset)
    except UnicodeDecodeError:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", errors="replace")


def _bytes_to_text(data: bytes) -> str:
    """Raw (8-bit) header bytes: UTF-8 if valid, else Windows-1252 (a superset of Latin-1 in practice)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _decode_word(match: re.Match) -> str:
    charset = match.group(1).decode("ascii", "replace").split("*", 1)[0]  # RFC 2231 language
    kind, payload = match.group(2).upper(), match.group(3)
    try:
        if kind == b"B":
            data = base64.b64decode(payload + b"=" * (-len(payload) % 4))
        else:
            data = binascii.a2b_qp(payload.replace(b"_", b" "), header=True)
    except (binascii.Error, ValueError):
        return _bytes_to_text(match.group(0))
    return _charset_decode(data, charset)


def decode_header_value(value: bytes) -> str:
    """Unfolded, encoded words decoded, control characters removed, whitespace collapsed.

    Raw and encoded segments are decoded separately, so a header mixing raw Latin-1 bytes
    with UTF-8 encoded words keeps both readable.
    """
    if b"=?" not in value and value.isascii() and not _NEEDS_CLEANING.search(value):
        return value.strip().decode("ascii")[:FIELD_LIMIT]  # the common case, fast
    value = _BETWEEN_WORDS.sub(rb"\1\2", value)  # whitespace between encoded words is dropped
    pieces, pos = [], 0
    for match in _ENCODED_WORD.finditer(value):
        pieces.append(_bytes_to_text(value[pos:match.start()]))
        pieces.append(_decode_word(match))
        pos = match.end()
    pieces.append(_bytes_to_text(value[pos:]))
    text = _SPACES.sub(" ", _CONTROL.sub("", "".join(pieces))).strip()
    return text[:FIELD_LIMIT]


def _iso_date(text: str) -> str:
    if not text:
        return ""
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return text
    if parsed is None:
        return text
    return parsed.isoformat()


def _field(block: bytes, lower: bytes, name: bytes) -> bytes | None:
    """The unfolded value of the first ``name:`` header in ``block`` (``lower`` is block.lower())."""
    if lower.startswith(name):
        pos = 0
    else:
        pos = lower.find(b"\n" + name) + 1
        if pos == 0:
            return None
    start = pos + len(name)
    end = block.find(b"\n", start)
    while end >= 0 and block[end + 1:end + 2] in (b" ", b"\t"):  # folded continuation
        end = block.find(b"\n", end + 1)
    return block[start:] if end < 0 else block[start:end]


def extract(raw: bytes) -> HeaderInfo:
    """Message-ID, Date, From, To and Subject of a raw message (first occurrence of each)."""
    block = header_block(raw)
    lower = block.lower()
    fields = {}
    for name, key in _WANTED.items():
        value = _field(block, lower, name + b":")
        if value is not None:
            fields[key] = decode_header_value(value)
    if "date" in fields:
        fields["date"] = _iso_date(fields["date"])
    return HeaderInfo(**fields)

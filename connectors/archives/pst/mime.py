"""RFC 5322 / MIME bytes -> what a PST message needs: headers, addresses, bodies, attachments.

The parser works on offsets into the caller's bytes and never copies an attachment: its
content is decoded in chunks (base64, quoted-printable) straight into PST blocks, so a 40 MB
attachment costs a few megabytes of memory beyond the message bytes themselves.

The MIME tree is the one Python's ``email`` package (policy ``default``) finds in the same
bytes (see ``_walk`` and ``_split_multipart``); ``ParsedMessage.differences`` says where the
PST cannot show what that parser sees. It never raises on bad input: a message with broken
MIME still yields its headers and its text, and anything odd is noted in its ``defects``.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message as _ParamParser
from email.utils import getaddresses, parsedate_to_datetime

import pybase64

# Decoded pieces stay below glibc's mmap threshold as the export sets it (connectors.memtune,
# 256 KB): larger ones would each be a fresh mmap, and page faults cost ~2.5 s per 450 MB of
# attachments on the benchmark machine (measured: 577,000 faults against 361,000 untuned).
CHUNK = 192 * 1024
LARGE_BODY = 4 << 20  # transfer-encoded size above which a text body is streamed, not decoded
MAX_MULTIPART_DEPTH = 20
MAX_EMBEDDED_DEPTH = 8

_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_ENCODED_WORD_GAP = re.compile(rb"(\?=)[ \t\r\n]+(=\?)")
_CHARSET_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "ks_c_5601-1987": "cp949",
                    "x-sjis": "shift_jis", "unicode-1-1-utf-7": "utf-7", "x-mac-roman": "mac_roman",
                    "unknown-8bit": "cp1252", "x-unknown": "cp1252", "default": "cp1252"}  # fmt: skip


@dataclass(frozen=True)
class Address:
    name: str
    address: str


@dataclass
class EncodedContent:
    """A MIME part's body as it sits in the message: where, and how it is transfer-encoded."""

    source: bytes
    start: int
    end: int
    encoding: str  # "base64", "quoted-printable" or anything else (taken as is)

    def chunks(self) -> Iterator[bytes]:
        """The decoded bytes, in pieces of about ``CHUNK`` bytes."""
        if self.encoding == "base64":
            yield from _decode_base64(self.source, self.start, self.end)
            return
        view = memoryview(self.source)[self.start : self.end]
        if self.encoding == "quoted-printable":
            yield from _decode_quoted_printable(view)
        else:
            for at in range(0, len(view), CHUNK):
                yield bytes(view[at : at + CHUNK])

    def decode(self) -> bytes:
        return b"".join(self.chunks())


@dataclass
class LargeText:
    """A text body too large to decode at once: decoded chunk by chunk when it is written."""

    content: EncodedContent
    charset: str | None

    def text_chunks(self) -> Iterator[str]:
        try:
            decoder = codecs.getincrementaldecoder(_codec_name(self.charset) or "utf-8")("replace")
        except LookupError:
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
        for chunk in self.content.chunks():
            yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True)


@dataclass
class Attachment:
    filename: str
    mime_type: str
    content_id: str | None
    inline: bool
    content: EncodedContent | None = None  # None for an embedded message
    embedded: ParsedMessage | None = None


@dataclass
class ParsedMessage:
    headers: str = ""
    subject: str = ""
    sender: Address | None = None
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    sent: datetime | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: str | None = None
    importance: int = 1  # 0 low, 1 normal, 2 high
    body_text: str | None = None
    body_html: str | None = None
    large_body_text: LargeText | None = None  # set instead of body_text for huge bodies
    large_body_html: LargeText | None = None
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)  # odd MIME, shown as Python shows it
    # Where the PST shows the message otherwise than Python's email package (policy default)
    # reads the source; the export's report carries these for the message.
    differences: list[str] = field(default_factory=list)


def parse_message(raw: bytes, *, _depth: int = 0) -> ParsedMessage:
    """Parse a whole message. Never raises on malformed input."""
    return _parse_entity(raw, 0, len(raw), _depth)


# -- headers ----------------------------------------------------------------------------------


# The header lines of an entity as the standard library's feedparser takes them (its
# ``headerRE``): a header, a continuation, or an mbox "From " line; lines end in CRLF, CR or LF.
_HEADER_LINES = re.compile(
    rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[\t ])[^\r\n]*(?:\r\n|\r|\n|\Z))*"
)
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def _split_header(source: bytes, start: int, end: int) -> tuple[int, int]:
    """(end of the header block, start of the body) within [start, end): the header block is
    the header lines from ``start``; the blank line after it, if any, belongs to neither (a
    line that is no header line and not blank starts the body, as Python's parser has it)."""
    header_end = _HEADER_LINES.match(source, start, end).end()
    if source.startswith(b"\r\n", header_end, end):
        return header_end, header_end + 2
    if source.startswith((b"\r", b"\n"), header_end, end):
        return header_end, header_end + 1
    return header_end, header_end


def _strip_line_break(source: bytes, start: int, end: int) -> int:
    """``end`` less one line break ending ``source[start:end]`` (RFC 2046: the line break
    before a boundary belongs to the boundary)."""
    if end - start >= 2 and source.startswith(b"\r\n", end - 2, end):
        return end - 2
    if end > start and source[end - 1] in (0x0A, 0x0D):
        return end - 1
    return end


def _codec_name(charset: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None if there is none."""
    if not charset:
        return None
    label = charset.strip().strip('"')
    name = _CHARSET_ALIASES.get(label.lower(), label)
    try:
        codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    return name


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Text in ``charset`` if Python knows it, else UTF-8, else Windows-1252/Latin-1."""
    name = _codec_name(charset)
    if name:
        return data.decode(name, "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace") if _cp1252_ok(data) else data.decode("latin-1")


def _cp1252_ok(data: bytes) -> bool:
    try:
        data.decode("cp1252")
        return True
    except UnicodeDecodeError:
        return False


def decode_header_value(raw: bytes) -> str:
    """An unfolded header value: RFC 2047 encoded words decoded, 8-bit bytes taken as UTF-8."""
    raw = _ENCODED_WORD_GAP.sub(rb"\1\2", raw)
    pieces: list[str] = []
    position = 0
    for match in _ENCODED_WORD.finditer(raw):
        pieces.append(decode_bytes(raw[position : match.start()]))
        charset, kind, text = match.group(1), match.group(2), match.group(3)
        charset_name = charset.decode("ascii", "replace").split("*")[0]
        try:
            if kind in b"bB":
                data = binascii.a2b_base64(text + b"=" * (-len(text) % 4))
            else:
                data = binascii.a2b_qp(text.replace(b"_", b" "))
            pieces.append(decode_bytes(data, charset_name))
        except (binascii.Error, ValueError):
            pieces.append(decode_bytes(match.group(0)))
        position = match.end()
    pieces.append(decode_bytes(raw[position:]))
    return "".join(pieces)


def _parse_header_block(block: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, unfolded raw value) in order. Unfolding drops the line breaks and
    keeps the white space after them (RFC 5322 §2.2.3); an mbox "From " line, a continuation
    with nothing to continue and a line starting with a colon are skipped."""
    fields: list[tuple[str, bytes]] = []
    for line in _LINE_BREAK.split(block):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if fields:
                name, value = fields[-1]
                fields[-1] = (name, value + line)
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or line.startswith(b"From "):
            continue
        fields.append((name.decode("ascii", "replace").lower(), value.lstrip(b" \t")))
    return [(name, value.rstrip()) for name, value in fields]


class _Headers:
    def __init__(self, block: bytes) -> None:
        self.fields = _parse_header_block(block)

    def raw(self, name: str) -> bytes | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None

    def text(self, name: str) -> str | None:
        value = self.raw(name)
        return None if value is None else decode_header_value(value).strip()

    def all_raw(self, name: str) -> list[bytes]:
        return [v for k, v in self.fields if k == name]


# A Content-Type or Content-Disposition value that the compat32 parameter parser reads as the
# standard parser does (tokens and plain quoted strings, RFC 2231 forms included); any other
# (stray characters, encoded words, 8-bit bytes, unbalanced quotes) is first normalized by the
# standard header parser, as Python's email package does, at fifty times the cost.
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SIMPLE_PARAMETERS = re.compile(
    rb"[ \t]*" + _TOKEN + rb"(?:/" + _TOKEN + rb")?[ \t]*"
    rb"(?:;[ \t]*" + _TOKEN + rb'[ \t]*=[ \t]*(?:' + _TOKEN + rb'|"[\x20\x21\x23-\x5b\x5d-\x7e]*")[ \t]*)*'
    rb";?[ \t]*"
)


def _content_params(headers: _Headers) -> _ParamParser:
    """A stdlib Message holding only the Content-* headers, for its parameter parsing."""
    params = _ParamParser()
    for name in ("content-type", "content-disposition"):
        value = headers.raw(name)
        if value is None:
            continue
        if _SIMPLE_PARAMETERS.fullmatch(value) and b"=?" not in value:
            params[name] = value.decode("ascii")
        else:
            params[name] = _standard_header(name, value)
    return params


def _standard_header(name: str, value: bytes) -> str:
    """The value as Python's standard header parser (policy default) renders it."""
    from email.policy import default  # imported when first needed: 1.3 MB of modules

    text = value.decode("utf-8", "surrogateescape")
    try:
        return str(default.header_factory(name, text))
    except Exception:  # noqa: BLE001 - the standard parser gave up: the value as it is
        return decode_bytes(value)


# Address lists that the compat32 splitter reads as the standard parser does: plain addresses
# and "Display Name <address>" ones, ASCII only. Any other (comments, groups, quotes, encoded
# words, which may hide commas, 8-bit bytes, damage) the standard parser reads, at seven times
# the cost.
_ATOM = rb"[!#$%&'*+/=?^_`{|}~0-9A-Za-z-]+"
_ADDR_SPEC = _ATOM + rb"(?:\." + _ATOM + rb")*@[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
_MAILBOX = rb"(?:" + _ADDR_SPEC + rb"|[0-9A-Za-z .'_-]*<" + _ADDR_SPEC + rb">)"
_SIMPLE_ADDRESSES = re.compile(
    rb"[ \t]*" + _MAILBOX + rb"(?:[ \t]*,[ \t]*" + _MAILBOX + rb")*[ \t]*"
)


def _addresses(values: list[bytes]) -> list[Address]:
    """The mailboxes of address headers, as Python's email package (policy default) reads
    them; display names RFC 2047-decoded, 8-bit bytes taken as UTF-8 (else Windows-1252)."""
    out = []
    for value in values:
        text = value.decode("ascii", "surrogateescape")
        if _SIMPLE_ADDRESSES.fullmatch(value):
            pairs = getaddresses([text])
        else:
            pairs = _standard_addresses(text)
        for name, address in pairs:
            name, address = _unescape(name).strip(), _unescape(address).strip()
            if address in ("<>", '""'):
                address = ""
            if address or name:
                out.append(Address(name or address, address))
    return out


def _standard_addresses(text: str) -> list[tuple[str, str]]:
    from email.policy import default  # imported when first needed: 1.3 MB of modules

    try:
        header = default.header_factory("to", text)
        return [(a.display_name, a.addr_spec) for a in header.addresses]
    except Exception:  # noqa: BLE001 - the standard parser gave up: the simple split then
        return [(decode_header_value(n.encode("utf-8", "surrogateescape")), a)
                for n, a in getaddresses([text])]  # fmt: skip


def _unescape(text: str) -> str:
    """Undo the surrogate escapes of 8-bit header bytes."""
    if text.isascii():
        return text
    try:
        return decode_bytes(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return text


def _parse_date(value: str | None, *, any_year: bool = False) -> datetime | None:
    """The moment of a Date header, None if unparseable or (unless ``any_year``) outside the
    years a PST's FILETIME values hold."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if not any_year and not 1601 < moment.year < 9999:
        return None
    return moment


def _importance(headers: _Headers) -> int:
    value = (headers.text("importance") or "").lower()
    if value in ("high", "urgent"):
        return 2
    if value == "low":
        return 0
    priority = (headers.text("x-priority") or "").strip()[:1]
    if priority in ("1", "2"):
        return 2
    if priority in ("4", "5"):
        return 0
    return 1


# -- entities ---------------------------------------------------------------------------------


def _parse_entity(
    source: bytes, start: int, end: int, depth: int, default_type: str = "text/plain",
    strip_last: bool = False,
) -> ParsedMessage:
    """Parse the message in [start, end). ``strip_last``: it is attached to a multipart's part,
    so if it is a leaf its body loses the line break before the next boundary (Python's parser
    strips it from the last message it made in that part)."""
    message = ParsedMessage()
    header_end, body_start = _split_header(source, start, end)
    block = source[start:header_end]
    message.headers = decode_bytes(block).rstrip("\r\n")
    try:
        headers = _Headers(block)
        _fill_envelope(message, headers)
        _walk(message, source, headers, body_start, end, 0, depth, strip_last, default_type)
    except Exception as exc:  # noqa: BLE001 - a broken message must still become a message
        message.differences.append(f"unparseable MIME structure, kept as text: {exc!r}")
        message.attachments = []
        message.body_html = message.large_body_html = message.large_body_text = None
        message.body_text = None
        _set_raw_text_body(message, source, body_start, end)
    _drop_nul_characters(message)
    return message


def _has_nul(message: ParsedMessage) -> bool:
    for text in (message.subject, message.body_text, message.body_html):
        if text and "\x00" in text:
            return True
    for attachment in message.attachments:
        if "\x00" in attachment.filename:
            return True
    for group in (message.to, message.cc, message.bcc, [message.sender] if message.sender else ()):
        for address in group:
            if "\x00" in address.name or "\x00" in address.address:
                return True
    return False


def _drop_nul_characters(message: ParsedMessage) -> None:
    """MAPI strings end at a NUL (readers cut them there): drop the NULs of the texts."""
    if not _has_nul(message):
        return
    message.differences.append("NUL characters dropped from the text")
    message.subject = message.subject.replace("\x00", "")
    if message.body_text is not None:
        message.body_text = message.body_text.replace("\x00", "")
    if message.body_html is not None:
        message.body_html = message.body_html.replace("\x00", "")
    for attachment in message.attachments:
        attachment.filename = attachment.filename.replace("\x00", "") or "attachment"

    def clean(address: Address) -> Address:
        return Address(address.name.replace("\x00", ""), address.address.replace("\x00", ""))

    message.to, message.cc, message.bcc = ([clean(a) for a in group]
                                           for group in (message.to, message.cc, message.bcc))  # fmt: skip
    if message.sender is not None:
        message.sender = clean(message.sender)


def _set_raw_text_body(message: ParsedMessage, source: bytes, start: int, end: int) -> None:
    """The undecoded text of a part as the plain body (for broken structures)."""
    if end - start > LARGE_BODY:
        message.large_body_text = LargeText(EncodedContent(source, start, end, ""), None)
    else:
        message.body_text = decode_bytes(source[start:end])


# An unstructured header value that ``decode_header_value`` reads as the standard parser does:
# printable ASCII without encoded words. Others (encoded words, control characters, 8-bit
# bytes) the standard parser reads, its 8-bit bytes taken as UTF-8 (else Windows-1252).
_PLAIN_TEXT = re.compile(rb"[\x20-\x7e\t]*")


def _unstructured(headers: _Headers, name: str) -> str:
    value = headers.raw(name)
    if value is None:
        return ""
    if _PLAIN_TEXT.fullmatch(value):
        if b"=?" not in value:
            return value.decode("ascii").strip()
        clean = _clean_encoded_words(value)
        if clean is not None:
            return clean.strip()
    elif b"=?" not in value:  # 8-bit text (raw UTF-8, most often): the parser keeps it as is
        text = _unescape(value.decode("ascii", "surrogateescape"))
        if text.isprintable():
            return text.strip()
    # As the standard parser fetches a header: every line break (str.splitlines's, form feeds
    # and record separators included) dropped, before the 8-bit bytes are decoded.
    text = _unescape("".join(value.decode("ascii", "surrogateescape").splitlines()))
    return _standard_header(name, text.encode("utf-8", "surrogatepass")).strip()


# Encoded words the standard parser decodes just as a plain decode does: a charset Python
# names the same way, a well-formed payload, bytes valid in that charset. Any other encoded
# word (mislabelled or broken, which the parser repairs in its own ways) is left to it.
_CLEAN_CHARSETS = frozenset(("utf-8", "us-ascii", "iso-8859-1", "iso-8859-15", "windows-1252"))
_CLEAN_WORD = re.compile(rb"=\?([A-Za-z0-9-]+)\?(?:([bB])\?([A-Za-z0-9+/]*={0,2})|([qQ])\?"
                         rb"([\x21-\x3c\x3e\x40-\x7e]*(?:=[0-9A-F]{2}[\x21-\x3c\x3e\x40-\x7e]*)*))\?=")  # fmt: skip


def _clean_encoded_words(value: bytes) -> str | None:
    """``value`` decoded if every encoded word in it is clean (see above), else None."""
    pieces: list[str] = []
    position = 0
    for match in _CLEAN_WORD.finditer(value):
        charset = match.group(1).decode("ascii").lower()
        if charset not in _CLEAN_CHARSETS:
            return None
        gap = value[position : match.start()]
        if not (position and not gap.strip(b" \t")):  # white space between two words goes
            pieces.append(gap.decode("ascii"))
        try:
            if match.group(2):
                payload = match.group(3)
                if len(payload) % 4:
                    return None
                data = binascii.a2b_base64(payload, strict_mode=True)
            else:
                data = binascii.a2b_qp(match.group(5).replace(b"_", b" "))
            pieces.append(data.decode(charset))
        except (binascii.Error, UnicodeDecodeError):
            return None
        position = match.end()
    rest = value[position:]
    if b"=?" in rest or (not position and b"=?" in value):
        return None
    pieces.append(rest.decode("ascii"))
    text = "".join(pieces)
    return None if "=?" in text or not text.isprintable() else text


def _fill_envelope(message: ParsedMessage, headers: _Headers) -> None:
    message.subject = _unstructured(headers, "subject").replace("\r", "").replace("\n", "")
    senders = _addresses(headers.all_raw("from")) or _addresses(headers.all_raw("sender"))
    message.sender = senders[0] if senders else None
    message.to = _addresses(headers.all_raw("to"))
    message.cc = _addresses(headers.all_raw("cc"))
    message.bcc = _addresses(headers.all_raw("bcc"))
    date = headers.text("date")
    message.sent = _parse_date(date)
    if message.sent is None and _parse_date(date, any_year=True) is not None:
        message.differences.append(f"the date {date!r} is outside the years a PST holds;"
                                   " dated by its arrival")  # fmt: skip
    message.message_id = headers.text("message-id")
    message.in_reply_to = headers.text("in-reply-to")
    message.references = headers.text("references")
    message.importance = _importance(headers)


def _walk(
    message: ParsedMessage,
    source: bytes,
    headers: _Headers,
    start: int,
    end: int,
    multipart_depth: int,
    embed_depth: int,
    in_multipart: bool,
    default_type: str = "text/plain",
) -> None:
    """Route one entity's body: into the bodies, an attachment, or the parts of a multipart.

    The MIME tree is the one Python's ``email`` package (policy ``default``) builds from the
    same bytes: ``_split_multipart`` finds the parts its feedparser finds, and an entity that
    is a direct part of a multipart (``in_multipart``) loses the line break before the next
    boundary, as there. What the tree becomes in the PST: the first unnamed, not attached
    ``text/plain`` and ``text/html`` parts are the bodies, ``message/rfc822`` parts attached
    messages, every other part an attachment; empty unnamed text parts carry nothing.
    """
    params = _content_params(headers)
    if default_type != "text/plain":
        params.set_default_type(default_type)
    content_type = params.get_content_type()
    encoding = (headers.text("content-transfer-encoding") or "").lower().strip()
    disposition = (params.get_content_disposition() or "").lower()
    filename = _filename(params)

    if content_type.startswith("multipart/"):
        boundary = _boundary(params)
        parts = _split_multipart(source, start, end, boundary) if boundary else None
        if not isinstance(parts, list) or multipart_depth >= MAX_MULTIPART_DEPTH:
            # Python's parser keeps such a multipart as text: so does the PST.
            if isinstance(parts, list):
                message.differences.append(f"{content_type} nested deeper than "
                                           f"{MAX_MULTIPART_DEPTH} levels kept as text")  # fmt: skip
            elif not boundary:
                message.defects.append(f"{content_type} without a boundary; kept as text")
            else:
                message.defects.append(f"{content_type} whose boundary never starts a part;"
                                       " kept as text")  # fmt: skip
            content_type, filename, disposition = "text/plain", None, ""
            if isinstance(parts, tuple):
                start, end = parts
        else:
            part_type = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
            for part_start, part_end in parts:
                header_end, body_start = _split_header(source, part_start, part_end)
                part_headers = _Headers(source[part_start:header_end])
                _walk(message, source, part_headers, body_start, part_end, multipart_depth + 1,
                      embed_depth, True, part_type)  # fmt: skip
            return
    elif in_multipart:
        end = _strip_line_break(source, start, end)
    content = EncodedContent(source, start, end, encoding)

    if content_type == "message/rfc822":
        if embed_depth < MAX_EMBEDDED_DEPTH:
            if encoding in ("base64", "quoted-printable"):
                message.differences.append(f"an attached message is {encoding}-encoded "
                                           "(RFC 2046 forbids it): decoded")  # fmt: skip
                inner_bytes = content.decode()
                embedded = _parse_entity(inner_bytes, 0, len(inner_bytes), embed_depth + 1)
            else:
                embedded = _parse_entity(source, start, _unstripped(source, start, end, in_multipart),
                                         embed_depth + 1, strip_last=in_multipart)  # fmt: skip
            name = filename or ((embedded.subject or "message") + ".eml")
            for note in embedded.differences:
                message.differences.append(f"attached message {name!r}: {note}")
            message.attachments.append(
                Attachment(name, content_type, _content_id(headers), disposition == "inline",
                           None, embedded)
            )  # fmt: skip
            return
        message.differences.append(f"attached messages nested deeper than "
                                   f"{MAX_EMBEDDED_DEPTH} levels kept as .eml files")  # fmt: skip

    is_text = content_type in ("text/plain", "text/html") and (
        disposition != "attachment" and not filename
    )
    if is_text:
        charset = params.get_content_charset()
        large = end - start > LARGE_BODY
        text = None if large else decode_bytes(content.decode(), charset)
        if text is not None and not text.strip():
            return  # an empty text part: nothing to show, nothing to attach
        no_text = message.body_text is None and message.large_body_text is None
        no_html = message.body_html is None and message.large_body_html is None
        if content_type == "text/plain" and no_text:
            if large:
                message.large_body_text = LargeText(content, charset)
            else:
                message.body_text = text
            return
        if content_type == "text/html" and no_html:
            if large:
                message.large_body_html = LargeText(content, charset)
            else:
                message.body_html = text
            return

    if not filename:
        extension = mimetypes.guess_extension(content_type) or ".bin"
        filename = f"attachment{len(message.attachments) + 1}{extension}"
    message.attachments.append(
        Attachment(filename, content_type, _content_id(headers), disposition == "inline", content)
    )


def _unstripped(source: bytes, start: int, end: int, stripped: bool) -> int:
    """The end of a part before ``_strip_line_break``: an attached message is parsed whole,
    the line break stripped where Python's parser strips it (``_parse_entity``)."""
    if not stripped:
        return end
    if source.startswith(b"\r\n", end, end + 2):
        return end + 2
    if source[end : end + 1] in (b"\r", b"\n"):
        return end + 1
    return end


def _boundary(params: _ParamParser) -> str | None:
    try:
        return params.get_boundary()  # RFC 2231 (boundary*=) decoded
    except Exception:  # noqa: BLE001 - malformed parameters
        return None


def _filename(params: _ParamParser) -> str | None:
    try:
        name = params.get_filename()
    except Exception:  # noqa: BLE001 - malformed RFC 2231 parameters
        name = None
    if not name:
        return None
    if "=?" in name:
        name = decode_header_value(name.encode("utf-8", "surrogateescape"))
    return _unescape(name).replace("\x00", "").strip() or None


def _content_id(headers: _Headers) -> str | None:
    value = headers.text("content-id")
    if not value:
        return None
    return value.strip().strip("<>").strip() or None


def _split_multipart(
    source: bytes, start: int, end: int, boundary: str
) -> list[tuple[int, int]] | tuple[int, int] | None:
    """The parts of a multipart body in [start, end), as Python's feedparser splits it.

    A boundary line is the delimiter, optionally "--", optional spaces and tabs, then the end
    of the line; lines end in CRLF, CR or LF. Boundary lines that follow each other delimit
    no part. Each part runs to the next boundary line (the line break before it included; the
    caller strips it from leaf parts) or, without a closing delimiter, to the end. A part holds
    no line of an enclosing multipart's boundary: the enclosing split ended it there, so an
    inner multipart reusing its parent's boundary finds no part of its own.

    Returns the part regions; or, when no delimiter line starts a part, the region the parser
    keeps as the multipart's text (all of it, or what precedes a lone closing delimiter).
    """
    lines = _boundary_lines(source, start, end, b"--" + boundary.encode("utf-8", "replace"))
    first = next(lines, None)
    if first is None:
        return start, end
    if first[2]:
        return start, first[0]
    parts: list[tuple[int, int]] = []
    cursor = first[1]
    for line_start, line_end, closing in lines:
        if line_start != cursor:
            parts.append((cursor, line_start))
            if closing:
                return parts
        cursor = line_end
    parts.append((cursor, end))
    return parts


def _boundary_lines(
    source: bytes, start: int, end: int, delimiter: bytes
) -> Iterator[tuple[int, int, bool]]:
    """(line start, line end, closing) of each boundary line in [start, end)."""
    at = source.find(delimiter, start, end)
    while at >= 0:
        if at == start or source[at - 1] in (0x0A, 0x0D):
            after = at + len(delimiter)
            closing = source.startswith(b"--", after, end)
            if closing:
                after += 2
            while after < end and source[after] in (0x20, 0x09):
                after += 1
            if after == end:
                yield at, end, closing
            elif source.startswith(b"\r\n", after, end):
                yield at, after + 2, closing
            elif source[after] in (0x0A, 0x0D):
                yield at, after + 1, closing
        at = source.find(delimiter, at + 1, end)


# -- transfer decoding ------------------------------------------------------------------------


def _decode_base64(source: bytes, start: int, end: int) -> Iterator[bytes]:
    """Decode ``source[start:end]`` as Python's email package decodes a base64 body, in chunks
    cut at line ends, without copying it first.

    Well-formed input takes the fast path: pybase64 (SIMD) skips line breaks and stray
    characters as binascii does and is about 7x faster (755 MB/s against 108 MB/s here; ~2.4 s
    of the benchmark mailbox's 574 MB). Decoding ends at the padding that completes a quad,
    as binascii's does (what follows, say a second encoding run, is ignored). Anything pybase64
    rejects (a missing or odd padding, padding before the end) is decoded from there on by
    ``_python_b64decode``. Since every chunk pybase64 took held whole quads, that gives what
    decoding the whole body does (fuzzed against the email package), but for a body longer
    than a chunk that Python gives up on (one character too many): Python keeps all of its
    base64 text as the data, this the chunks before the damage decoded."""
    view = memoryview(source)
    at = start
    while at < end:
        stop = _line_cut(source, at, end)
        padding = source.find(b"=", at, stop)
        try:
            if padding < 0:
                yield pybase64.b64decode(view[at:stop])
            elif stop == end and not source[padding:stop].strip(b"= \t\r\n"):
                yield pybase64.b64decode(view[at:stop])  # padded at the end, as it should be
            else:
                raise binascii.Error("padding before the end")
        except binascii.Error:
            yield _python_b64decode(b"".join(bytes(view[at:end]).splitlines()))
            return
        at = stop


def _python_b64decode(data: bytes) -> bytes:
    """``email._encoded_words.decode_b`` (what ``Message.get_payload(decode=True)`` uses) less
    its defects: strict with the missing padding added, else lenient, else lenient with "==",
    else (one character too many to decode) the text as it is."""
    missing = b"==="[: -len(data) % 4] if len(data) % 4 else b""
    try:
        return base64.b64decode(data + missing, validate=True)
    except binascii.Error:
        pass
    for extra in (b"", b"=="):
        try:
            return base64.b64decode(data + extra)
        except binascii.Error:
            pass
    return data


def _line_cut(source: bytes | memoryview, at: int, total: int) -> int:
    """End of a chunk of about CHUNK bytes starting at ``at``, just after a line break."""
    stop = min(total, at + CHUNK)
    if stop < total:
        window = max(at, stop - 4096)
        if isinstance(source, bytes):
            newline = source.rfind(b"\n", window, stop)
            newline = newline - window if newline >= 0 else -1
        else:
            newline = bytes(source[window:stop]).rfind(b"\n")
        if newline >= 0:
            stop = window + newline + 1
    return stop


def _decode_quoted_printable(view: memoryview) -> Iterator[bytes]:
    at, total = 0, len(view)
    while at < total:
        stop = _line_cut(view, at, total)
        if stop < total and stop - at > 2:
            tail = bytes(view[stop - 2 : stop])  # never split an "=XX" escape
            stop -= 1 if tail[1:] == b"=" else 2 if tail[:1] == b"=" else 0
        yield binascii.a2b_qp(bytes(view[at:stop]))
        at = stop

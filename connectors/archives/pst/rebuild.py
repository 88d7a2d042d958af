"""A PST message's properties -> RFC 5322 / MIME bytes, built with Python's ``email`` package.

What a PST keeps is not the message's bytes but its parts, so a restore from a PST is
content-identical, not byte-identical: same headers (the original ones, from
PR_TRANSPORT_MESSAGE_HEADERS, when the PST has them), same texts, same attachment names and
bytes, same embedded messages; new MIME boundaries and transfer encodings.

- Headers: PR_TRANSPORT_MESSAGE_HEADERS verbatim, less the MIME structure headers
  (``MIME-Version``, ``Content-Type``, ``Content-Transfer-Encoding``, ``Content-Disposition``)
  that describe the original body rather than the rebuilt one; without them, From/Sender,
  To/Cc/Bcc (the recipient table), Subject, Date (PR_CLIENT_SUBMIT_TIME, else the delivery
  time), Message-ID, In-Reply-To and References from their properties.
- Body: text and HTML as multipart/alternative. Without HTML, a compressed RTF body
  (PR_RTF_COMPRESSED, decompressed with ``compressed_rtf``) that encapsulates HTML gives the
  HTML body; an RTF-only body gives its text as the plain body and is kept as ``body.rtf``
  (beside a plain text, rich text adds only formatting and is left out).
- Attachments kept by value that are message/* or multipart/* (a delivery status, an .eml)
  are parsed into their part, never base64-encoded (RFC 2046).
- Attachments with their names and exact bytes (content type from PR_ATTACH_MIME_TAG);
  those with a Content-ID the HTML refers to (or marked hidden/MHTML-referenced) go into
  multipart/related; embedded messages (attach method 5) become message/rfc822, recursively.

Memory: an attachment larger than ``STREAM_ABOVE`` is not handed to the email package: its
part is generated around a placeholder and its base64 lines are written from the PST's data
tree block by block, so a message costs about its rebuilt size plus a block or so.
"""

from __future__ import annotations

import io
import mimetypes
import re
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email._policybase import Compat32
from email.charset import BASE64, QP, Charset
from email.encoders import encode_base64
from email.generator import BytesGenerator
from email.header import Header
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import format_datetime, formataddr

import pybase64

from . import props as P
from .access import LazyValue, Node, PropertyContext, PstFile, PstFormatError, as_bytes, as_text
from .rtf import rtf_to_html, rtf_to_text

STREAM_ABOVE = 1 << 20  # attachment bytes above which the data is streamed, not copied
MAX_EMBED_DEPTH = 8
NID_ATTACHMENT_TABLE = 0x671
NID_RECIPIENT_TABLE = 0x692
_STRUCTURE_HEADERS = frozenset(
    ("mime-version", "content-type", "content-transfer-encoding", "content-disposition")
)


# CRLF line ends, as mail travels and as IMAP APPEND wants it. The compat32 policy's message
# classes (email.mime) keep headers as strings: policy default's header registry parses every
# header it is given and costs several times the rest of a rebuild.
class _Policy(Compat32):
    """compat32 with CRLF; a short ASCII header is written as it is, without building the
    ``Header`` object that folding it would take (most headers of a rebuilt message)."""

    def fold_binary(self, name: str, value: object) -> bytes:
        if (type(value) is str and len(name) + len(value) < 76 and value.isascii()
                and "\r" not in value and "\n" not in value):  # fmt: skip
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_POLICY = _Policy(linesep="\r\n")
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext
_B64_LINE = 57  # input bytes per 76-character base64 line


@dataclass
class RebuiltPart:
    """What a message's attachment holds, as read from its attachment object."""

    filename: str
    mime_type: str
    content_id: str | None
    inline: bool
    data: bytes | LazyValue | None = None
    embedded: bytes | None = None  # the rebuilt embedded message


@dataclass
class Envelope:
    """The header values of a message from its properties (for browsing and for rebuilding)."""

    subject: str = ""
    sender: tuple[str, str] | None = None  # (name, address) of From
    sent_by: tuple[str, str] | None = None  # of Sender, when it differs
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    bcc: list[tuple[str, str]] = field(default_factory=list)
    date: datetime | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: str | None = None


def rebuild_message(
    pst: PstFile, node: Node, *, pc: PropertyContext | None = None, _depth: int = 0
) -> bytes:
    """The MIME bytes of the message whose node (or embedded-message subnode) is ``node``
    (``pc``: its property context, if the caller has read it already)."""
    if pc is None:
        pc = pst.property_context(node)
    skeleton, streams = _build(pst, pc, _depth)
    if not streams:
        return skeleton
    out = io.BytesIO()
    for piece in re.split(rb"(LEGACYFLO-STREAM-[0-9a-f]{32})", skeleton):
        value = streams.get(piece)
        if value is None:
            out.write(piece)
        else:
            _write_base64(out, value.chunks())
    return out.getvalue()


def _write_base64(out: io.BytesIO, chunks: Iterator[bytes]) -> None:
    """Base64 in 76-character lines joined by CRLF (the generator adds the line break that
    precedes the next boundary)."""
    pending = b""
    first = True
    for chunk in chunks:
        data = pending + chunk
        cut = len(data) - len(data) % (_B64_LINE * 64)
        if cut:
            first = _write_b64_lines(out, data[:cut], first)
        pending = data[cut:]
    if pending or first:
        _write_b64_lines(out, pending, first)


def _write_b64_lines(out: io.BytesIO, data: bytes, first: bool) -> bool:
    encoded = pybase64.b64encode(data)
    for at in range(0, len(encoded), 76):
        if not first:
            out.write(b"\r\n")
        out.write(encoded[at : at + 76])
        first = False
    return first


def envelope(pst: PstFile, pc: PropertyContext) -> Envelope:
    """The envelope from the message's properties and recipient table."""
    env = Envelope()
    env.subject = _subject(pc)
    name, address = pc.text(0x0042), _smtp(pc, 0x5D02, 0x0065, 0x0064)  # sent representing
    sender_name, sender_address = pc.text(0x0C1A), _smtp(pc, 0x5D01, 0x0C1F, 0x0C1E)
    if name or address:
        env.sender = (name or "", address or "")
        if (sender_name or sender_address) and (sender_address or "").lower() != (
            address or ""
        ).lower():
            env.sent_by = (sender_name or "", sender_address or "")
    elif sender_name or sender_address:
        env.sender = (sender_name or "", sender_address or "")
    env.date = pc.time(P.CLIENT_SUBMIT_TIME) or pc.time(P.MESSAGE_DELIVERY_TIME)
    env.message_id = pc.text(0x1035)
    env.in_reply_to = pc.text(0x1042)
    env.references = pc.text(0x1039)
    table_node = pc.subnode(NID_RECIPIENT_TABLE)
    if table_node is not None:
        groups = {P.MAPI_TO: env.to, P.MAPI_CC: env.cc, P.MAPI_BCC: env.bcc}
        for row in pst.table(table_node).rows():
            kind = row.get(P.RECIPIENT_TYPE)
            group = groups.get(kind if isinstance(kind, int) else P.MAPI_TO)
            if group is None:
                continue
            rname = as_text(row.get(P.DISPLAY_NAME)) or ""
            raddr = as_text(row.get(P.SMTP_ADDRESS))
            if not raddr:
                addr_type = as_text(row.get(P.ADDRESS_TYPE)) or "SMTP"
                email = as_text(row.get(P.EMAIL_ADDRESS)) or ""
                raddr = email if addr_type.upper() == "SMTP" or "@" in email else ""
            group.append((rname, raddr))
    return env


def _subject(pc: PropertyContext) -> str:
    subject = pc.text(0x0037)
    if subject is None:
        subject = (pc.text(0x003D) or "") + (pc.text(0x0E1D) or "")
    # MAPI may start a subject with a 0x01 marker and the prefix length.
    if subject[:1] == "\x01" and len(subject) >= 2:
        subject = subject[2:]
    return subject


def _smtp(pc: PropertyContext, smtp_id: int, email_id: int, type_id: int) -> str | None:
    smtp = pc.text(smtp_id)
    if smtp:
        return smtp
    email = pc.text(email_id)
    addr_type = (pc.text(type_id) or "SMTP").upper()
    if email and (addr_type == "SMTP" or "@" in email):
        return email
    return None


def _build(pst: PstFile, pc: PropertyContext, depth: int) -> tuple[bytes, dict[bytes, LazyValue]]:
    streams: dict[bytes, LazyValue] = {}
    body = _body_entity(pst, pc, depth, streams)
    headers = pc.text(0x007D)  # PR_TRANSPORT_MESSAGE_HEADERS
    if headers and headers.strip():
        return _kept_header_lines(headers) + _generate(body), streams
    _set_envelope_headers(body, envelope(pst, pc))
    return _generate(body), streams


def _generate(msg: Message) -> bytes:
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_POLICY).flatten(msg)
    return out.getvalue()


def _kept_header_lines(headers: str) -> bytes:
    """The original header block less its MIME structure fields, CRLF-terminated lines."""
    lines = re.split(r"\r\n|\r|\n", headers.strip("\r\n"))
    fields: list[list[str]] = []
    for line in lines:
        if not line:
            break  # the blank line ending the header block
        if line[:1] in (" ", "\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    out = []
    for field_lines in fields:
        name, colon, _value = field_lines[0].partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name) or name.lower() in _STRUCTURE_HEADERS:
            continue  # an mbox "From " line or a stray line is no header; MIME ones are rebuilt
        out.extend(field_lines)
    return "".join(line + "\r\n" for line in out).encode("utf-8", "surrogateescape")


def _mailboxes(pairs: list[tuple[str, str]]) -> str:
    """An address list, display names RFC 2047-encoded where they are not ASCII; a recipient
    known only by name (an Exchange address without SMTP) as ``Name <>``."""
    return ", ".join(formataddr((name if name != address else "", address), charset="utf-8")
                     for name, address in pairs)  # fmt: skip


def _encoded(text: str) -> str | Header:
    return text if text.isascii() else Header(text, "utf-8")


def _set_envelope_headers(msg: Message, env: Envelope) -> None:
    """Envelope headers before the MIME ones, in the usual order."""
    mime = list(msg.items())
    for key in list(msg.keys()):
        del msg[key]
    if env.sender:
        msg["From"] = _mailboxes([env.sender])
    if env.sent_by:
        msg["Sender"] = _mailboxes([env.sent_by])
    for name, group in (("To", env.to), ("Cc", env.cc), ("Bcc", env.bcc)):
        if group:
            msg[name] = _mailboxes(group)
    if env.subject:
        msg["Subject"] = _encoded(env.subject)
    if env.date is not None:
        msg["Date"] = format_datetime(env.date)
    for name, value in (("Message-ID", env.message_id), ("In-Reply-To", env.in_reply_to),
                        ("References", env.references)):  # fmt: skip
        if value:
            msg[name] = value
    for key, value in mime:
        msg[key] = value


def _html_text(pc: PropertyContext) -> str | None:
    value = pc.get(P.BODY_HTML)
    if value is None:
        text = pc.get((0x1013 << 16) | P.PT_UNICODE)
        return as_text(text)
    data = as_bytes(value) or b""
    codepage = pc.integer(P.INTERNET_CODEPAGE) or 65001
    try:
        return data.decode(_codec(codepage), "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _codec(codepage: int) -> str:
    return {65001: "utf-8", 20127: "ascii", 28591: "latin-1", 1200: "utf-16-le",
            50220: "iso2022_jp", 51932: "euc_jp", 932: "cp932"}.get(codepage, f"cp{codepage}")  # fmt: skip


def _plain_text(pc: PropertyContext) -> str | None:
    value = pc.get(P.BODY)
    if value is not None:
        return (as_bytes(value) or b"").decode("utf-16-le", "replace").split("\x00", 1)[0]
    return pc.text(0x1000)


def _rtf(pc: PropertyContext) -> bytes | None:
    data = as_bytes(pc.get(P.RTF_COMPRESSED))
    if not data:
        return None
    from compressed_rtf import decompress  # the field's library for [MS-OXRTFCP]

    try:
        return decompress(data)
    except Exception as exc:  # noqa: BLE001 - the library's own errors for a bad stream
        raise PstFormatError(f"the compressed RTF body is damaged: {exc}") from exc


def _text_part(text: str, subtype: str) -> Message:
    """A text part: 7bit when it is ASCII in short lines, else UTF-8 quoted-printable (mostly
    ASCII) or base64 (mostly not), as the email package's own content manager would pick."""
    part = MIMENonMultipart("text", subtype)
    lines_ok = max((len(line) for line in text.splitlines()), default=0) <= 998
    charset = Charset("us-ascii" if text.isascii() and lines_ok else "utf-8")
    if str(charset) == "utf-8":
        non_ascii = sum(1 for c in text if ord(c) > 127)
        charset.body_encoding = QP if non_ascii * 8 < len(text) else BASE64
    part.set_payload(text, charset)
    return part


def _attachment_part(maintype: str, subtype: str, data: bytes | None, filename: str,
                     disposition: str, content_id: str | None) -> Message:  # fmt: skip
    """A base64 part; ``data`` None leaves its payload to the caller (streamed data)."""
    part = MIMEBase(maintype, subtype)
    if data is not None:
        part.set_payload(data)
        encode_base64(part)
    else:
        part["Content-Transfer-Encoding"] = "base64"
    part.add_header("Content-Disposition", disposition, filename=filename)
    if content_id:
        part["Content-ID"] = f"<{content_id}>"
    return part


def _body_entity(
    pst: PstFile, pc: PropertyContext, depth: int, streams: dict[bytes, LazyValue]
) -> Message:
    text, html = _plain_text(pc), _html_text(pc)
    rtf = None
    if html is None:
        rtf = _rtf(pc)
        if rtf is not None:
            html = rtf_to_html(rtf)
            if html is not None:
                rtf = None  # the HTML it encapsulates is the body
            elif text is None:
                text = rtf_to_text(rtf)
            else:
                rtf = None  # rich text beside its plain text: the text is the body
    related: list[Message] = []
    mixed: list[Message] = []
    for part in _attachments(pst, pc, depth):
        if part.embedded is not None:
            wrapper = MIMEMessage(message_from_bytes(part.embedded, policy=_POLICY))
            del wrapper["MIME-Version"]
            wrapper.add_header("Content-Disposition", "attachment", filename=part.filename)
            mixed.append(wrapper)
            continue
        maintype, _, subtype = (part.mime_type or "application/octet-stream").partition("/")
        if not subtype or "/" in subtype or not maintype:
            maintype, subtype = "application", "octet-stream"
        data = part.data
        if maintype in ("message", "multipart"):  # structured: parsed, never base64 (RFC 2046)
            mixed.append(_structured_part(part, f"{maintype}/{subtype}", as_bytes(data) or b""))
            continue
        in_related = (
            bool(part.content_id)
            and html is not None
            and (part.inline or f"cid:{part.content_id}" in html)
        )
        large = isinstance(data, LazyValue) and data.size > STREAM_ABOVE
        built = _attachment_part(maintype, subtype, None if large else (as_bytes(data) or b""),
                                 part.filename, "inline" if in_related else "attachment",
                                 part.content_id)  # fmt: skip
        if large:
            token = "LEGACYFLO-STREAM-" + secrets.token_hex(16)
            streams[token.encode()] = data  # type: ignore[assignment]
            built.set_payload(token)
        (related if in_related else mixed).append(built)
    if rtf is not None:
        mixed.append(_attachment_part("application", "rtf", rtf, "body.rtf", "attachment", None))

    html_entity = None
    if html is not None:
        html_entity = _text_part(html, "html")
        if related:
            html_entity = _multipart("related", [html_entity, *related])
    if text is not None and html_entity is not None:
        body = _multipart("alternative", [_text_part(text, "plain"), html_entity])
    elif html_entity is not None:
        body = html_entity
    else:
        body = _text_part(text or "", "plain")
    if mixed:
        body = _multipart("mixed", [body, *mixed])
    if "MIME-Version" not in body:
        body["MIME-Version"] = "1.0"
    return body


def _multipart(subtype: str, parts: list[Message]) -> Message:
    """A multipart of ``parts``; MIME-Version only on the message itself (``_body_entity``)."""
    for part in parts:
        del part["MIME-Version"]
    whole = MIMEMultipart(subtype, _subparts=parts)
    del whole["MIME-Version"]
    return whole


def _structured_part(part: RebuiltPart, mime_type: str, data: bytes) -> Message:
    """A message/* or multipart/* attachment held as bytes (a delivery status, an .eml kept
    by value): its part is parsed from them, as a reader would find it."""
    head = Message(policy=_POLICY)
    head["Content-Type"] = mime_type
    head.add_header("Content-Disposition", "attachment", filename=part.filename)
    if part.content_id:
        head["Content-ID"] = f"<{part.content_id}>"
    header_bytes = b"".join(f"{name}: {value}\r\n".encode() for name, value in head.items())
    return message_from_bytes(header_bytes + b"\r\n" + data, policy=_POLICY)


def _attachments(pst: PstFile, pc: PropertyContext, depth: int) -> Iterator[RebuiltPart]:
    table_node = pc.subnode(NID_ATTACHMENT_TABLE)
    if table_node is None:
        return
    for number, nid in enumerate(pst.table(table_node).row_ids()):
        node = pc.subnode(nid)
        if node is None:
            raise PstFormatError(f"attachment 0x{nid:X} is listed but missing")
        apc = pst.property_context(node)
        method = apc.integer(P.ATTACH_METHOD) or P.ATTACH_BY_VALUE
        name = apc.text(0x3707) or apc.text(0x3704) or apc.text(0x3001) or ""
        mime_type = (apc.text(0x370E) or "").strip().lower()
        content_id = (apc.text(0x3712) or "").strip().strip("<>") or None
        flags = apc.integer(P.ATTACH_FLAGS) or 0
        hidden = bool(apc.integer(P.ATTACHMENT_HIDDEN))
        inline = bool(content_id) and (hidden or bool(flags & 4))
        if method == P.ATTACH_EMBEDDED_MSG:
            inner = apc.object_node(P.ATTACH_DATA_OBJECT)
            if inner is None:
                raise PstFormatError(f"embedded message of attachment {number} is missing")
            if depth >= MAX_EMBED_DEPTH:
                raise PstFormatError("embedded messages nested too deep")
            embedded = rebuild_message(pst, inner, _depth=depth + 1)
            yield RebuiltPart(name, "message/rfc822", content_id, inline, embedded=embedded)
            continue
        data = apc.get(P.ATTACH_DATA_BINARY)
        if not name:
            extension = mimetypes.guess_extension(mime_type or "") or ".bin"
            name = f"attachment{number + 1}{extension}"
        yield RebuiltPart(name, mime_type or "application/octet-stream", content_id, inline,
                          data=data if data is not None else b"")  # fmt: skip


def multi_strings(value: bytes | None, encoding: str = "utf-16-le") -> list[str]:
    """A PtypMultipleString's strings (count, offsets, UTF-16LE strings)."""
    if not value or len(value) < 4:
        return []
    (count,) = struct.unpack_from("<I", value, 0)
    if 4 + 4 * count > len(value):
        raise PstFormatError("multi-valued string shorter than its count")
    offsets = list(struct.unpack_from(f"<{count}I", value, 4)) + [len(value)]
    return [value[offsets[i] : offsets[i + 1]].decode(encoding, "replace").rstrip("\x00")
            for i in range(count)]  # fmt: skip

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
- Body: text and HTML as multipart/alternative; an RTF-only body (PR_RTF_COMPRESSED) is
  decompressed, its text extracted as the plain body and the RTF itself kept as ``body.rtf``.
- Attachments with their names and exact bytes (content type from PR_ATTACH_MIME_TAG);
  those with a Content-ID the HTML refers to (or marked hidden/MHTML-referenced) go into
  multipart/related; embedded messages (attach method 5) become message/rfc822, recursively.

Memory: an attachment larger than ``STREAM_ABOVE`` is not handed to the email package: its
part is generated around a placeholder and its base64 lines are written from the PST's data
tree block by block, so a message costs about its rebuilt size plus a block or so.
"""

from __future__ import annotations

import io
import re
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, default

import pybase64

from . import props as P
from .access import LazyValue, Node, PropertyContext, PstFile, PstFormatError, as_bytes, as_text

STREAM_ABOVE = 1 << 20  # attachment bytes above which the data is streamed, not copied
MAX_EMBED_DEPTH = 8
NID_ATTACHMENT_TABLE = 0x671
NID_RECIPIENT_TABLE = 0x692
_STRUCTURE_HEADERS = frozenset(
    ("mime-version", "content-type", "content-transfer-encoding", "content-disposition")
)
_POLICY = SMTP  # CRLF line ends, as mail travels and as IMAP APPEND wants it
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


def rebuild_message(pst: PstFile, node: Node, *, _depth: int = 0) -> bytes:
    """The MIME bytes of the message whose node (or embedded-message subnode) is ``node``."""
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
        kept = _kept_header_lines(headers)
        generated = _generate(body)
        return kept + generated, streams
    env = envelope(pst, pc)
    _set_envelope_headers(body, env)
    return _generate(body), streams


def _generate(msg: EmailMessage) -> bytes:
    out = io.BytesIO()
    BytesGenerator(out, policy=_POLICY).flatten(msg)
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
        name = field_lines[0].split(":", 1)[0].strip().lower()
        if name in _STRUCTURE_HEADERS:
            continue
        out.extend(field_lines)
    return "".join(line + "\r\n" for line in out).encode("utf-8", "surrogateescape")


def _address_header(pairs: list[tuple[str, str]]) -> list[Address | str]:
    out: list[Address | str] = []
    for name, address in pairs:
        try:
            out.append(Address(display_name=name, addr_spec=address) if address else
                       Address(display_name=name))  # fmt: skip
        except (ValueError, IndexError, TypeError):
            out.append(Address(display_name=f"{name} <{address}>".strip()))
    return out


def _set_envelope_headers(msg: EmailMessage, env: Envelope) -> None:
    """Envelope headers before the MIME ones, in the usual order."""
    mime = [(k, v) for k, v in msg.items()]
    for key in list(msg.keys()):
        del msg[key]
    if env.sender:
        msg["From"] = _address_header([env.sender])
    if env.sent_by:
        msg["Sender"] = _address_header([env.sent_by])
    for name, group in (("To", env.to), ("Cc", env.cc), ("Bcc", env.bcc)):
        if group:
            msg[name] = _address_header(group)
    msg["Subject"] = env.subject
    if env.date is not None:
        msg["Date"] = env.date
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
        return as_bytes(value).decode("utf-16-le", "replace").split("\x00", 1)[0]  # type: ignore[union-attr]
    return pc.text(0x1000)


def _rtf(pc: PropertyContext) -> bytes | None:
    data = as_bytes(pc.get(P.RTF_COMPRESSED))
    if not data:
        return None
    from compressed_rtf import decompress  # the field's library for [MS-OXRTFCP]

    try:
        return decompress(data)
    except Exception as exc:  # noqa: BLE001 - a damaged RTF stream: keep it as it is
        raise PstFormatError(f"the compressed RTF body is damaged: {exc}") from exc


def _body_entity(
    pst: PstFile, pc: PropertyContext, depth: int, streams: dict[bytes, LazyValue]
) -> EmailMessage:
    msg = EmailMessage(policy=default)
    text, html = _plain_text(pc), _html_text(pc)
    rtf = None
    if text is None and html is None:
        rtf = _rtf(pc)
        if rtf is not None:
            text = rtf_to_text(rtf)
    if text is not None and html is not None:
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    else:
        msg.set_content(text or "")
    parts = list(_attachments(pst, pc, depth))
    html_part = msg.get_body(("html",)) if html is not None else None
    for part in parts:
        related = (
            part.content_id
            and html_part is not None
            and (part.inline or f"cid:{part.content_id}" in (html or ""))
        )
        if part.embedded is not None:
            inner = message_from_bytes(part.embedded, policy=default)
            msg.add_attachment(inner)
            attached = _last_attachment(msg)
            if part.filename:
                del attached["Content-Disposition"]
                attached["Content-Disposition"] = "attachment"
                attached.set_param("filename", part.filename, header="Content-Disposition")
            continue
        maintype, _, subtype = (part.mime_type or "application/octet-stream").partition("/")
        if not subtype or "/" in subtype or not maintype:
            maintype, subtype = "application", "octet-stream"
        data = part.data
        large = isinstance(data, LazyValue) and data.size > STREAM_ABOVE
        payload = b"" if large else (as_bytes(data) or b"")
        kwargs = {"maintype": maintype, "subtype": subtype, "filename": part.filename}
        if related:
            html_part.add_related(payload, cid=f"<{part.content_id}>", disposition="inline",
                                  **kwargs)  # fmt: skip
            target = list(msg.get_body(("related",)).iter_parts())[-1]
        else:
            msg.add_attachment(payload, **kwargs)
            target = _last_attachment(msg)
            if part.content_id:
                target["Content-ID"] = f"<{part.content_id}>"
        if large:
            token = b"LEGACYFLO-STREAM-" + secrets.token_hex(16).encode()
            streams[token] = data  # type: ignore[assignment]
            target.set_payload(token.decode())
    if rtf is not None:
        msg.add_attachment(rtf, maintype="application", subtype="rtf", filename="body.rtf")
    _drop_part_mime_versions(msg, top=True)
    return msg


def _drop_part_mime_versions(part: EmailMessage, top: bool = False) -> None:
    """The email package repeats MIME-Version on the parts it makes; a message says it once
    (an attached message keeps its own)."""
    if not top:
        del part["MIME-Version"]
    if part.is_multipart() and part.get_content_type() != "message/rfc822":
        for sub in part.iter_parts():
            _drop_part_mime_versions(sub)


def _last_attachment(msg: EmailMessage) -> EmailMessage:
    return list(msg.iter_parts())[-1]  # add_attachment appends to the multipart/mixed


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
            name = f"attachment{number + 1}"
        yield RebuiltPart(name, mime_type or "application/octet-stream", content_id, inline,
                          data=data if data is not None else b"")  # fmt: skip


# -- RTF ----------------------------------------------------------------------------------------

_RTF_TOKEN = re.compile(
    rb"\\([a-zA-Z]+)(-?\d+)? ?|\\'([0-9a-fA-F]{2})|\\(.)|([{}])|([^\\{}\r\n]+)|[\r\n]"
)
_RTF_SKIP = frozenset((b"fonttbl", b"colortbl", b"stylesheet", b"info", b"pict", b"object",
                       b"header", b"footer", b"themedata", b"datastore", b"latentstyles",
                       b"listtable", b"listoverridetable", b"rsidtbl", b"generator",
                       b"xmlnstbl", b"mmathPr", b"filetbl"))  # fmt: skip


def rtf_to_text(rtf: bytes) -> str:
    """The readable text of an RTF document: paragraphs and tabs kept, groups of tables
    (fonts, colours, pictures, \\* destinations) skipped, \\'hh and \\uN characters decoded
    (Windows-1252 for the former). Not a renderer: what a plain body can show."""
    out: list[str] = []
    stack: list[bool] = []
    skipping = False
    uc_skip = 0
    first_in_group = False
    for match in _RTF_TOKEN.finditer(rtf):
        word, arg, hexbyte, symbol, brace, text = match.groups()
        if brace == b"{":
            stack.append(skipping)
            first_in_group = True
            continue
        if brace == b"}":
            skipping = stack.pop() if stack else False
            first_in_group = False
            continue
        starts = first_in_group
        first_in_group = False
        if symbol == b"*" and starts:
            skipping = True
            continue
        if skipping:
            continue
        if word is not None:
            if starts and word in _RTF_SKIP:
                skipping = True
            elif word in (b"par", b"line", b"row"):
                out.append("\n")
            elif word == b"tab" or word == b"cell":
                out.append("\t")
            elif word == b"u" and arg is not None:
                value = int(arg)
                out.append(chr(value + 65536 if value < 0 else value))
                uc_skip = 1
            continue
        if hexbyte is not None:
            if uc_skip:
                uc_skip -= 1
                continue
            out.append(bytes([int(hexbyte, 16)]).decode("cp1252", "replace"))
            continue
        if symbol is not None:
            if symbol in (b"\\", b"{", b"}"):
                out.append(symbol.decode())
            elif symbol == b"~":
                out.append("\u00a0")
            continue
        if text is not None:
            if uc_skip:
                text = text[1:]
                uc_skip = 0
            out.append(text.decode("cp1252", "replace"))
    return "".join(out).strip("\n") + "\n"


def multi_strings(value: bytes | None) -> list[str]:
    """A PtypMultipleString's strings (count, offsets, UTF-16LE strings)."""
    if not value or len(value) < 4:
        return []
    (count,) = struct.unpack_from("<I", value, 0)
    if 4 + 4 * count > len(value):
        raise PstFormatError("multi-valued string shorter than its count")
    offsets = list(struct.unpack_from(f"<{count}I", value, 4)) + [len(value)]
    return [value[offsets[i] : offsets[i + 1]].decode("utf-16-le", "replace")
            for i in range(count)]  # fmt: skip

"""What Python's ``email`` package (policy ``default``) sees in a message, in a PST's terms.

The PST tests compare what readers find in a PST with this view of the source message: the
parse is the standard library's, never the writer's. Only the mapping from a MIME tree to a
PST message is the writer's convention, restated here:

- multipart parts are walked depth first; a ``message/rfc822`` part (and, in a
  ``multipart/digest``, a part without a Content-Type) is an attached message, seen the same
  way recursively;
- a multipart the parser could not split (no boundary, or none starting a part) is the text
  it keeps, taken as ``text/plain``;
- the first ``text/plain`` and the first ``text/html`` part that is neither a declared
  attachment nor named is the plain or HTML body; such a part that is empty (white space)
  carries nothing; every other leaf is an attachment, named by its file name or
  ``attachmentN`` plus the extension ``mimetypes`` gives its type (``.bin``); an attached
  message is named by its file name or its subject (``message``) plus ``.eml``.

Texts are compared with line endings made ``\\n`` and trailing white space dropped, and an
empty body counts as none (the PST leaves an empty body out). Bytes without a charset the
parser can use (8-bit header bytes, which it keeps as surrogate escapes; text parts without a
charset parameter, which it would read as ASCII, or with one Python does not know) are read
as UTF-8, else Windows-1252 (else Latin-1), as the writer reads them.
"""

from __future__ import annotations

import codecs
import email
import email.policy
import hashlib
import mimetypes
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage


@dataclass
class ViewAttachment:
    name: str
    mime_type: str
    size: int | None = 0  # None: a message/* part the parser keeps as header blocks
    sha256: str | None = ""
    embedded: View | None = None


@dataclass
class View:
    subject: str = ""
    sender: tuple[str, str] | None = None  # (name, address); name falls back to the address
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    bcc: list[tuple[str, str]] = field(default_factory=list)
    date: datetime | None = None  # UTC
    body_text: str | None = None
    body_html: str | None = None
    attachments: list[ViewAttachment] = field(default_factory=list)


def normalize(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n").rstrip()
    return text or None


def stdlib_view(raw: bytes) -> View:
    return view_of(email.message_from_bytes(raw, policy=email.policy.default))


def view_of(message: EmailMessage) -> View:
    view = View(subject=_header_text(message, "subject").replace("\r", "").replace("\n", ""))
    senders = _addresses(message, "from") or _addresses(message, "sender")
    view.sender = senders[0] if senders else None
    view.to, view.cc, view.bcc = (_addresses(message, name) for name in ("to", "cc", "bcc"))
    view.date = _date(message)
    _walk(view, message)
    view.body_text, view.body_html = normalize(view.body_text), normalize(view.body_html)
    return view


def _walk(view: View, part: EmailMessage) -> None:
    content_type = part.get_content_type()
    disposition = part.get_content_disposition()
    filename = _filename(part)
    if content_type.startswith("multipart/"):
        if part.is_multipart():
            for sub in part.iter_parts():
                _walk(view, sub)
            return
        content_type, disposition, filename = "text/plain", None, None  # kept as text
    if content_type == "message/rfc822":
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, EmailMessage):
            embedded = view_of(inner)
            name = filename or (embedded.subject or "message") + ".eml"
            view.attachments.append(ViewAttachment(name, content_type, embedded=embedded))
            return
    if content_type in ("text/plain", "text/html") and disposition != "attachment" and not filename:
        text = _text(part)
        if not text.strip():
            return  # an empty text part carries nothing
        slot = "body_text" if content_type == "text/plain" else "body_html"
        if getattr(view, slot) is None:
            setattr(view, slot, text)
            return
    if not filename:
        extension = mimetypes.guess_extension(content_type) or ".bin"
        filename = f"attachment{len(view.attachments) + 1}{extension}"
    if part.is_multipart():  # message/delivery-status, message/external-body...: the parser
        # keeps header blocks, not the bytes; the bytes are not compared
        view.attachments.append(ViewAttachment(filename, content_type, None, None))
        return
    data = part.get_payload(decode=True) or b""
    view.attachments.append(ViewAttachment(filename, content_type, len(data),
                                           hashlib.sha256(data).hexdigest()))  # fmt: skip


def _text(part: EmailMessage) -> str:
    charset = part.get_param("charset")
    if isinstance(charset, str) and _known(charset):
        return part.get_content()
    data = part.get_payload(decode=True) or b""
    for codec in ("utf-8", "cp1252"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


def _known(charset: str) -> bool:
    try:
        codecs.lookup(charset)
    except LookupError:
        return False
    return True


def _filename(part: EmailMessage) -> str | None:
    try:
        name = part.get_filename()
    except (TypeError, ValueError):
        return None
    name = (name or "").replace("\x00", "").strip()
    return name or None


def _header_text(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except (TypeError, ValueError, IndexError):
        return ""
    if value is None:
        return ""
    raw = next((v for k, v in message.raw_items() if k.lower() == name), "")
    if not raw.isascii():  # 8-bit bytes, which the parser shows as U+FFFD unless UTF-8
        value = email.policy.default.header_factory(name, _unescape("".join(raw.splitlines())))
    return str(value).strip()


def _addresses(message: EmailMessage, name: str) -> list[tuple[str, str]]:
    out = []
    for value in message.get_all(name) or []:
        for address in getattr(value, "addresses", ()):
            display, spec = _unescape(address.display_name).strip(), _unescape(address.addr_spec).strip()
            if spec in ("<>", '""'):
                spec = ""
            if display or spec:
                out.append((display or spec, spec))
    return out


def _unescape(text: str) -> str:
    """8-bit header bytes (kept as surrogate escapes by the parser) as UTF-8, else cp1252."""
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text
    for codec in ("utf-8", "cp1252"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


def _date(message: EmailMessage) -> datetime | None:
    try:
        value = message.get("date")
        moment = getattr(value, "datetime", None)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)

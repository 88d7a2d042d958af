"""Message objects: a message's PC, recipient table, attachment table and attachments.

``write_message_object`` writes everything of one message except its NBT entry (the store adds
that, or an attachment embeds the message as a PtypObject). Values are streamed where they can
be large (attachment data, huge bodies). PidTagMessageSize is the sum of the sizes of the
message PC's values (fixed-size values at their width) plus the PidTagAttachSize of every
attachment, which in turn is the sum of the attachment PC's values (an embedded message
counting as its own message size); the checker verifies the same sums.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import props as P
from .heap import MAX_ALLOCATION
from .ltp import NodeParts, ObjectValue, StoredValue, TableWriter, write_property_context
from .mime import Address, Attachment, ParsedMessage
from .namemap import LEGACYFLO_NAMES, PS_PUBLIC_STRINGS, named_property_id
from .ndb import NID_TYPE_ATTACHMENT, NID_TYPE_LTP, NID_TYPE_NORMAL_MESSAGE, NodeDatabaseWriter
from .templates import ATTACHMENT_COLUMNS, RECIPIENT_COLUMNS, RECIPIENT_EXTRA_COLUMNS


def _search_key() -> bytes:
    """A message's search key only has to be unique. uuid4() reads the kernel's random source
    on each call, and that system call let go of the converting thread's GIL once per message
    (0.12 s per 3,000 messages in the export). ``random``'s shared generator is seeded from that
    source and seeded again in every forked process (RQ work-horses), so keys stay distinct."""
    return random.getrandbits(128).to_bytes(16, "little")


# Fixed NIDs of a message's subnodes ([MS-PST] §2.4.1).
NID_ATTACHMENT_TABLE = 0x671
NID_RECIPIENT_TABLE = 0x692
MAPI_MAILUSER = 6
MAPI_ATTACH = 7
TABLE_TEXT_LIMIT = 255  # MAPI tables carry at most 255 characters of a string


# Keywords that are IMAP protocol state rather than a user's tag: not made Outlook categories
# (LegacyFloFlags keeps them all).
_SYSTEM_KEYWORDS = frozenset(k.lower() for k in (
    "$Forwarded", "$MDNSent", "$Junk", "$NotJunk", "$Phishing", "$SubmitPending", "$Submitted",
    "Junk", "NonJunk", "$Recent"))


@dataclass(frozen=True)
class ArchiveMetadata:
    """What the archive records about a message besides its content (the source's view of it):
    IMAP flags and keywords, Gmail labels, the source id and the SHA-256 of the source bytes."""

    flags: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    source_id: str = ""
    sha256: str = ""

    def has_flag(self, flag: str) -> bool:
        flag = flag.lower()
        return any(f.lower() == flag for f in self.flags)

    @property
    def categories(self) -> list[str]:
        """Outlook categories: the labels, then the user keywords (flags without a backslash),
        each once."""
        out: list[str] = []
        for name in (*self.labels, *(f for f in self.flags if not f.startswith("\\")
                                     and f.lower() not in _SYSTEM_KEYWORDS)):
            if name and name not in out:
                out.append(name)
        return out


KEYWORDS = P.tag(named_property_id((PS_PUBLIC_STRINGS, "Keywords")), P.PT_MV_UNICODE)
LEGACYFLO_SOURCE_ID, LEGACYFLO_SHA256, LEGACYFLO_FLAGS = (
    P.tag(named_property_id(name), P.PT_UNICODE) for name in LEGACYFLO_NAMES[:3])


def metadata_properties(meta: ArchiveMetadata) -> list[tuple[int, object]]:
    """The message properties that carry ``meta``: follow-up flag, last verb and its icon,
    categories (Keywords), and LegacyFlo's named properties (empty ones are left out later)."""
    out: list[tuple[int, object]] = []
    if meta.has_flag("\\Flagged"):
        out.append((P.FLAG_STATUS, P.FOLLOWUP_FLAGGED))
    if meta.has_flag("\\Answered"):
        out += [(P.LAST_VERB_EXECUTED, P.EXCHIVERB_REPLYTOSENDER), (P.ICON_INDEX, P.ICON_MAIL_REPLIED)]
    elif meta.has_flag("$Forwarded"):
        out += [(P.LAST_VERB_EXECUTED, P.EXCHIVERB_FORWARD), (P.ICON_INDEX, P.ICON_MAIL_FORWARDED)]
    categories = meta.categories
    if categories:
        out.append((KEYWORDS, P.encode_multiple_strings(categories)))
    out += [(LEGACYFLO_SOURCE_ID, _utf16(meta.source_id)), (LEGACYFLO_SHA256, _utf16(meta.sha256)),
            (LEGACYFLO_FLAGS, _utf16(" ".join(meta.flags)))]
    return out


@dataclass(frozen=True)
class WrittenMessage:
    parts: NodeParts
    size: int
    row: dict[int, object]  # contents-table values (times as FILETIME ints)


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def _short(text: str) -> str | None:
    """A table cell's text: at most 255 characters, and no cell for an empty one."""
    return text[:TABLE_TEXT_LIMIT] or None


def write_message_object(
    ndb: NodeDatabaseWriter, parsed: ParsedMessage, *, read: bool, received: datetime | None,
    meta: ArchiveMetadata | None = None,
) -> WrittenMessage:
    """Write a message's recipients, attachments and PC; the caller adds the node itself.
    ``received`` (the internal date) is PidTagMessageDeliveryTime; ``meta`` adds
    ``metadata_properties``."""
    now = datetime.now(UTC)
    delivered = received or parsed.sent or now
    if delivered.tzinfo is None:
        delivered = delivered.replace(tzinfo=UTC)
    submitted = parsed.sent or delivered

    subnodes = [_recipient_table(ndb, parsed)]
    attachment_sizes = 0
    if parsed.attachments:
        html = parsed.body_html or ""
        table = TableWriter(ndb, ATTACHMENT_COLUMNS)
        short_names: set[str] = set()
        for number, attachment in enumerate(parsed.attachments):
            nid = ndb.nids.allocate(NID_TYPE_ATTACHMENT)
            parts, size, short_name = _write_attachment(
                ndb, attachment, number, html, short_names
            )
            subnodes.append((nid, parts.bid_data, parts.bid_sub))
            attachment_sizes += size
            method = P.ATTACH_EMBEDDED_MSG if attachment.embedded else P.ATTACH_BY_VALUE
            table.add_row(nid, {
                P.ATTACH_SIZE: size,
                P.ATTACH_FILENAME: short_name,
                P.ATTACH_METHOD: method,
                P.RENDERING_POSITION: 0xFFFFFFFF,
            })  # fmt: skip
        attachment_table = table.finish()
        subnodes.append((NID_ATTACHMENT_TABLE, attachment_table.bid_data, attachment_table.bid_sub))

    flags = (P.MSGFLAG_READ if read else 0) | (P.MSGFLAG_HASATTACH if parsed.attachments else 0)
    prefix, normalized = split_subject(parsed.subject)
    sender = parsed.sender
    display_to = "; ".join(a.name for a in parsed.to)
    display_cc = "; ".join(a.name for a in parsed.cc)
    display_bcc = "; ".join(a.name for a in parsed.bcc)
    properties: list[tuple[int, object]] = [
        (P.MESSAGE_CLASS, _utf16("IPM.Note")),
        (P.SUBJECT, _utf16(parsed.subject)),
        (P.SUBJECT_PREFIX, _utf16(prefix)),
        (P.NORMALIZED_SUBJECT, _utf16(normalized)),
        (P.CONVERSATION_TOPIC, _utf16(normalized)),
        (P.CLIENT_SUBMIT_TIME, submitted),
        (P.MESSAGE_DELIVERY_TIME, delivered),
        (P.CREATION_TIME, now),
        (P.LAST_MODIFICATION_TIME, now),
        (P.MESSAGE_FLAGS, flags),
        (P.MESSAGE_STATUS, 0),
        (P.IMPORTANCE, parsed.importance),
        (P.PRIORITY, parsed.importance - 1),
        (P.SENSITIVITY, 0),
        (P.HAS_ATTACHMENTS, bool(parsed.attachments)),
        (P.DISPLAY_TO, _utf16(display_to)),
        (P.DISPLAY_CC, _utf16(display_cc)),
        (P.DISPLAY_BCC, _utf16(display_bcc)),
        (P.SEARCH_KEY, _search_key()),
        (P.INTERNET_CODEPAGE, 65001),
        (P.MESSAGE_TO_ME, False),
        (P.MESSAGE_CC_ME, False),
    ]
    if sender is not None:
        properties += _sender_properties(sender)
    if parsed.headers:
        headers = crlf(parsed.headers) + "\r\n\r\n"
        properties.append((P.TRANSPORT_MESSAGE_HEADERS, _utf16(headers)))
    for prop_tag, text in ((P.INTERNET_MESSAGE_ID, parsed.message_id),
                           (P.IN_REPLY_TO_ID, parsed.in_reply_to),
                           (P.INTERNET_REFERENCES, parsed.references)):  # fmt: skip
        if text:
            properties.append((prop_tag, _utf16(text)))
    if parsed.large_body_text is not None:
        chunks = (_utf16(text) for text in crlf_chunks(parsed.large_body_text.text_chunks()))
        properties.append((P.BODY, store_stream(ndb, chunks)))
    elif parsed.body_text is not None:
        properties.append((P.BODY, _utf16(crlf(parsed.body_text))))
    if parsed.large_body_html is not None:
        chunks = (t.encode("utf-8", "surrogatepass") for t in parsed.large_body_html.text_chunks())
        properties.append((P.BODY_HTML, store_stream(ndb, chunks)))
    elif parsed.body_html is not None:
        properties.append((P.BODY_HTML, parsed.body_html.encode("utf-8", "surrogatepass")))
    if meta is not None:
        properties += metadata_properties(meta)

    properties, size = _sized_without_empty_values(properties)
    size += 4 + attachment_sizes  # PidTagMessageSize itself, then the attachments
    properties.append((P.MESSAGE_SIZE, size))
    parts = write_property_context(ndb, properties, subnodes)
    assert parts.value_bytes + attachment_sizes == size

    row: dict[int, object | None] = {
        P.IMPORTANCE: parsed.importance,
        P.MESSAGE_CLASS: "IPM.Note",
        P.SENSITIVITY: 0,
        P.SUBJECT: _short(parsed.subject),
        P.CLIENT_SUBMIT_TIME: P.filetime(submitted),
        P.SENT_REPRESENTING_NAME: _short(sender.name) if sender else None,
        P.MESSAGE_TO_ME: False,
        P.MESSAGE_CC_ME: False,
        P.CONVERSATION_TOPIC: _short(normalized),
        P.DISPLAY_CC: _short(display_cc),
        P.DISPLAY_TO: _short(display_to),
        P.MESSAGE_DELIVERY_TIME: P.filetime(delivered),
        P.MESSAGE_FLAGS: flags,
        P.MESSAGE_SIZE: size,
        P.MESSAGE_STATUS: 0,
        P.LAST_MODIFICATION_TIME: P.filetime(now),
    }
    return WrittenMessage(parts, size, row)


def without_empty_values(properties: list[tuple[int, object]]) -> list[tuple[int, object]]:
    """``properties`` less the zero-length strings and binaries: Outlook leaves such a
    property out rather than store it with no data, and readers fail on one that has none
    (libpff's html_body_size: "missing value data"; pypff gives None for an empty string).
    Fixed-size values (numbers, flags, times) are never empty; an empty ``StoredValue`` is."""
    return [(prop_tag, value) for prop_tag, value in properties
            if value not in _EMPTY and not (type(value) is StoredValue and not value.size)]  # fmt: skip


_EMPTY = (b"", "")


def _sized_without_empty_values(
    properties: list[tuple[int, object]],
) -> tuple[list[tuple[int, object]], int]:
    """``without_empty_values`` and the sum of what the rest count for in PidTagMessageSize,
    in one pass (every message goes through it)."""
    kept: list[tuple[int, object]] = []
    size = 0
    for item in properties:
        value = item[1]
        kind = type(value)
        if kind is bytes:
            if not value:
                continue
            size += len(value)
        elif kind is StoredValue:
            if not value.size:  # type: ignore[union-attr]
                continue
            size += value.size  # type: ignore[union-attr]
        elif item[1] in _EMPTY:
            continue
        else:
            size += _value_size(item[0], value)
        kept.append(item)
    return kept, size


_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def crlf(text: str) -> str:
    """Text with Windows line breaks, as MAPI keeps PidTagBody and the transport headers
    (readpst runs lines ended by a lone CR together)."""
    if "\r" not in text:
        return text.replace("\n", "\r\n") if "\n" in text else text
    if text.count("\r") == text.count("\r\n") == text.count("\n"):
        return text  # CRLF already: most mail
    return _LINE_BREAKS.sub("\r\n", text)


def crlf_chunks(chunks: Iterable[str]) -> Iterator[str]:
    """``crlf`` over text in pieces (a CR ending a piece may pair with the next one's LF)."""
    pending = ""
    for chunk in chunks:
        text = pending + chunk
        pending = ""
        if text.endswith("\r"):
            text, pending = text[:-1], "\r"
        yield crlf(text)
    if pending:
        yield "\r\n"


_SUBJECT_PREFIX = re.compile(r"^([^\W\d_]{1,3}):\s?", re.UNICODE)


def split_subject(subject: str) -> tuple[str, str]:
    """(PidTagSubjectPrefix, PidTagNormalizedSubject): "RE: x" -> ("RE: ", "x"), as MAPI does
    for a prefix of up to three letters followed by a colon."""
    match = _SUBJECT_PREFIX.match(subject)
    if not match:
        return "", subject
    return match.group(0), subject[match.end() :]


def _value_size(prop_tag: int, value: object) -> int:
    if isinstance(value, StoredValue):
        return value.size
    fixed = P.FIXED_SIZES.get(P.tag_type(prop_tag))
    if fixed is not None:
        return fixed
    assert isinstance(value, bytes)
    return len(value)


def _sender_properties(sender: Address) -> list[tuple[int, object]]:
    name, address = _utf16(sender.name), _utf16(sender.address)
    search_key = b"SMTP:" + sender.address.upper().encode("utf-8", "replace") + b"\x00"
    return [
        (P.SENDER_NAME, name),
        (P.SENDER_EMAIL_ADDRESS, address),
        (P.SENDER_ADDRESS_TYPE, _utf16("SMTP")),
        (P.SENDER_SEARCH_KEY, search_key),
        (P.SENT_REPRESENTING_NAME, name),
        (P.SENT_REPRESENTING_EMAIL_ADDRESS, address),
        (P.SENT_REPRESENTING_ADDRESS_TYPE, _utf16("SMTP")),
        (P.SENT_REPRESENTING_SEARCH_KEY, search_key),
        (P.tag(0x5D01, P.PT_UNICODE), address),  # PidTagSenderSmtpAddress
        (P.tag(0x5D02, P.PT_UNICODE), address),  # PidTagSentRepresentingSmtpAddress
    ]


def _recipient_table(ndb: NodeDatabaseWriter, parsed: ParsedMessage) -> tuple[int, int, int]:
    table = TableWriter(ndb, RECIPIENT_COLUMNS + RECIPIENT_EXTRA_COLUMNS)
    recipients = [(P.MAPI_TO, a) for a in parsed.to] + [(P.MAPI_CC, a) for a in parsed.cc]
    recipients += [(P.MAPI_BCC, a) for a in parsed.bcc]
    for row_id, (kind, address) in enumerate(recipients):
        search_key = b"SMTP:" + address.address.upper().encode("utf-8", "replace") + b"\x00"
        name, email = address.name or None, address.address or None  # no empty cells
        table.add_row(row_id, {
            P.RECIPIENT_TYPE: kind,
            P.RESPONSIBILITY: False,
            P.OBJECT_TYPE: MAPI_MAILUSER,
            P.DISPLAY_NAME: name,
            P.ADDRESS_TYPE: "SMTP",
            P.EMAIL_ADDRESS: email,
            P.SEARCH_KEY: search_key,
            P.DISPLAY_TYPE: 0,
            P.SEND_RICH_INFO: False,
            P.SMTP_ADDRESS: email,
            P.TRANSMITTABLE_DISPLAY_NAME: name,
            P.RECIPIENT_DISPLAY_NAME: name,
            P.RECIPIENT_FLAGS: 1,  # recipSendable
            P.RECIPIENT_ORDER: row_id,
            P.RECIPIENT_TRACK_STATUS: 0,
        })  # fmt: skip
    parts = table.finish()
    return NID_RECIPIENT_TABLE, parts.bid_data, parts.bid_sub


def _write_attachment(
    ndb: NodeDatabaseWriter, attachment: Attachment, number: int, html: str, taken: set[str]
) -> tuple[NodeParts, int, str]:
    """Write one attachment object; return its parts, PidTagAttachSize and short name."""
    long_name = attachment.filename
    short_name = _short_filename(long_name, taken)
    extension = Path(long_name).suffix
    properties: list[tuple[int, object]] = [
        (P.ATTACH_LONG_FILENAME, _utf16(long_name)),
        (P.ATTACH_FILENAME, _utf16(short_name)),
        (P.DISPLAY_NAME, _utf16(long_name)),
        (P.ATTACH_MIME_TAG, _utf16(attachment.mime_type)),
        (P.RENDERING_POSITION, 0xFFFFFFFF),
        (P.ATTACH_NUMBER, number),
        (P.OBJECT_TYPE, MAPI_ATTACH),
    ]
    if extension:
        properties.append((P.ATTACH_EXTENSION, _utf16(extension)))
    if attachment.content_id:
        properties.append((P.ATTACH_CONTENT_ID, _utf16(attachment.content_id)))
        if attachment.inline and f"cid:{attachment.content_id}" in html:
            properties.append((P.ATTACHMENT_HIDDEN, True))
            properties.append((P.ATTACH_FLAGS, 4))  # ATT_MHTML_REF
    size = 4  # PidTagAttachSize itself
    properties = without_empty_values(properties)
    if attachment.embedded is not None:
        inner = write_message_object(ndb, attachment.embedded, read=True, received=None)
        nid = ndb.nids.allocate(NID_TYPE_NORMAL_MESSAGE)
        properties.append((P.ATTACH_METHOD, P.ATTACH_EMBEDDED_MSG))
        properties.append((P.ATTACH_DATA_OBJECT, ObjectValue(
            nid, inner.parts.bid_data, inner.parts.bid_sub, inner.size)))  # fmt: skip
        size += inner.size
    else:
        assert attachment.content is not None
        stored = store_stream(ndb, attachment.content.chunks())
        properties.append((P.ATTACH_METHOD, P.ATTACH_BY_VALUE))
        properties.append((P.ATTACH_DATA_BINARY, stored))
        size += stored.size
    for prop_tag, value in properties:
        if prop_tag not in (P.ATTACH_DATA_OBJECT, P.ATTACH_DATA_BINARY):
            size += _value_size(prop_tag, value)
    properties.append((P.ATTACH_SIZE, size))
    parts = write_property_context(ndb, properties)
    assert parts.value_bytes == size
    return parts, size, short_name


def store_stream(ndb: NodeDatabaseWriter, chunks: Iterable[bytes]) -> StoredValue:
    """Write a binary value as it arrives: in the heap if it ends up small, else a subnode."""
    buffer = bytearray()
    tree = None
    for chunk in chunks:
        if tree is None:
            buffer += chunk
            if len(buffer) > MAX_ALLOCATION:
                tree = ndb.data_tree()
                tree.write(buffer)
                buffer = bytearray()
        else:
            tree.write(chunk)
    if tree is None:
        return StoredValue(0, 0, len(buffer), inline=bytes(buffer))
    nid = ndb.nids.allocate(NID_TYPE_LTP)
    bid = tree.finish()
    return StoredValue(nid, bid, tree.size)


def _short_filename(name: str, taken: set[str]) -> str:
    """An 8.3 name for PidTagAttachFilename: the name itself if it fits, else STEM~N.EXT."""
    path = Path(name)
    stem, extension = path.stem, path.suffix[1:]
    ascii_ok = name.isascii() and " " not in name
    if ascii_ok and 0 < len(stem) <= 8 and len(extension) <= 3 and name.upper() not in taken:
        taken.add(name.upper())
        return name
    clean_stem = "".join(c for c in stem.upper() if c.isascii() and c.isalnum())[:6] or "ATTACH"
    clean_ext = "".join(c for c in extension.upper() if c.isascii() and c.isalnum())[:3]
    for counter in range(1, 10_000):
        suffix = f"~{counter}"
        candidate = clean_stem[: 8 - len(suffix)] + suffix + (f".{clean_ext}" if clean_ext else "")
        if candidate not in taken:
            taken.add(candidate)
            return candidate
    return "ATTACH.BIN"

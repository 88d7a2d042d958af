"""The messaging layer: the store, its folders, messages, recipients and attachments.

The store starts as a new Outlook store does ([MS-PST] §2.7): message store PC, name-to-id map,
root folder, "Top of Outlook data file" (IPM subtree), "Search Root", "Deleted Items",
"IPM_COMMON_VIEWS", the template tables and the search management nodes, empty. Source
folders go below the IPM subtree.

Messages are written as they come: the message node (PC, recipient table, attachment table,
attachment objects, embedded messages) goes straight to disk; its contents-table row is
spilled to a temporary file and each folder's contents table is built at close, one folder at
a time. PidTagMessageSize is the sum of the sizes of the message PC's values (fixed-size
values at their width) plus the PidTagAttachSize of every attachment, which in turn is the sum
of the attachment PC's values (an embedded message counting as its own message size).
"""

from __future__ import annotations

import marshal
import struct
import tempfile
import uuid
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import props as P
from .heap import MAX_ALLOCATION
from .ltp import NodeParts, ObjectValue, StoredValue, TableWriter, write_property_context
from .mime import Address, Attachment, ParsedMessage
from .ndb import (
    NID_TYPE_ASSOC_CONTENTS_TABLE,
    NID_TYPE_ATTACHMENT,
    NID_TYPE_CONTENTS_TABLE,
    NID_TYPE_HIERARCHY_TABLE,
    NID_TYPE_LTP,
    NID_TYPE_NORMAL_FOLDER,
    NID_TYPE_NORMAL_MESSAGE,
    NodeDatabaseWriter,
    make_nid,
    nid_index,
)
from .templates import (
    ASSOC_CONTENTS_COLUMNS,
    ATTACHMENT_COLUMNS,
    CONTENTS_COLUMNS,
    HIERARCHY_COLUMNS,
    OTHER_TEMPLATE_COLUMNS,
    OUTGOING_QUEUE_COLUMNS,
    RECEIVE_FOLDER_COLUMNS,
    RECIPIENT_COLUMNS,
    RECIPIENT_EXTRA_COLUMNS,
    SEARCH_CONTENTS_COLUMNS,
)

# Special NIDs ([MS-PST] §2.4.1) and the folders of a new store.
NID_MESSAGE_STORE = 0x21
NID_NAME_TO_ID_MAP = 0x61
NID_ROOT_FOLDER = 0x122
NID_SEARCH_MANAGEMENT_QUEUE = 0x1E1
NID_SEARCH_ACTIVITY_LIST = 0x201
NID_SEARCH_DOMAIN_OBJECT = 0x261
NID_HIERARCHY_TABLE_TEMPLATE = 0x60D
NID_CONTENTS_TABLE_TEMPLATE = 0x60E
NID_ASSOC_CONTENTS_TABLE_TEMPLATE = 0x60F
NID_SEARCH_CONTENTS_TABLE_TEMPLATE = 0x610
NID_RECEIVE_FOLDER_TABLE = 0x62B
NID_OUTGOING_QUEUE_TABLE = 0x64C
NID_ATTACHMENT_TABLE = 0x671
NID_RECIPIENT_TABLE = 0x692
NID_IPM_SUBTREE = 0x8022
NID_SEARCH_ROOT = 0x8042
NID_DELETED_ITEMS = 0x8062
NID_COMMON_VIEWS = 0x8082

IPM_SUBTREE_NAME = "Top of Outlook data file"
DELETED_ITEMS_NAME = "Deleted Items"
MAIL_CONTAINER_CLASS = "IPF.Note"
NAMEID_BUCKET_COUNT = 251
# FOLDER_IPM_SUBTREE_VALID | FOLDER_IPM_WASTEBASKET_VALID | FOLDER_COMMON_VIEWS_VALID |
# FOLDER_FINDER_VALID ([MS-PST] §2.4.3.1).
VALID_FOLDER_MASK = 0x01 | 0x08 | 0x40 | 0x80
MAPI_MAILUSER = 6
MAPI_ATTACH = 7
TABLE_TEXT_LIMIT = 255  # MAPI tables carry at most 255 characters of a string


@dataclass
class FolderRecord:
    """A folder of the store, and what its tables need at close."""

    nid: int
    name: str
    parent: FolderRecord | None
    container_class: str | None = None
    comment: str | None = None
    children: list[FolderRecord] = field(default_factory=list)
    message_count: int = 0
    unread_count: int = 0
    row_offsets: array = field(default_factory=lambda: array("Q"))

    @property
    def parent_nid(self) -> int:
        return self.parent.nid if self.parent else self.nid  # the root is its own parent


def _unique_sibling_name(name: str, parent: FolderRecord) -> str:
    """Outlook treats sibling folder names case-insensitively: "Inbox" next to "INBOX"
    becomes "Inbox (2)" rather than a second folder Outlook would take for the first."""
    taken = {child.name.casefold() for child in parent.children}
    candidate, number = name, 1
    while candidate.casefold() in taken:
        number += 1
        candidate = f"{name} ({number})"
    return candidate


class _RowSpill:
    """Contents-table rows kept on disk until the folder's table is written."""

    def __init__(self, directory: Path) -> None:
        self._file = tempfile.TemporaryFile(dir=directory, prefix=".pst-rows-")
        self._end = 0

    def append(self, nid: int, values: dict[int, object]) -> int:
        blob = marshal.dumps((nid, values))
        offset = self._end
        self._file.seek(offset)
        self._file.write(struct.pack("<I", len(blob)) + blob)
        self._end += 4 + len(blob)
        return offset

    def read(self, offsets: Iterable[int]) -> Iterator[tuple[int, dict[int, object]]]:
        for offset in offsets:
            self._file.seek(offset)
            (size,) = struct.unpack("<I", self._file.read(4))
            yield marshal.loads(self._file.read(size))

    def close(self) -> None:
        self._file.close()


class MessageStore:
    """Builds the messaging layer of one PST file on top of a NodeDatabaseWriter."""

    def __init__(self, ndb: NodeDatabaseWriter, display_name: str) -> None:
        self.ndb = ndb
        self.display_name = display_name
        self.record_key = uuid.uuid4().bytes
        self.root = FolderRecord(NID_ROOT_FOLDER, "", None)
        self.ipm_subtree = self._special(NID_IPM_SUBTREE, IPM_SUBTREE_NAME, self.root)
        self.search_root = self._special(NID_SEARCH_ROOT, "Search Root", self.root)
        self.deleted_items = self._special(
            NID_DELETED_ITEMS, DELETED_ITEMS_NAME, self.ipm_subtree, comment="Deleted Items folder"
        )
        self.common_views = self._special(NID_COMMON_VIEWS, "IPM_COMMON_VIEWS", self.root, "")
        self._folders: dict[tuple[str, ...], FolderRecord] = {
            (DELETED_ITEMS_NAME,): self.deleted_items
        }
        self._all_folders = [self.root, self.ipm_subtree, self.search_root, self.deleted_items,
                             self.common_views]  # fmt: skip
        self._rows = _RowSpill(ndb.path.parent)

    def _special(
        self, nid: int, name: str, parent: FolderRecord, comment: str | None = None
    ) -> FolderRecord:
        record = FolderRecord(nid, name, parent, comment=comment)
        parent.children.append(record)
        for nid_type_ in (NID_TYPE_HIERARCHY_TABLE, NID_TYPE_CONTENTS_TABLE,
                          NID_TYPE_ASSOC_CONTENTS_TABLE, NID_TYPE_NORMAL_FOLDER):  # fmt: skip
            self.ndb.nids.observe(make_nid(nid_type_, nid_index(nid)))
        return record

    # -- folders ----------------------------------------------------------------------------

    def folder(self, path: str) -> FolderRecord:
        """The folder at a '/'-separated path below the IPM subtree, created with its parents."""
        parts = tuple(p for p in path.replace("\\", "/").split("/") if p.strip())
        if not parts:
            return self.ipm_subtree
        record = self._folders.get(parts)
        if record is not None:
            return record
        parent = self.folder("/".join(parts[:-1])) if len(parts) > 1 else self.ipm_subtree
        nid = self.ndb.nids.allocate(NID_TYPE_NORMAL_FOLDER)
        for table_type in (NID_TYPE_HIERARCHY_TABLE, NID_TYPE_CONTENTS_TABLE,
                           NID_TYPE_ASSOC_CONTENTS_TABLE):  # fmt: skip
            self.ndb.nids.observe(make_nid(table_type, nid_index(nid)))
        name = _unique_sibling_name(parts[-1].strip(), parent)
        record = FolderRecord(nid, name, parent, container_class=MAIL_CONTAINER_CLASS)
        parent.children.append(record)
        self._folders[parts] = record
        self._all_folders.append(record)
        return record

    # -- messages ---------------------------------------------------------------------------

    def add_message(
        self, folder: FolderRecord, parsed: ParsedMessage, *, read: bool, received: datetime | None
    ) -> None:
        nid = self.ndb.nids.allocate(NID_TYPE_NORMAL_MESSAGE)
        written = write_message_object(self.ndb, parsed, read=read, received=received)
        self.ndb.add_node(nid, written.parts.bid_data, written.parts.bid_sub, folder.nid)
        folder.message_count += 1
        if not read:
            folder.unread_count += 1
        folder.row_offsets.append(self._rows.append(nid, written.row))

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Write every folder, the store and the fixed nodes, then finish the file."""
        for record in self._all_folders:
            self._write_folder(record)
        self._rows.close()
        self._write_store()
        self._write_fixed_nodes()
        self.ndb.close()

    def abort(self) -> None:
        self._rows.close()
        self.ndb.abort()

    def _write_folder(self, record: FolderRecord) -> None:
        ndb = self.ndb
        index = nid_index(record.nid)
        contents = TableWriter(ndb, CONTENTS_COLUMNS)
        for message_nid, values in self._rows.read(record.row_offsets):
            contents.add_row(message_nid, values)
        self._add_table(make_nid(NID_TYPE_CONTENTS_TABLE, index), contents.finish())
        hierarchy = TableWriter(ndb, HIERARCHY_COLUMNS)
        for child in sorted(record.children, key=lambda c: c.nid):
            hierarchy.add_row(child.nid, {
                P.DISPLAY_NAME: child.name,
                P.CONTENT_COUNT: child.message_count,
                P.CONTENT_UNREAD_COUNT: child.unread_count,
                P.SUBFOLDERS: bool(child.children),
                P.CONTAINER_CLASS: child.container_class,
            })  # fmt: skip
        self._add_table(make_nid(NID_TYPE_HIERARCHY_TABLE, index), hierarchy.finish())
        assoc = TableWriter(ndb, ASSOC_CONTENTS_COLUMNS).finish()
        self._add_table(make_nid(NID_TYPE_ASSOC_CONTENTS_TABLE, index), assoc)
        properties: list[tuple[int, object]] = [
            (P.DISPLAY_NAME, record.name),
            (P.CONTENT_COUNT, record.message_count),
            (P.CONTENT_UNREAD_COUNT, record.unread_count),
            (P.SUBFOLDERS, bool(record.children)),
        ]
        if record.container_class:
            properties.append((P.CONTAINER_CLASS, record.container_class))
        if record.comment is not None:
            properties.append((P.COMMENT, record.comment))
        parts = write_property_context(ndb, properties)
        ndb.add_node(record.nid, parts.bid_data, parts.bid_sub, record.parent_nid)

    def _add_table(self, nid: int, parts: NodeParts) -> None:
        self.ndb.add_node(nid, parts.bid_data, parts.bid_sub, 0)

    def _entry_id(self, nid: int) -> bytes:
        return b"\x00" * 4 + self.record_key + struct.pack("<I", nid)

    def _write_store(self) -> None:
        properties = [
            (P.RECORD_KEY, self.record_key),
            (P.DISPLAY_NAME, self.display_name),
            (P.VALID_FOLDER_MASK, VALID_FOLDER_MASK),
            (P.IPM_SUBTREE_ENTRY_ID, self._entry_id(NID_IPM_SUBTREE)),
            (P.IPM_WASTEBASKET_ENTRY_ID, self._entry_id(NID_DELETED_ITEMS)),
            (P.COMMON_VIEWS_ENTRY_ID, self._entry_id(NID_COMMON_VIEWS)),
            (P.FINDER_ENTRY_ID, self._entry_id(NID_SEARCH_ROOT)),
            (P.PST_PASSWORD, 0),
        ]
        parts = write_property_context(self.ndb, properties)
        self.ndb.add_node(NID_MESSAGE_STORE, parts.bid_data, parts.bid_sub, 0)

    def _write_fixed_nodes(self) -> None:
        ndb = self.ndb
        name_map = write_property_context(ndb, name_to_id_map_properties(REGISTERED_NAMES))
        ndb.add_node(NID_NAME_TO_ID_MAP, name_map.bid_data, name_map.bid_sub, 0)
        # Search management nodes exist but are empty: the store has no search folders.
        for nid in (NID_SEARCH_MANAGEMENT_QUEUE, NID_SEARCH_ACTIVITY_LIST,
                    NID_SEARCH_DOMAIN_OBJECT):  # fmt: skip
            ndb.add_node(nid, 0, 0, 0)
        templates = {
            NID_HIERARCHY_TABLE_TEMPLATE: HIERARCHY_COLUMNS,
            NID_CONTENTS_TABLE_TEMPLATE: CONTENTS_COLUMNS,
            NID_ASSOC_CONTENTS_TABLE_TEMPLATE: ASSOC_CONTENTS_COLUMNS,
            NID_SEARCH_CONTENTS_TABLE_TEMPLATE: SEARCH_CONTENTS_COLUMNS,
            NID_OUTGOING_QUEUE_TABLE: OUTGOING_QUEUE_COLUMNS,
            NID_ATTACHMENT_TABLE: ATTACHMENT_COLUMNS,
            NID_RECIPIENT_TABLE: RECIPIENT_COLUMNS,
            **OTHER_TEMPLATE_COLUMNS,
        }
        for nid, columns in templates.items():
            self._add_table(nid, TableWriter(ndb, columns).finish())
        receive = TableWriter(ndb, RECEIVE_FOLDER_COLUMNS)
        receive.add_row(1, {P.MESSAGE_CLASS: "", 0x66050003: NID_ROOT_FOLDER})
        self._add_table(NID_RECEIVE_FOLDER_TABLE, receive.finish())


# -- named properties ---------------------------------------------------------------------------

PSETID_COMMON = uuid.UUID("00062008-0000-0000-c000-000000000046")
# The store uses no named property itself, but readers (libpff) reject a map without entries,
# so it registers one that Outlook creates on every internet mail: PidLidInternetAccountName.
REGISTERED_NAMES: tuple[tuple[uuid.UUID, int], ...] = ((PSETID_COMMON, 0x8580),)


def name_to_id_map_properties(names: Iterable[tuple[uuid.UUID, int]]) -> list[tuple[int, object]]:
    """PC properties of a name-to-id map ([MS-PST] §2.4.7) holding numeric named properties.

    Each name gets property id 0x8000 + its position. GUID index 1 and 2 are PS_MAPI and
    PS_PUBLIC_STRINGS; others are 3 + their position in the GUID stream. Every NAMEID is also
    filed in hash bucket (dwPropertyID ^ (guid index << 1)) % 251.
    """
    guids: list[uuid.UUID] = []
    entries = bytearray()
    buckets: dict[int, bytearray] = {}
    for position, (guid, number) in enumerate(names):
        if guid not in guids:
            guids.append(guid)
        guid_field = (3 + guids.index(guid)) << 1  # N (string name) bit clear
        record = struct.pack("<IHH", number, guid_field, position)
        entries += record
        bucket = (number ^ guid_field) % NAMEID_BUCKET_COUNT
        buckets.setdefault(bucket, bytearray()).extend(record)
    properties: list[tuple[int, object]] = [
        (P.NAMEID_BUCKET_COUNT, NAMEID_BUCKET_COUNT),
        (P.NAMEID_STREAM_GUID, b"".join(g.bytes_le for g in guids)),
        (P.NAMEID_STREAM_ENTRY, bytes(entries)),
        (P.NAMEID_STREAM_STRING, b""),
    ]
    for bucket, records in sorted(buckets.items()):
        properties.append((P.tag(0x1000 + bucket, P.PT_BINARY), bytes(records)))
    return properties


# -- message objects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WrittenMessage:
    parts: NodeParts
    size: int
    row: dict[int, object]  # contents-table values (times as FILETIME ints)


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def _short(text: str) -> str:
    return text[:TABLE_TEXT_LIMIT]


def write_message_object(
    ndb: NodeDatabaseWriter, parsed: ParsedMessage, *, read: bool, received: datetime | None
) -> WrittenMessage:
    """Write a message's recipients, attachments and PC; the caller adds the node itself."""
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
    sender = parsed.sender
    display_to = "; ".join(a.name for a in parsed.to)
    display_cc = "; ".join(a.name for a in parsed.cc)
    display_bcc = "; ".join(a.name for a in parsed.bcc)
    properties: list[tuple[int, object]] = [
        (P.MESSAGE_CLASS, _utf16("IPM.Note")),
        (P.SUBJECT, _utf16(parsed.subject)),
        (P.NORMALIZED_SUBJECT, _utf16(parsed.subject)),
        (P.CONVERSATION_TOPIC, _utf16(parsed.subject)),
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
        (P.SEARCH_KEY, uuid.uuid4().bytes),
        (P.INTERNET_CODEPAGE, 65001),
        (P.MESSAGE_TO_ME, False),
        (P.MESSAGE_CC_ME, False),
    ]
    if sender is not None:
        properties += _sender_properties(sender)
    if parsed.headers:
        properties.append((P.TRANSPORT_MESSAGE_HEADERS, _utf16(parsed.headers + "\r\n\r\n")))
    for prop_tag, text in ((P.INTERNET_MESSAGE_ID, parsed.message_id),
                           (P.IN_REPLY_TO_ID, parsed.in_reply_to),
                           (P.INTERNET_REFERENCES, parsed.references)):  # fmt: skip
        if text:
            properties.append((prop_tag, _utf16(text)))
    if parsed.large_body_text is not None:
        chunks = (_utf16(text) for text in parsed.large_body_text.text_chunks())
        properties.append((P.BODY, store_stream(ndb, chunks)))
    elif parsed.body_text is not None:
        properties.append((P.BODY, _utf16(parsed.body_text)))
    if parsed.large_body_html is not None:
        chunks = (t.encode("utf-8", "surrogatepass") for t in parsed.large_body_html.text_chunks())
        properties.append((P.BODY_HTML, store_stream(ndb, chunks)))
    elif parsed.body_html is not None:
        properties.append((P.BODY_HTML, parsed.body_html.encode("utf-8", "surrogatepass")))

    size = 4 + attachment_sizes  # PidTagMessageSize itself, then the attachments
    for prop_tag, value in properties:
        size += _value_size(prop_tag, value)
    properties.append((P.MESSAGE_SIZE, size))
    parts = write_property_context(ndb, properties, subnodes)
    assert parts.value_bytes + attachment_sizes == size

    row: dict[int, object] = {
        P.IMPORTANCE: parsed.importance,
        P.MESSAGE_CLASS: "IPM.Note",
        P.SENSITIVITY: 0,
        P.SUBJECT: _short(parsed.subject),
        P.CLIENT_SUBMIT_TIME: P.filetime(submitted),
        P.SENT_REPRESENTING_NAME: _short(sender.name) if sender else None,
        P.MESSAGE_TO_ME: False,
        P.MESSAGE_CC_ME: False,
        P.CONVERSATION_TOPIC: _short(parsed.subject),
        P.DISPLAY_CC: _short(display_cc),
        P.DISPLAY_TO: _short(display_to),
        P.MESSAGE_DELIVERY_TIME: P.filetime(delivered),
        P.MESSAGE_FLAGS: flags,
        P.MESSAGE_SIZE: size,
        P.MESSAGE_STATUS: 0,
        P.LAST_MODIFICATION_TIME: P.filetime(now),
    }
    return WrittenMessage(parts, size, row)


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
        table.add_row(row_id, {
            P.RECIPIENT_TYPE: kind,
            P.RESPONSIBILITY: False,
            P.OBJECT_TYPE: MAPI_MAILUSER,
            P.DISPLAY_NAME: address.name,
            P.ADDRESS_TYPE: "SMTP",
            P.EMAIL_ADDRESS: address.address,
            P.SEARCH_KEY: search_key,
            P.DISPLAY_TYPE: 0,
            P.SEND_RICH_INFO: False,
            P.SMTP_ADDRESS: address.address,
            P.TRANSMITTABLE_DISPLAY_NAME: address.name,
            P.RECIPIENT_DISPLAY_NAME: address.name,
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

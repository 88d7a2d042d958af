"""The messaging layer: the store and its folders; messages come from ``messages``.

The store starts as a new Outlook store does and as [MS-PST] §2.7 requires: message store PC,
name-to-id map, root folder, "Top of Outlook data file" (IPM subtree), "Search Root", the spam
search folder, "Deleted Items", "IPM_COMMON_VIEWS", the template tables and the (empty) search
management queue and activity list. Source folders go below the IPM subtree.

Messages are written as they come: the message node (PC, recipient table, attachment table,
attachment objects, embedded messages) goes straight to disk; its contents-table row is
spilled to a temporary file and each folder's contents table is built at close, one folder at
a time, so memory does not grow with the number of messages (8 bytes each for the offsets).
"""

from __future__ import annotations

import marshal
import struct
import tempfile
import unicodedata
import uuid
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import props as P
from .ltp import NodeParts, TableWriter, write_property_context
from .messages import (
    NID_ATTACHMENT_TABLE,
    NID_RECIPIENT_TABLE,
    ArchiveMetadata,
    write_message_object,
)
from .mime import ParsedMessage
from .namemap import LEGACYFLO_NAMES, REGISTERED_NAMES, name_to_id_map_properties
from .ndb import (
    NID_TYPE_ASSOC_CONTENTS_TABLE,
    NID_TYPE_CONTENTS_TABLE,
    NID_TYPE_HIERARCHY_TABLE,
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
NID_IPM_SUBTREE = 0x8022
NID_SEARCH_ROOT = 0x8042
NID_DELETED_ITEMS = 0x8062
NID_COMMON_VIEWS = 0x8082
# The spam search folder of a new store and its search nodes (NIDs as Outlook assigns them).
NID_SPAM_SEARCH_FOLDER = 0x2223
NID_SPAM_SEARCH_UPDATE_QUEUE = 0x2226
NID_SPAM_SEARCH_CRITERIA = 0x2227
NID_SPAM_SEARCH_CONTENTS_TABLE = 0x2230
SPAM_SEARCH_FOLDER_NAME = "SPAM Search Folder 2"

IPM_SUBTREE_NAME = "Top of Outlook data file"
DELETED_ITEMS_NAME = "Deleted Items"
MAIL_CONTAINER_CLASS = "IPF.Note"
# FOLDER_IPM_SUBTREE_VALID | FOLDER_IPM_WASTEBASKET_VALID | FOLDER_COMMON_VIEWS_VALID |
# FOLDER_FINDER_VALID ([MS-PST] §2.4.3.1).
VALID_FOLDER_MASK = 0x01 | 0x08 | 0x40 | 0x80


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


def _folded(name: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", name).casefold())


def _unique_sibling_name(name: str, parent: FolderRecord) -> str:
    """Outlook treats sibling folder names case-insensitively: "Inbox" next to "INBOX"
    becomes "Inbox (2)" rather than a second folder Outlook would take for the first (and
    "Café" in NFC next to "Café" in NFD likewise)."""
    taken = {_folded(child.name) for child in parent.children}
    candidate, number = name, 1
    while _folded(candidate) in taken:
        number += 1
        candidate = f"{name} ({number})"
    return candidate


def _version_history(replica: bytes) -> bytes:
    """PidTagReplVersionHistory as a new store has it: version 1 of one replica."""
    return struct.pack("<I", 1) + replica + struct.pack("<I", 1)


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
        self.replica_guid = uuid.uuid4().bytes
        self.root = FolderRecord(NID_ROOT_FOLDER, "", None)
        self.ipm_subtree = self._special(NID_IPM_SUBTREE, IPM_SUBTREE_NAME, self.root)
        self.search_root = self._special(NID_SEARCH_ROOT, "Search Root", self.root)
        self.deleted_items = self._special(
            NID_DELETED_ITEMS, DELETED_ITEMS_NAME, self.ipm_subtree, comment="Deleted Items folder"
        )
        # A search folder: listed in the root's hierarchy table, but written by its own rules.
        self.spam_search_folder = FolderRecord(NID_SPAM_SEARCH_FOLDER, SPAM_SEARCH_FOLDER_NAME,
                                               self.root)  # fmt: skip
        self.root.children.append(self.spam_search_folder)
        self.common_views = self._special(NID_COMMON_VIEWS, "IPM_COMMON_VIEWS", self.root, "")
        self._folders: dict[tuple[str, ...], FolderRecord] = {
            (DELETED_ITEMS_NAME,): self.deleted_items
        }
        self._all_folders = [self.root, self.ipm_subtree, self.search_root, self.deleted_items,
                             self.common_views]  # fmt: skip
        self._rows = _RowSpill(ndb.path.parent)
        self.uses_legacyflo_names = False  # a message carries LegacyFlo's named properties

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
        """The folder at a '/'-separated path below the IPM subtree, created with its parents.
        Paths that differ only in whitespace around a level ("Work", "Work ") are distinct
        folders; the display name is stripped, and made unique among its siblings."""
        parts = tuple(p for p in path.split("/") if p.strip())
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
        self, folder: FolderRecord, parsed: ParsedMessage, *, read: bool, received: datetime | None,
        meta: ArchiveMetadata | None = None,
    ) -> None:
        nid = self.ndb.nids.allocate(NID_TYPE_NORMAL_MESSAGE)
        written = write_message_object(self.ndb, parsed, read=read, received=received, meta=meta)
        self.uses_legacyflo_names |= meta is not None
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
        self._write_spam_search_folder()
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
        for child in record.children:  # in the order they were made, as Outlook lists them
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

    def _write_spam_search_folder(self) -> None:
        """The search folder [MS-PST] §2.7 requires, as Outlook writes it in a new store: its
        PC, an empty update queue, a criteria object and an empty search contents table."""
        ndb = self.ndb
        record = self.spam_search_folder
        parts = write_property_context(ndb, [
            (P.DISPLAY_NAME, record.name),
            (P.CONTENT_COUNT, 0),
            (P.CONTENT_UNREAD_COUNT, 0),
            (P.SUBFOLDERS, False),
        ])  # fmt: skip
        ndb.add_node(record.nid, parts.bid_data, parts.bid_sub, record.parent_nid)
        ndb.add_node(NID_SPAM_SEARCH_UPDATE_QUEUE, 0, 0, 0)
        criteria = write_property_context(ndb, [(P.tag(0x660B, P.PT_LONG), 0)])
        ndb.add_node(NID_SPAM_SEARCH_CRITERIA, criteria.bid_data, criteria.bid_sub, 0)
        self._add_table(NID_SPAM_SEARCH_CONTENTS_TABLE,
                        TableWriter(ndb, SEARCH_CONTENTS_COLUMNS).finish())  # fmt: skip

    def _add_table(self, nid: int, parts: NodeParts) -> None:
        self.ndb.add_node(nid, parts.bid_data, parts.bid_sub, 0)

    def _entry_id(self, nid: int) -> bytes:
        return b"\x00" * 4 + self.record_key + struct.pack("<I", nid)

    def _write_store(self) -> None:
        # In the order Outlook's new store has its values in the heap. Besides what [MS-PST]
        # §2.4.3 asks for, what else a new Outlook store holds: the replica version history
        # (version 1 of a replica of its own), no replica flags, and three values of Outlook's
        # own (PidTagPstLrNoRestrictions, PidTagLatestPstEnsure, 0x66FC) as it sets them.
        properties = [
            (P.RECORD_KEY, self.record_key),
            (P.DISPLAY_NAME, self.display_name),
            (P.REPL_VERSION_HISTORY, _version_history(self.replica_guid)),
            (P.IPM_SUBTREE_ENTRY_ID, self._entry_id(NID_IPM_SUBTREE)),
            (P.FINDER_ENTRY_ID, self._entry_id(NID_SEARCH_ROOT)),
            (P.IPM_WASTEBASKET_ENTRY_ID, self._entry_id(NID_DELETED_ITEMS)),
            (P.COMMON_VIEWS_ENTRY_ID, self._entry_id(NID_COMMON_VIEWS)),
            (P.VALID_FOLDER_MASK, VALID_FOLDER_MASK),
            (P.REPL_FLAGS, 0),
            (P.tag(0x6633, P.PT_BOOLEAN), True),
            (P.tag(0x66FA, P.PT_LONG), 0x000E0011),
            (P.tag(0x66FC, P.PT_LONG), 0x0018B2B3),
            (P.PST_PASSWORD, 0),
        ]
        parts = write_property_context(self.ndb, properties)
        self.ndb.add_node(NID_MESSAGE_STORE, parts.bid_data, parts.bid_sub, 0)

    def _write_fixed_nodes(self) -> None:
        ndb = self.ndb
        names = (*REGISTERED_NAMES, *LEGACYFLO_NAMES) if self.uses_legacyflo_names else REGISTERED_NAMES
        name_map = write_property_context(ndb, name_to_id_map_properties(names))
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
        receive.add_row(1, {P.MESSAGE_CLASS: "", 0x66050003: NID_ROOT_FOLDER}, version=2)
        self._add_table(NID_RECEIVE_FOLDER_TABLE, receive.finish())

"""Reading a PST back for restore and browsing: ``PstArchiveReader``.

The PST is staged on local disk (the restore pipeline copies it from S3); the reader takes a
path or a seekable binary file, or several of them as the volumes of a split archive. It walks
the folders below the IPM subtree ("Top of Outlook data file": the root itself, search folders
and the folders outside the subtree are not restored), depth first, each folder's messages
in its contents table's order before its subfolders, and rebuilds one message at a time
(``rebuild``).

A PST restore is content-identical, not byte-identical: the message is rebuilt from its
properties. So ``ArchivedMessage.sha256`` stays empty (there is no recorded digest of these
bytes) and the SHA-256 the backup recorded of the original bytes (LegacyFloSha256) is
``extra["original_sha256"]``; ``extra["rebuilt"]`` is True.

Metadata (the archive-metadata contract): flags \\Seen from MSGFLAG_READ, \\Flagged from
PR_FLAG_STATUS = 2, \\Answered from PR_LAST_VERB_EXECUTED 102/103, $Forwarded from 104,
\\Draft from MSGFLAG_UNSENT; LegacyFloFlags, when present, is authoritative for keywords (the
flags without a backslash) and adds the system flags MAPI cannot hold (\\Deleted); the
properties win for the three MAPI holds, as Outlook may have changed them since. Internal
date PR_MESSAGE_DELIVERY_TIME (else the submit time); labels the Keywords categories (less the
keywords LegacyFloFlags records: the writer makes both categories); source id
LegacyFloSourceId.

Errors: a file that cannot be opened (not a PST, ANSI, damaged header or B-tree root) raises
``PstFormatError`` from the constructor; a message that cannot be read becomes an
``ArchiveFailure`` with the reason, and the walk goes on; an Outlook item that is no mail
(contact, appointment, task, note) is an ``ArchiveFailure`` with status "skipped". A folder whose tables are damaged is
one failure for the folder (its messages cannot be listed).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from connectors.archives import ArchivedMessage, ArchiveFailure, ArchiveReader, Selection

from . import props as P
from .access import PropertyContext, PstFile, PstFormatError, as_bytes, as_text
from .rebuild import envelope, multi_strings, rebuild_message

NID_MESSAGE_STORE = 0x21
NID_NAME_TO_ID_MAP = 0x61
NID_ROOT_FOLDER = 0x122
NID_IPM_SUBTREE = 0x8022
NID_TYPE_NORMAL_FOLDER = 0x02
NID_TYPE_NORMAL_MESSAGE = 0x04
NID_TYPE_HIERARCHY_TABLE = 0x0D
NID_TYPE_CONTENTS_TABLE = 0x0E
MAX_FOLDER_DEPTH = 64

FLAG_STATUS = P.tag(0x1090, P.PT_LONG)
LAST_VERB_EXECUTED = P.tag(0x1081, P.PT_LONG)
MSGFLAG_UNSENT = 0x0008
PS_PUBLIC_STRINGS_INDEX = 2  # the name-to-id map's wGuid for PS_PUBLIC_STRINGS
_MAPI_FLAGS = ("\\Seen", "\\Flagged", "\\Answered")
# Outlook items that are no mail (contacts, calendar, tasks, notes, journal): reported as
# skipped, not rebuilt into empty messages. Meeting requests and reports are mail.
_NOT_MAIL = ("IPM.CONTACT", "IPM.DISTLIST", "IPM.APPOINTMENT", "IPM.TASK", "IPM.STICKYNOTE",
             "IPM.ACTIVITY", "IPM.CONFIGURATION", "IPM.MICROSOFT")  # fmt: skip

Source = str | os.PathLike | BinaryIO
_COUNT_COLUMNS = frozenset((P.LTP_ROW_ID, P.MESSAGE_SIZE))


@dataclass(frozen=True)
class PstFolder:
    path: str  # '/' between levels, below the IPM subtree
    nid: int
    messages: int
    unread: int


@dataclass(frozen=True)
class BrowseEntry:
    """One message as the Browse page lists it, from the folder's contents table alone."""

    id: str  # what ``read_entry`` takes (the ``entry`` of the restored message)
    folder: str
    subject: str
    sender: str  # the sender's display name (the contents table holds no address)
    date: datetime | None
    size: int
    flags: tuple[str, ...]
    volume: str


@dataclass
class FolderSummary:
    folder: str
    messages: int = 0
    bytes: int = 0


def _nid_type(nid: int) -> int:
    return nid & 0x1F


def _with_type(nid: int, nid_type: int) -> int:
    return (nid & ~0x1F) | nid_type


class NamedProperties:
    """The string-named properties of the store's name-to-id map that restore reads: which
    property id each has in this PST (0x8000 + its index), found by name."""

    def __init__(self, pst: PstFile) -> None:
        self.ids: dict[tuple[bool, str], int] = {}  # (PS_PUBLIC_STRINGS?, name) -> prop id
        if not pst.has_node(NID_NAME_TO_ID_MAP):
            return
        pc = pst.property_context(pst.node(NID_NAME_TO_ID_MAP))
        entries = as_bytes(pc.get(P.NAMEID_STREAM_ENTRY)) or b""
        strings = as_bytes(pc.get(P.NAMEID_STREAM_STRING)) or b""
        for at in range(0, len(entries) - 7, 8):
            key, guid_field, index = struct.unpack_from("<IHH", entries, at)
            if not guid_field & 1 or key + 4 > len(strings):
                continue
            (length,) = struct.unpack_from("<I", strings, key)
            name = strings[key + 4 : key + 4 + length].decode("utf-16-le", "replace")
            public = (guid_field >> 1) == PS_PUBLIC_STRINGS_INDEX
            self.ids.setdefault((public, name), 0x8000 + index)

    def public(self, name: str) -> int | None:
        return self.ids.get((True, name))

    def own(self, name: str) -> int | None:
        """A LegacyFlo property by name, whatever GUID its property set has."""
        for (public, key), prop_id in self.ids.items():
            if key == name and not public:
                return prop_id
        return None


class _Volume:
    """One PST file of the archive, open."""

    def __init__(self, key: str, source: Source) -> None:
        self.key = key
        self.pst = PstFile(source)
        self.names = NamedProperties(self.pst)
        self.keywords_id = self.names.public("Keywords")
        self.source_id_id = self.names.own("LegacyFloSourceId")
        self.sha256_id = self.names.own("LegacyFloSha256")
        self.flags_id = self.names.own("LegacyFloFlags")
        self.root_nid = self._ipm_subtree()

    def _ipm_subtree(self) -> int:
        if self.pst.has_node(NID_MESSAGE_STORE):
            store = self.pst.property_context(self.pst.node(NID_MESSAGE_STORE))
            entry_id = as_bytes(store.get(P.IPM_SUBTREE_ENTRY_ID))
            if entry_id and len(entry_id) >= 24:
                return struct.unpack_from("<I", entry_id, 20)[0]
        return NID_IPM_SUBTREE

    def entry(self, nid: int) -> str:
        return f"{self.key}!0x{nid:08X}" if self.key else f"0x{nid:08X}"

    def close(self) -> None:
        self.pst.close()


class PstArchiveReader(ArchiveReader):
    """The messages of one PST file, or of the volumes of a split PST archive, for restore;
    see the module docstring. ``source``: a path or a seekable binary file, or a list of
    (volume key, path or file) in volume order. ``volume`` names a single file's entries."""

    def __init__(self, source: Source | list[tuple[str, Source]], *, volume: str = "") -> None:
        sources = source if isinstance(source, list) else [(volume, source)]
        self._volumes: list[_Volume] = []
        try:
            for key, item in sources:
                self._volumes.append(_Volume(key, item))
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        for volume in self._volumes:
            volume.close()

    # -- folders ------------------------------------------------------------------------------

    def _walk(self, vol: _Volume) -> Iterator[PstFolder | ArchiveFailure]:
        """Every folder below the IPM subtree, depth first, parents before children."""
        stack: list[tuple[int, str, int]] = [(vol.root_nid, "", 0)]
        seen: set[int] = set()
        while stack:
            nid, path, depth = stack.pop()
            if nid in seen or depth > MAX_FOLDER_DEPTH:
                continue
            seen.add(nid)
            try:
                children = list(self._children(vol, nid))
            except PstFormatError as exc:
                yield ArchiveFailure(path, vol.entry(nid), f"folder {path or '/'!r}: {exc}")
                children = []
            if nid != vol.root_nid:
                try:
                    pc = vol.pst.property_context(vol.pst.node(nid))
                    yield PstFolder(path, nid, pc.integer(P.CONTENT_COUNT) or 0,
                                    pc.integer(P.CONTENT_UNREAD_COUNT) or 0)  # fmt: skip
                except PstFormatError as exc:
                    yield ArchiveFailure(path, vol.entry(nid), f"folder {path!r}: {exc}")
            for child_nid, name in reversed(children):
                child_path = f"{path}/{name}" if path else name
                stack.append((child_nid, child_path, depth + 1))

    def _children(self, vol: _Volume, nid: int) -> Iterator[tuple[int, str]]:
        table_nid = _with_type(nid, NID_TYPE_HIERARCHY_TABLE)
        if not vol.pst.has_node(table_nid):
            return
        for row in vol.pst.table(vol.pst.node(table_nid)).rows():
            child = row.get(P.LTP_ROW_ID)
            if not isinstance(child, int) or _nid_type(child) != NID_TYPE_NORMAL_FOLDER:
                continue  # search folders are not restored
            name = as_text(row.get(P.DISPLAY_NAME))
            if name is None:
                name = vol.pst.property_context(vol.pst.node(child)).text(0x3001) or ""
            yield child, name

    def folder_list(self) -> list[PstFolder]:
        """Every folder (of every volume; a folder of several volumes listed once, its counts
        summed), in walk order."""
        out: dict[str, PstFolder] = {}
        for vol in self._volumes:
            for item in self._walk(vol):
                if isinstance(item, PstFolder):
                    known = out.get(item.path)
                    out[item.path] = item if known is None else PstFolder(
                        item.path, known.nid, known.messages + item.messages,
                        known.unread + item.unread)  # fmt: skip
        return list(out.values())

    def folders(self) -> list[FolderSummary]:
        """Each folder with its message count and bytes (PR_MESSAGE_SIZE summed), from the
        contents tables' fixed-size columns alone."""
        out: dict[str, FolderSummary] = {}
        for vol in self._volumes:
            for item in self._walk(vol):
                if not isinstance(item, PstFolder):
                    continue
                summary = out.setdefault(item.path, FolderSummary(item.path))
                table_nid = _with_type(item.nid, NID_TYPE_CONTENTS_TABLE)
                if not vol.pst.has_node(table_nid):
                    continue
                for row in vol.pst.table(vol.pst.node(table_nid)).rows(_COUNT_COLUMNS):
                    nid = row.get(P.LTP_ROW_ID)
                    if isinstance(nid, int) and _nid_type(nid) == NID_TYPE_NORMAL_MESSAGE:
                        size = row.get(P.MESSAGE_SIZE)
                        summary.messages += 1
                        summary.bytes += size if isinstance(size, int) else 0
        return list(out.values())

    def _message_nids(self, vol: _Volume, folder: PstFolder) -> Iterator[int]:
        table_nid = _with_type(folder.nid, NID_TYPE_CONTENTS_TABLE)
        if not vol.pst.has_node(table_nid):
            return
        for nid in vol.pst.table(vol.pst.node(table_nid)).row_ids():
            if _nid_type(nid) == NID_TYPE_NORMAL_MESSAGE:
                yield nid

    # -- restore ------------------------------------------------------------------------------

    def messages(
        self, selection: Selection | None = None
    ) -> Iterator[ArchivedMessage | ArchiveFailure]:
        selection = selection or Selection()
        folders = selection.folder_filter()
        for vol in self._volumes:
            for folder in self._walk(vol):
                if isinstance(folder, ArchiveFailure):
                    yield folder
                    continue
                if folders and not folders.accepts(folder.path):
                    continue
                try:
                    nids = list(self._message_nids(vol, folder))  # 4 bytes a message
                except PstFormatError as exc:
                    yield ArchiveFailure(
                        folder.path,
                        vol.entry(folder.nid),
                        f"the contents table of {folder.path!r} is damaged: {exc}",
                    )
                    continue
                for nid in nids:
                    item = self._message(vol, folder.path, nid)
                    if isinstance(item, ArchivedMessage) and not selection.accepts_date(
                        item.internal_date
                    ):
                        continue
                    yield item

    def _message(self, vol: _Volume, folder: str, nid: int) -> ArchivedMessage | ArchiveFailure:
        entry = vol.entry(nid)
        try:
            node = vol.pst.node(nid)
            pc = vol.pst.property_context(node)
            kind = pc.text(0x001A) or "IPM.Note"  # PR_MESSAGE_CLASS
            if kind.upper().startswith(_NOT_MAIL):
                return ArchiveFailure(
                    folder, entry, f"not a mail message ({kind})", status="skipped"
                )
            meta = _metadata(vol, pc)
            raw = rebuild_message(vol.pst, node, pc=pc)
        except PstFormatError as exc:
            return ArchiveFailure(folder, entry, f"message {entry} cannot be read: {exc}")
        except Exception as exc:  # noqa: BLE001 - one message must never end the restore
            return ArchiveFailure(folder, entry, f"message {entry} cannot be rebuilt: {exc!r}")
        return ArchivedMessage(
            folder=folder, raw=raw, source_id=meta["source_id"], internal_date=meta["date"],
            flags=meta["flags"], labels=meta["labels"], sha256="", entry=entry,
            message_id=meta["message_id"],
            extra={"rebuilt": True, "original_sha256": meta["sha256"], "volume": vol.key,
                   "nid": nid},
        )  # fmt: skip

    # -- browse -------------------------------------------------------------------------------

    def browse(self, folder: str | None = None) -> Iterator[BrowseEntry]:
        """Every message (of ``folder`` only, when given) from the contents tables alone: no
        message is rebuilt."""
        for vol in self._volumes:
            for item in self._walk(vol):
                if isinstance(item, PstFolder) and (folder is None or item.path == folder):
                    yield from self._contents(vol, item)

    def _contents(self, vol: _Volume, folder: PstFolder) -> Iterator[BrowseEntry]:
        table_nid = _with_type(folder.nid, NID_TYPE_CONTENTS_TABLE)
        if not vol.pst.has_node(table_nid):
            return
        for row in vol.pst.table(vol.pst.node(table_nid)).rows():
            nid = row.get(P.LTP_ROW_ID)
            if not isinstance(nid, int) or _nid_type(nid) != NID_TYPE_NORMAL_MESSAGE:
                continue
            flags = row.get(P.MESSAGE_FLAGS)
            size = row.get(P.MESSAGE_SIZE)
            when = _time(row.get(P.CLIENT_SUBMIT_TIME)) or _time(row.get(P.MESSAGE_DELIVERY_TIME))
            yield BrowseEntry(
                vol.entry(nid), folder.path, as_text(row.get(P.SUBJECT)) or "",
                as_text(row.get(P.SENT_REPRESENTING_NAME)) or "", when,
                size if isinstance(size, int) else 0,
                ("\\Seen",) if isinstance(flags, int) and flags & P.MSGFLAG_READ else (),
                vol.key,
            )  # fmt: skip

    def _locate(self, entry_id: str) -> tuple[_Volume, int]:
        key, _, nid_text = entry_id.rpartition("!")
        for vol in self._volumes:
            if vol.key == key:
                try:
                    nid = int(nid_text, 16)
                except ValueError:
                    break
                if _nid_type(nid) == NID_TYPE_NORMAL_MESSAGE and vol.pst.has_node(nid):
                    return vol, nid
                break
        raise KeyError(f"no message {entry_id!r} in this archive")

    def read_entry(self, entry_id: str) -> bytes:
        """One message rebuilt as .eml bytes (``KeyError`` for an id not in the archive,
        ``PstFormatError`` when it is damaged)."""
        vol, nid = self._locate(entry_id)
        return rebuild_message(vol.pst, vol.pst.node(nid))


def _time(value: object) -> datetime | None:
    if isinstance(value, bytes) and len(value) == 8:
        ticks = struct.unpack("<Q", value)[0]
        if 0 < ticks < 0x7FFFFFFFFFFFFFFF:
            try:
                return P.from_filetime(ticks)
            except OverflowError:
                return None
    return None


def _metadata(vol: _Volume, pc: PropertyContext) -> dict:
    flags_value = pc.integer(P.MESSAGE_FLAGS) or 0
    flags: list[str] = []
    if flags_value & P.MSGFLAG_READ:
        flags.append("\\Seen")
    if pc.integer(FLAG_STATUS) == 2:
        flags.append("\\Flagged")
    verb = pc.integer(LAST_VERB_EXECUTED)
    if verb in (102, 103):
        flags.append("\\Answered")
    recorded = _named_text(pc, vol.flags_id)
    if recorded is not None:
        for flag in recorded.split():
            if flag not in _MAPI_FLAGS and flag not in flags:
                flags.append(flag)
    elif verb == 104:
        flags.append("$Forwarded")
    if flags_value & MSGFLAG_UNSENT and "\\Draft" not in flags:
        flags.append("\\Draft")
    labels: tuple[str, ...] = ()
    if vol.keywords_id is not None:
        value = pc.get(P.tag(vol.keywords_id, P.PT_UNICODE | P.MV_FLAG))
        if value is not None:
            labels = tuple(s for s in multi_strings(as_bytes(value)) if s)
        else:
            value = pc.get(P.tag(vol.keywords_id, P.PT_STRING8 | P.MV_FLAG))
            labels = tuple(s for s in multi_strings(as_bytes(value), "cp1252") if s)
    if recorded is not None:  # the categories are the labels and the user keywords
        keywords = set(recorded.split())
        labels = tuple(label for label in labels if label not in keywords)
    return {
        "flags": tuple(flags),
        "labels": labels,
        "date": pc.time(P.MESSAGE_DELIVERY_TIME) or pc.time(P.CLIENT_SUBMIT_TIME),
        "source_id": _named_text(pc, vol.source_id_id) or "",
        "sha256": (_named_text(pc, vol.sha256_id) or "").strip().lower(),
        "message_id": (pc.text(0x1035) or "").strip(),
    }


def _named_text(pc: PropertyContext, prop_id: int | None) -> str | None:
    if prop_id is None:
        return None
    return pc.text(prop_id)


__all__ = ["BrowseEntry", "FolderSummary", "PstArchiveReader", "PstFolder", "PstFormatError",
           "envelope"]  # fmt: skip

"""The name-to-id map ([MS-PST] §2.4.7): which named properties the store knows.

The map registers the names a new Outlook store registers, in Outlook's order (read from an
empty store Outlook wrote): readers expect the map's four streams to hold something. libpff
rejects a map without entries, and java-libpst (pst-extractor) cannot open a store whose
string-name stream is empty. Messages use one of them, ``Keywords`` (Outlook's categories:
Gmail labels and IMAP keywords), and three of LegacyFlo's own (``LEGACYFLO_NAMES``, in the
``PS_LEGACYFLO`` property set: the source id, SHA-256 and IMAP flags an archive records per
message), which a store that holds such messages registers after Outlook's, as Outlook appends
a name when a client first uses it. Property ids are 0x8000 + the name's position, so these
ids never move: Outlook's names keep theirs, and ours follow them in a fixed order.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable

from . import props as P
from .encoding import pst_crc

NAMEID_BUCKET_COUNT = 251
PS_MAPI = uuid.UUID("00020328-0000-0000-c000-000000000046")
PS_PUBLIC_STRINGS = uuid.UUID("00020329-0000-0000-c000-000000000046")
PSETID_APPOINTMENT = uuid.UUID("00062002-0000-0000-c000-000000000046")
PS_INTERNET_HEADERS = uuid.UUID("00020386-0000-0000-c000-000000000046")
PSETID_COMMON = uuid.UUID("00062008-0000-0000-c000-000000000046")
PSETID_TASK = uuid.UUID("00062003-0000-0000-c000-000000000046")
PSETID_REMOTE = uuid.UUID("00062014-0000-0000-c000-000000000046")
MENTIONS_SET = uuid.UUID("41f28f13-83f4-4114-a584-eedb5a6b0bff")  # where Outlook keeps IsMentioned

# LegacyFlo's property set (a fixed GUID: readers look the names up in it).
PS_LEGACYFLO = uuid.UUID("6c656761-6379-466c-6f00-6d6574610001")

NamedProperty = tuple[uuid.UUID, int | str]  # (property set, numeric id or string name)

# What a new Outlook store's map holds, in its order (each gets property id 0x8000 + position).
REGISTERED_NAMES: tuple[NamedProperty, ...] = (
    *((PSETID_APPOINTMENT, number) for number in (
        0x8205, 0x8223, 0x8231, 0x8216, 0x820D, 0x820E, 0x8235, 0x8236, 0x8233)),
    (PS_INTERNET_HEADERS, "content-class"),
    (PS_PUBLIC_STRINGS, "DRMLicense"),
    (PS_INTERNET_HEADERS, "x-cr-hashedpuzzle"),
    (PS_INTERNET_HEADERS, "x-cr-puzzleid"),
    (PSETID_COMMON, 0x8580),  # PidLidInternetAccountName
    (PSETID_COMMON, 0x8581),
    (PS_PUBLIC_STRINGS, "urn:schemas-microsoft-com:office:outlook#storetypeprivate"),
    (PSETID_COMMON, 0x8510),
    (PSETID_COMMON, 0x8578),
    (MENTIONS_SET, "IsMentioned"),
    (PS_PUBLIC_STRINGS, "Keywords"),
    (PSETID_REMOTE, 0x8F05),
    (PSETID_COMMON, 0x8514),
    (PSETID_REMOTE, 0x8F07),
    (PSETID_COMMON, 0x8503),
    (PSETID_COMMON, 0x85A8),
    (PSETID_COMMON, 0x8502),
    (PSETID_TASK, 0x8104),
    (PSETID_TASK, 0x8105),
    (PSETID_TASK, 0x811C),
    (PS_INTERNET_HEADERS, "x-ms-exchange-organization-authdomain"),
    (PS_PUBLIC_STRINGS, "DoNotForward"),
    (PSETID_COMMON, 0x8570),
    (PSETID_TASK, 0x8101),
    (PSETID_COMMON, 0x85E0),
    (PSETID_COMMON, 0x8552),
)  # fmt: skip


LEGACYFLO_NAMES: tuple[NamedProperty, ...] = (
    (PS_LEGACYFLO, "LegacyFloSourceId"),
    (PS_LEGACYFLO, "LegacyFloSha256"),
    (PS_LEGACYFLO, "LegacyFloFlags"),
    # Registered last and used by no message: java-libpst (and its port pst-extractor) never
    # reads the entry stream's last entry (its loop stops 8 bytes early), so the last name
    # must be one no reader needs. (Outlook's own last name is one no message uses either.)
    (PS_LEGACYFLO, "LegacyFloReserved"),
)


def named_property_id(name: NamedProperty) -> int:
    """The property id a message uses for ``name`` in a store this package writes."""
    names = (*REGISTERED_NAMES, *LEGACYFLO_NAMES)
    return 0x8000 + names.index(name)


def name_to_id_map_properties(names: Iterable[NamedProperty]) -> list[tuple[int, object]]:
    """PC properties of a name-to-id map ([MS-PST] §2.4.7) holding ``names``.

    Each name gets property id 0x8000 + its position. GUID index 1 and 2 are PS_MAPI and
    PS_PUBLIC_STRINGS; others are 3 + their position in the GUID stream (in order of first
    use). A string name is stored in the string stream (a 4-byte length, the UTF-16LE name,
    padded to 4 bytes), its NAMEID pointing there; its hash is the PST CRC of the name. Every
    NAMEID is also filed in hash bucket (dwPropertyID or hash ^ wGuid field) % 251. Values
    come in the order Outlook's heap has them: the GUID and entry streams, then each bucket
    and the string stream as the names first use them.
    """
    guids: list[uuid.UUID] = []
    entries = bytearray()
    strings = bytearray()
    buckets: dict[int, bytearray] = {}
    created: list[int] = []  # the order Outlook's values sit in its heap: first use
    for position, (guid, name) in enumerate(names):
        if guid == PS_MAPI:
            guid_index = 1
        elif guid == PS_PUBLIC_STRINGS:
            guid_index = 2
        else:
            if guid not in guids:
                guids.append(guid)
            guid_index = 3 + guids.index(guid)
        if isinstance(name, str):
            encoded = name.encode("utf-16-le")
            key, hash_key, guid_field = len(strings), pst_crc(encoded), (guid_index << 1) | 1
            strings += struct.pack("<I", len(encoded)) + encoded
            strings += bytes(-len(strings) % 4)
            if -1 not in created:
                created.append(-1)
        else:
            key = hash_key = name
            guid_field = guid_index << 1
        entries += struct.pack("<IHH", key, guid_field, position)
        bucket = (hash_key ^ guid_field) % NAMEID_BUCKET_COUNT
        if bucket not in buckets:
            created.append(bucket)
        buckets.setdefault(bucket, bytearray()).extend(
            struct.pack("<IHH", hash_key, guid_field, position)
        )
    properties: list[tuple[int, object]] = [
        (P.NAMEID_BUCKET_COUNT, NAMEID_BUCKET_COUNT),
        (P.NAMEID_STREAM_GUID, b"".join(g.bytes_le for g in guids)),
        (P.NAMEID_STREAM_ENTRY, bytes(entries)),
    ]
    if -1 not in created:
        created.append(-1)
    for bucket in created:
        if bucket < 0:
            properties.append((P.NAMEID_STREAM_STRING, bytes(strings)))
        else:
            properties.append((P.tag(0x1000 + bucket, P.PT_BINARY), bytes(buckets[bucket])))
    return properties

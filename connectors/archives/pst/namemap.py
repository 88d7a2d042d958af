"""The name-to-id map ([MS-PST] §2.4.7): which named properties the store knows.

The store uses no named property itself, but readers (libpff) reject a map without entries, so
it registers one that Outlook creates on every internet mail: PidLidInternetAccountName.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable

from . import props as P

NAMEID_BUCKET_COUNT = 251
PSETID_COMMON = uuid.UUID("00062008-0000-0000-c000-000000000046")
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

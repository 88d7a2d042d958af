"""The 564-byte Unicode HEADER ([MS-PST] §2.2.2.6) and its two CRCs.

Values follow what Outlook writes in a new store: magic ``!BDN``, client magic ``SM``, wVer 23,
wVerClient 19, platforms 1/1, rgbFM/rgbFP filled with 0xFF, bSentinel 0x80. dwCRCPartial
covers the 471 bytes from offset 8, dwCRCFull the 516 bytes from offset 8.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import layout as L
from .encoding import pst_crc

VERSION_UNICODE = 23
CLIENT_VERSION = 19
AMAP_VALID2 = 0x02


@dataclass(frozen=True)
class HeaderFields:
    bid_next_page: int
    bid_next_block: int
    unique: int
    rgnid: bytes  # 32 little-endian DWORDs
    file_eof: int
    amap_last: int
    amap_free: int
    nbt: tuple[int, int]  # (bid, ib) of the NBT root page
    bbt: tuple[int, int]
    amap_valid: bool
    crypt_method: int


def pack_header(fields: HeaderFields) -> bytes:
    assert len(fields.rgnid) == 128
    raw = bytearray(L.HEADER_SIZE)
    struct.pack_into(
        "<4sI2sHHBBII", raw, 0, b"!BDN", 0, b"SM", VERSION_UNICODE, CLIENT_VERSION, 1, 1, 0, 0
    )
    struct.pack_into("<QQI", raw, 24, 0, fields.bid_next_page, fields.unique)
    raw[44:172] = fields.rgnid
    struct.pack_into(
        "<IQQQQQQQQBBH",
        raw,
        180,
        0,
        fields.file_eof,
        fields.amap_last,
        fields.amap_free,
        0,  # cbPMapFree: the PMap is deprecated
        fields.nbt[0],
        fields.nbt[1],
        fields.bbt[0],
        fields.bbt[1],
        AMAP_VALID2 if fields.amap_valid else 0,
        0,
        0,
    )
    raw[256:384] = b"\xff" * 128  # rgbFM: deprecated, MUST be 0xFF
    raw[384:512] = b"\xff" * 128  # rgbFP: deprecated, MUST be 0xFF
    raw[512] = 0x80
    raw[513] = fields.crypt_method
    struct.pack_into("<Q", raw, 516, fields.bid_next_block)
    struct.pack_into("<I", raw, 4, pst_crc(raw[8 : 8 + 471]))
    struct.pack_into("<I", raw, 524, pst_crc(raw[8 : 8 + 516]))
    return bytes(raw)


def header_crcs_valid(raw: bytes) -> tuple[bool, bool]:
    """(dwCRCPartial valid, dwCRCFull valid) of a header read from a file."""
    partial, full = struct.unpack_from("<I", raw, 4)[0], struct.unpack_from("<I", raw, 524)[0]
    return partial == pst_crc(raw[8 : 8 + 471]), full == pst_crc(raw[8 : 8 + 516])

"""Test-only: PSTs from our writer with extra message properties (flag status, last verb,
Keywords, the LegacyFlo named properties, an RTF body) that the writer does not set itself.

``extra_properties`` wraps the writer's ``write_property_context`` for the messages whose
subject it is given, and registers the named properties in the store's name-to-id map. The
message size the writer computes leaves the extra values out (it asserts its own sum).
"""

from __future__ import annotations

import contextlib
import dataclasses
import struct
import uuid
from collections.abc import Iterator

from connectors.archives.pst import messages as pst_messages
from connectors.archives.pst import messaging as pst_messaging
from connectors.archives.pst import props as P
from connectors.archives.pst.namemap import PS_PUBLIC_STRINGS

LEGACYFLO_SET = uuid.UUID("8f5b6a1e-3c2d-4e8f-9a0b-1c2d3e4f5a6b")  # any GUID: read by name
OWN_NAMES = ("LegacyFloSourceId", "LegacyFloSha256", "LegacyFloFlags")


def multi_string(values: list[str]) -> bytes:
    encoded = [v.encode("utf-16-le") for v in values]
    offsets, at = [], 4 + 4 * len(values)
    for item in encoded:
        offsets.append(at)
        at += len(item)
    return struct.pack(f"<I{len(values)}I", len(values), *offsets) + b"".join(encoded)


@contextlib.contextmanager
def extra_properties(by_subject: dict[str, dict]) -> Iterator[None]:
    """While active, a message written with a subject in ``by_subject`` also gets what its
    dict says: ``flag_status``, ``last_verb``, ``keywords`` (list), ``source_id``, ``sha256``,
    ``flags`` (str), ``rtf`` (compressed RTF bytes; the plain and HTML bodies dropped),
    ``message_class`` (str, instead of IPM.Note)."""
    names = list(pst_messaging.REGISTERED_NAMES)
    own_ids = {}
    for name in OWN_NAMES:
        own_ids[name] = 0x8000 + len(names)
        names.append((LEGACYFLO_SET, name))
    keywords_id = 0x8000 + names.index((PS_PUBLIC_STRINGS, "Keywords"))
    original = pst_messages.write_property_context

    def wrapper(ndb, properties, extra_subnodes=()):
        properties = list(properties)
        values = dict(properties)
        subject = values.get(P.SUBJECT)
        wanted = None
        if P.MESSAGE_CLASS in values and isinstance(subject, bytes):
            wanted = by_subject.get(subject.decode("utf-16-le"))
        if not wanted:
            return original(ndb, properties, extra_subnodes)
        extra: list[tuple[int, object]] = []
        if "flag_status" in wanted:
            extra.append((P.tag(0x1090, P.PT_LONG), wanted["flag_status"]))
        if "last_verb" in wanted:
            extra.append((P.tag(0x1081, P.PT_LONG), wanted["last_verb"]))
        if "keywords" in wanted:
            extra.append((P.tag(keywords_id, P.PT_UNICODE | P.MV_FLAG),
                          multi_string(wanted["keywords"])))  # fmt: skip
        for key, name in (("source_id", "LegacyFloSourceId"), ("sha256", "LegacyFloSha256"),
                          ("flags", "LegacyFloFlags")):  # fmt: skip
            if key in wanted:
                extra.append((P.tag(own_ids[name], P.PT_UNICODE), wanted[key].encode("utf-16-le")))
        dropped = 0
        if "message_class" in wanted:
            kept = []
            for prop_tag, value in properties:
                if prop_tag == P.MESSAGE_CLASS:
                    dropped += _size(prop_tag, value)
                else:
                    kept.append((prop_tag, value))
            properties = kept
            extra.append((P.MESSAGE_CLASS, wanted["message_class"].encode("utf-16-le")))
        if "rtf" in wanted:
            kept = []
            for prop_tag, value in properties:
                if prop_tag in (P.BODY, P.BODY_HTML):
                    dropped += _size(prop_tag, value)
                else:
                    kept.append((prop_tag, value))
            properties = kept
            extra.append((P.RTF_COMPRESSED, wanted["rtf"]))
        parts = original(ndb, properties + extra, extra_subnodes)
        added = sum(_size(t, v) for t, v in extra) - dropped
        return dataclasses.replace(parts, value_bytes=parts.value_bytes - added)

    pst_messages.write_property_context = wrapper
    saved_names = pst_messaging.REGISTERED_NAMES
    pst_messaging.REGISTERED_NAMES = tuple(names)
    try:
        yield
    finally:
        pst_messages.write_property_context = original
        pst_messaging.REGISTERED_NAMES = saved_names


def _size(prop_tag: int, value: object) -> int:
    fixed = P.FIXED_SIZES.get(P.tag_type(prop_tag))
    if fixed is not None:
        return fixed
    size = getattr(value, "size", None)
    return size if isinstance(size, int) else len(P.encode_value(prop_tag, value))

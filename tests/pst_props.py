"""Test-only: PSTs from our writer with message properties it would not write itself: what
Outlook may have changed since (flag status, last verb), an RTF body, another message class,
an Exchange sender.

``extra_properties`` wraps the writer's ``write_property_context`` for the messages whose
subject it is given. The message size the writer computes leaves the changes out (it asserts
its own sum).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from connectors.archives.pst import messages as pst_messages
from connectors.archives.pst import props as P


@contextlib.contextmanager
def extra_properties(by_subject: dict[str, dict]) -> Iterator[None]:
    """While active, a message written with a subject in ``by_subject`` also gets what its
    dict says: ``flag_status``, ``last_verb`` (instead of the writer's), ``rtf`` (compressed
    RTF bytes; the plain and HTML bodies dropped),
    ``message_class`` (str, instead of IPM.Note), ``drop`` (tags left out), ``set`` ((tag, value)
    pairs written instead of the writer's)."""
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
        changes = list(wanted.get("set", ()))
        if "flag_status" in wanted:
            changes.append((P.tag(0x1090, P.PT_LONG), wanted["flag_status"]))
        if "last_verb" in wanted:
            changes.append((P.tag(0x1081, P.PT_LONG), wanted["last_verb"]))
        dropped = 0
        replaced = {t for t, _v in changes} | set(wanted.get("drop", ()))
        if replaced:
            kept = []
            for prop_tag, value in properties:
                if prop_tag in replaced:
                    dropped += _size(prop_tag, value)
                else:
                    kept.append((prop_tag, value))
            properties = kept
            extra.extend(changes)
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
    try:
        yield
    finally:
        pst_messages.write_property_context = original


def _size(prop_tag: int, value: object) -> int:
    fixed = P.FIXED_SIZES.get(P.tag_type(prop_tag))
    if fixed is not None:
        return fixed
    size = getattr(value, "size", None)
    return size if isinstance(size, int) else len(P.encode_value(prop_tag, value))

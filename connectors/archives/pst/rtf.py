"""RTF bodies as text or HTML, for a message whose PST holds no other body.

``rtf_to_html`` gives back the HTML an RTF body encapsulates ([MS-OXRTFEX]: Outlook keeps an
HTML message received from the Internet as RTF with ``\\fromhtml1`` when it has no
PR_BODY_HTML); ``rtf_to_text`` the readable text of any other RTF. Neither renders RTF: the
caller keeps the RTF itself beside the text (``rebuild``), so nothing is lost.
"""

from __future__ import annotations

import codecs
import re

_RTF_TOKEN = re.compile(
    rb"\\([a-zA-Z]+)(-?\d+)? ?|\\'([0-9a-fA-F]{2})|\\(.)|([{}])|([^\\{}\r\n]+)|[\r\n]"
)
_RTF_SKIP = frozenset((b"fonttbl", b"colortbl", b"stylesheet", b"info", b"pict", b"object",
                       b"header", b"footer", b"themedata", b"datastore", b"latentstyles",
                       b"listtable", b"listoverridetable", b"rsidtbl", b"generator",
                       b"xmlnstbl", b"mmathPr", b"filetbl"))  # fmt: skip
_HTML_TAGS = (b"htmltag",)


def rtf_to_text(rtf: bytes) -> str:
    """The readable text of an RTF document: paragraphs and tabs kept, groups of tables
    (fonts, colours, pictures, \\* destinations) skipped, \\'hh (in the document's \\ansicpg)
    and \\uN characters decoded. Not a renderer: what a plain body can show."""
    return _rtf_walk(rtf, html=False).strip("\n") + "\n"


def rtf_to_html(rtf: bytes) -> str | None:
    """The HTML an RTF body encapsulates ([MS-OXRTFEX]: ``\\fromhtml1``), else None: the
    \\htmltag destinations and the text outside \\htmlrtf ... \\htmlrtf0, escapes decoded."""
    if b"\\fromhtml1" not in rtf[:1024]:
        return None
    return _rtf_walk(rtf, html=True)


def _rtf_walk(rtf: bytes, *, html: bool) -> str:
    out: list[str] = []
    pending = bytearray()  # \'hh bytes, decoded together (double-byte code pages)
    codec = "cp1252"
    stack: list[tuple[bool, bool]] = []
    skipping = suppressed = False  # a skipped destination; \htmlrtf text (HTML mode)
    uc_skip = 0
    first_in_group = star = False

    def flush() -> None:
        if pending:
            out.append(pending.decode(codec, "replace"))
            pending.clear()

    def emit(text: str) -> None:
        flush()
        if not suppressed:
            out.append(text)

    for match in _RTF_TOKEN.finditer(rtf):
        word, arg, hexbyte, symbol, brace, text = match.groups()
        if brace == b"{":
            stack.append((skipping, suppressed))
            first_in_group, star = True, False
            continue
        if brace == b"}":
            flush()
            skipping, suppressed = stack.pop() if stack else (False, False)
            first_in_group = star = False
            continue
        starts, first_in_group = first_in_group, False
        if symbol == b"*" and starts:
            star = first_in_group = True  # the destination's name follows
            continue
        if skipping:
            continue
        if word is not None:
            if star:
                star = False
                if html and word in _HTML_TAGS:
                    suppressed = False  # an HTML tag's text is HTML, whatever surrounds it
                    continue
                skipping = True
                continue
            if starts and word in _RTF_SKIP:
                skipping = True
            elif word == b"ansicpg" and arg:
                try:
                    codec = codecs.lookup(f"cp{int(arg)}").name
                except LookupError:
                    codec = "cp1252"
            elif html and word == b"htmlrtf":
                flush()
                suppressed = arg != b"0"
            elif word in (b"par", b"line", b"row"):
                emit("\r\n" if html else "\n")
            elif word in (b"tab", b"cell"):
                emit("\t")
            elif word == b"u" and arg is not None:
                value = int(arg)
                emit(chr(value + 65536 if value < 0 else value))
                uc_skip = 1
            continue
        star = False
        if hexbyte is not None:
            if uc_skip:
                uc_skip -= 1
            elif not suppressed:
                pending.append(int(hexbyte, 16))
            continue
        if symbol is not None:
            if symbol in (b"\\", b"{", b"}"):
                emit(symbol.decode())
            elif symbol == b"~":
                emit("\u00a0")
            continue
        if text is not None:
            if uc_skip:
                text, uc_skip = text[1:], 0
            emit(text.decode(codec, "replace"))
    flush()
    return "".join(out)
